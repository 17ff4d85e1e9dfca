"""Comparison tables and learning curves from what training and evaluation wrote.

Inputs are the files runs already leave behind: `learning_curve.csv` of `ho-co train`
(epoch, global_step, instances_seen, wall_s, val_length, val_gap_percent) and the JSON of
`ho-co eval --json`. Nothing is re-measured here, so a table can never disagree with the runs.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Mapping, Sequence

# The seed paper's TSP-50 figures (1280 instances), shown beside ours.
SEED_FIGURES = [
    ("Concorde (seed paper)", 5.688, 0.0),
    ("MatNet (seed paper)", 5.721, 0.587),
    ("HO-MatNet (seed paper)", 5.715, 0.482),
]


def read_curve(path: str | Path) -> list[dict[str, float]]:
    """Rows of a learning_curve.csv as floats; rows without a gap (no reference) are kept."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"learning curve not found: {path}")
    with path.open() as f:
        rows = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]
    if not rows:
        raise ValueError(f"{path}: learning curve has no rows")
    return rows


AXES = {"instances_seen": "instances seen", "wall_s": "training minutes"}


def _number(value: str | None) -> float | str:
    """A curve cell as a float (empty: NaN); text columns (the device) stay text."""
    if value in ("", None):
        return float("nan")
    try:
        return float(value)
    except ValueError:
        return value


def plot_curves(curves: Mapping[str, str | Path], out: str | Path,
                x: str | Sequence[str] = ("instances_seen", "wall_s")) -> Path:
    """One PNG: validation gap (%) of each run against instances seen and/or wall-clock minutes
    (one panel per axis in `x`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_keys = [x] if isinstance(x, str) else list(x)
    unknown = [key for key in axes_keys if key not in AXES]
    if unknown or not axes_keys:
        raise ValueError(f"x must be among {sorted(AXES)}, got {axes_keys!r}")
    runs = {label: read_curve(path) for label, path in curves.items()}
    fig, axes = plt.subplots(1, len(axes_keys), figsize=(5.5 * len(axes_keys), 4), squeeze=False)
    for ax, key in zip(axes[0], axes_keys):
        for label, rows in runs.items():
            xs = [r[key] / 60 if key == "wall_s" else r[key] for r in rows]
            ax.plot(xs, [r["val_gap_percent"] for r in rows], marker="o", markersize=3, label=label)
        ax.set_xlabel(AXES[key])
        ax.set_ylabel("gap to reference (%)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def comparison_table(evals: Mapping[str, str | Path], with_paper_rows: bool = True) -> str:
    """Markdown table: mean length, gap, ms/instance, augmentation, from `ho-co eval --json` files."""
    lines = [
        "| solver | mean length | gap % | augment | ms / instance | device |",
        "|---|---|---|---|---|---|",
    ]
    reference = None
    for label, path in evals.items():
        result = json.loads(Path(path).read_text())
        if "mean_gap_percent" not in result:
            raise ValueError(f"{path}: evaluated without --reference, so it has no gap")
        reference = reference or (result["reference_solver"], result["reference_mean_length"])
        lines.append(
            f"| {label} | {result['mean_length']:.4f} | {result['mean_gap_percent']:.3f} | "
            f"{result['num_augment']} | {result['time_per_instance_ms']:.3f} | {result['device']} |"
        )
    if reference is not None:
        lines.insert(2, f"| {reference[0]} (reference) | {reference[1]:.4f} | 0.000 | - | - | - |")
    if with_paper_rows:
        lines += [f"| {name} | {length:.3f} | {gap:.3f} | - | - | - |" for name, length, gap in SEED_FIGURES]
    return "\n".join(lines)


def parse_labelled(items: Sequence[str]) -> dict[str, str]:
    """`LABEL=PATH` arguments as a dict (the CLI's way to name runs)."""
    pairs = {}
    for item in items:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise ValueError(f"expected LABEL=PATH, got {item!r}")
        pairs[label] = path
    return pairs
