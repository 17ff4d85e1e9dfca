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
    if "val_gap_percent" not in rows[0]:
        raise ValueError(f"{path}: no val_gap_percent column (columns: {', '.join(rows[0])})")
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
    axes_keys = panels(runs, curves, axes_keys)
    fig, axes = plt.subplots(1, len(axes_keys), figsize=(5.5 * len(axes_keys), 4), squeeze=False)
    for ax, key in zip(axes[0], axes_keys):
        for label, rows in runs.items():
            if key in rows[0]:
                xs = [r[key] / 60 if key == "wall_s" else r[key] for r in rows]
                ax.plot(xs, [r["val_gap_percent"] for r in rows], marker="o", markersize=3, label=label)
        missing = [label for label, rows in runs.items() if key not in rows[0]]
        if missing:
            ax.set_title(f"no {key} column: {', '.join(missing)}", fontsize=9)
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


def panels(runs: Mapping[str, list[dict]], curves: Mapping[str, str | Path], keys: list[str]) -> list[str]:
    """The x axes some curve has a column for (older or hand-made curves may lack one); a run
    without it is left out of that panel only."""
    found = [key for key in keys if any(key in rows[0] for rows in runs.values())]
    if not found:
        files = ", ".join(str(path) for path in curves.values())
        raise ValueError(f"{files}: no {' or '.join(keys)} column to draw the gap against")
    return found


def comparison_table(evals: Mapping[str, str | Path], with_paper_rows: bool = True) -> str:
    """Markdown tables of mean length, gap, ms/instance, augmentation from `ho-co eval --json` files:
    one table per instance set and reference (a gap compares only with gaps to the same reference),
    the seed paper's TSP-50 rows beside a TSP-50 set only."""
    tables: dict[tuple, list[str]] = {}
    for label, path in evals.items():
        result = read_eval(path)
        key, reference_row = instance_set(result)
        lines = tables.setdefault(key, [
            "| solver | mean length | gap % | augment | ms / instance | device |",
            "|---|---|---|---|---|---|",
            reference_row,
        ])
        lines.append(run_row(label, result))
    for key, lines in tables.items():
        if with_paper_rows and key[:2] == ("tsp", 50):
            lines += [f"| {name} | {length:.3f} | {gap:.3f} | - | - | - |" for name, length, gap in SEED_FIGURES]
    return "\n\n".join("\n".join(lines) for lines in tables.values())


def read_eval(path: str | Path) -> dict:
    """One `ho-co eval --json` result; it must hold a gap."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"eval result not found: {path}")
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not an `ho-co eval --json` file ({err})") from err
    if not isinstance(result, dict) or "mean_gap_percent" not in result:
        raise ValueError(f"{path}: evaluated without --reference, so it has no gap")
    return result


def instance_set(result: dict) -> tuple[tuple, str]:
    """(what tells this eval's instances and reference from another's, its reference row)."""
    if "files" in result:  # several files (a TSPLIB directory): the gaps are means over files
        files = result["files"]
        solvers = ", ".join(dict.fromkeys(str(r.get("reference_solver")) for r in files))
        key = ("files", len(files), tuple((r.get("name"), r.get("reference_mean_length")) for r in files))
        names = ", ".join(str(r.get("name")) for r in files)
        return key, f"| {solvers} (reference; {len(files)} files: {names}) | - | 0.000 | - | - | - |"
    problem, n, count = result.get("problem"), result.get("num_loc"), result.get("num_instances")
    key = (problem, n, count, result.get("reference_solver"), result.get("reference_mean_length"))
    where = f"; {Path(result['instances']).name}, {count} {str(problem).upper()}-{n}" if "instances" in result else ""
    return key, (f"| {result['reference_solver']} (reference{where}) | {result['reference_mean_length']:.4f} "
                 "| 0.000 | - | - | - |")


def run_row(label: str, result: dict) -> str:
    """A run's row; several files have no common mean length."""
    first = result["files"][0] if "files" in result else result
    length = f"{result['mean_length']:.4f}" if "mean_length" in result else "-"
    return (f"| {label} | {length} | {result['mean_gap_percent']:.3f} | {first['num_augment']} | "
            f"{result['time_per_instance_ms']:.3f} | {first['device']} |")


def parse_labelled(items: Sequence[str]) -> dict[str, str]:
    """`LABEL=PATH` arguments as a dict (the CLI's way to name runs)."""
    pairs = {}
    for item in items:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise ValueError(f"expected LABEL=PATH, got {item!r}")
        if label in pairs:
            raise ValueError(f"label {label!r} is given twice ({pairs[label]}, {path}); labels name rows")
        pairs[label] = path
    return pairs
