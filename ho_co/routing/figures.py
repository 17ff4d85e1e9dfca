"""Figures: a policy's tours beside the reference's, and learning curves (validation gap).

Drawn from what decoding and training produced: tours with their lengths, and the
`learning_curve.csv` of `ho-co train` (epoch, global_step, instances_seen, wall_s, val_length,
val_gap_percent). matplotlib is imported on first use, with its Agg backend (files only).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ho_co.problems.instances import Instances


def render_tours(instances: Instances, rows: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path,
                 count: int = 4) -> Path:
    """Draw the first `count` instances' tours to one PNG, one row per solver in `rows`
    ({label: (tours, lengths)}, the reference last), each tour titled with its length and the
    reference's (TSP with coordinates)."""
    if instances.locs is None:
        raise ValueError("these instances have no coordinates (ATSP or matrix-only TSP): nothing to draw")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = min(count, len(instances))
    last_label, (_, last_lengths) = list(rows.items())[-1]
    fig, axes = plt.subplots(len(rows), count, figsize=(3.0 * count, 3.1 * len(rows)), squeeze=False)
    for ax_row, (label, (tours, lengths)) in zip(axes, rows.items()):
        for ax, b in zip(ax_row, range(count)):
            pts = instances.locs[b][np.append(tours[b], tours[b][0])]
            ax.plot(pts[:, 0], pts[:, 1], "-o", ms=3, lw=1)
            title = f"#{b} {label} {lengths[b]:.4f}"
            if label != last_label:  # beside the last row's (the reference) length
                title += f"\n{last_label} {last_lengths[b]:.4f} ({100 * (lengths[b] / last_lengths[b] - 1):+.2f}%)"
            ax.set_title(title, fontsize=9)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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


AXES = {"instances_seen": "instances seen", "wall_s": "training minutes", "cpu_s": "CPU-hours"}
SCALE = {"wall_s": 60, "cpu_s": 3600}  # seconds in a curve, shown as minutes / hours


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
    """One PNG: validation gap (%) of each run against instances seen, wall-clock minutes and/or
    CPU-hours (one panel per axis in `x`); a dotted line where a run's validation set changes."""
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
                xs = [r[key] / SCALE.get(key, 1) for r in rows]
                (line,) = ax.plot(xs, [r["val_gap_percent"] for r in rows], marker="o", markersize=3, label=label)
                for i in set_changes(rows):
                    ax.axvline(xs[i], color=line.get_color(), linestyle=":", linewidth=1)
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


def set_changes(rows: list[dict]) -> list[int]:
    """Indices of the rows whose validation set (`val_set`) differs from the row before (a dotted
    line in the figure: the gaps on either side are on different instances)."""
    names = [row.get("val_set") for row in rows]
    names = ["" if not isinstance(name, str) else name for name in names]  # absent or empty: NaN
    return [i for i in range(1, len(names)) if names[i] != names[i - 1]]


def panels(runs: Mapping[str, list[dict]], curves: Mapping[str, str | Path], keys: list[str]) -> list[str]:
    """The x axes some curve has a column for (older or hand-made curves may lack one); a run
    without it is left out of that panel only."""
    found = [key for key in keys if any(key in rows[0] for rows in runs.values())]
    if not found:
        files = ", ".join(str(path) for path in curves.values())
        raise ValueError(f"{files}: no {' or '.join(keys)} column to draw the gap against")
    return found
