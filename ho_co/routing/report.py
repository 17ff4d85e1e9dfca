"""Markdown tables of evaluation results: one several-file `ho-co eval` result, and runs compared.

Inputs are what evaluation already produced (its result dict, or the JSON of `ho-co eval
--json`). Nothing is re-measured here, so a table can never disagree with the runs. The figures
(tours, learning curves) are in `ho_co.routing.figures`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

# The seed paper's TSP-50 figures (1280 instances), shown beside ours.
SEED_FIGURES = [
    ("Concorde (seed paper)", 5.688, 0.0),
    ("MatNet (seed paper)", 5.721, 0.587),
    ("HO-MatNet (seed paper)", 5.715, 0.482),
]


def format_table(result: dict[str, Any]) -> str:
    """The per-file Markdown table of a several-file `ho-co eval` result (`evaluate`), with the mean.
    An augmented eval shows the plain decode (x1) beside the best of its copies (xA)."""
    rows = result["files"]
    augment = rows[0]["num_augment"]
    plain = augment > 1 and all("greedy_mean_length" in r for r in rows)
    head = ["name", "N", "type", "optimum"]
    head += ["length x1", "gap x1 %", f"length x{augment}", f"gap x{augment} %"] if plain else ["length", "gap %"]
    lines = ["| " + " | ".join([*head, "ms"]) + " |", "|" + "---|" * (len(head) + 1)]
    for r in rows:
        ref = f"{r['reference_mean_length']:.6g}" if "reference_mean_length" in r else "-"
        cells = [r["name"], str(r["num_loc"]), r["edge_weight_type"] or r["problem"].upper(), ref]
        if plain:
            cells += [f"{r['greedy_mean_length']:.6g}", _percent(r.get("greedy_gap_percent"))]
        cells += [f"{r['mean_length']:.6g}", _percent(r.get("mean_gap_percent")), f"{r['time_per_instance_ms']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    means = [f"mean ({len(rows)} files)", "", "", ""]
    if plain:
        means += ["", _percent(result.get("greedy_gap_percent"))]
    means += ["", _percent(result.get("mean_gap_percent")), f"{result['time_per_instance_ms']:.1f}"]
    lines.append("| " + " | ".join(means) + " |")
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


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
