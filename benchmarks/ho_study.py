"""What HO layers buy at TSP-20 on a CPU: MatNet and POMO, HO placement none / attn-ffn / cached /
all, orders 2 and 4, several seeds, everything else equal.

Each run is `ho-co train` with one recipe per model (`tsp20_cpu` for MatNet, `tsp20_cpu_pomo` for
POMO: the same sizes, optimizer and number of training instances) and differs only in
`model.policy.ho` and `seed`. Its summary (greedy and best-of-8-augmentations gap against the
Concorde tours of the shipped validation set, training wall time) lands in `OUT/RUN/summary.json`;
the study then writes `OUT/ho_study.md` (per model and setting: mean and sample standard deviation
over seeds of both gaps, mean training wall time and its ratio to the plain model's) and
`OUT/ho_study.png` (every seed's gap and the mean +- sd).

    python benchmarks/ho_study.py                      # the full study: 42 runs (POMO ~6 min, MatNet ~15 min each)
    python benchmarks/ho_study.py --seeds 1 2 3 4 5    # more seeds: finished runs are kept
    python benchmarks/ho_study.py --models matnet --placements none cached -- trainer.max_epochs=2

Resumable: a run whose `study.json` exists is not run again (an unfinished run starts over), so an
interrupted study continues with the same command; `--finished-only` tables what has finished. Under the default `--out`
(benchmarks/results/ho_study) git keeps each finished run's study.json, the table and the plot,
and ignores the rest, so a study split over several machines or days is committed part by part
and continues from a fresh clone. Two studies may run at once on disjoint `--models`/`--seeds`
(e.g. one per core with OMP_NUM_THREADS=1), never on the same run. Extra Hydra overrides after `--` apply to
every run (a smaller or shorter study); the table refuses runs that saw different numbers of
training instances.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import time
from pathlib import Path

RECIPES = {"matnet": "tsp20_cpu", "pomo": "tsp20_cpu_pomo"}
# placement -> model.policy.ho.targets (apply_ho's presets); none: the plain model
PLACEMENTS = {"none": None, "attn-ffn": ["attention", "ffn"], "cached": ["cached"], "all": ["all"]}


def runs(models, placements, orders, seeds) -> list[dict]:
    """Every (model, placement, order, seed) of the study; `none` has no order. Seeds vary slowest,
    so a study stopped part way has compared every setting on its first seeds."""
    out = []
    for seed in seeds:
        for model in models:
            for placement in placements:
                for order in ([None] if placement == "none" else orders):
                    setting = placement if order is None else f"{placement}-k{order}"
                    out.append({"model": model, "placement": placement, "order": order, "seed": seed,
                                "setting": setting, "name": f"{model}-{setting}-s{seed}"})
    return out


def overrides(run: dict, out_dir: Path, extra: list[str]) -> list[str]:
    """The Hydra overrides of one run."""
    args = [f"experiment={RECIPES[run['model']]}", f"seed={run['seed']}", f"paths.runs_dir={out_dir}",
            f"name={run['name']}"]
    targets = PLACEMENTS[run["placement"]]
    if targets is None:
        args.append("model.policy.ho=null")
    else:
        args += [f"model.policy.ho.targets=[{','.join(targets)}]", f"model.policy.ho.order={run['order']}"]
    return args + list(extra)


def result_file(run: dict, out_dir: Path) -> Path:
    """Where a finished run's result row lives; its presence means the run is done."""
    return out_dir / run["name"] / "study.json"


def run_one(run: dict, out_dir: Path, extra: list[str]) -> dict:
    """Train one run (or read its stored result) and return its result row."""
    from ho_co.routing.train import compose, train

    run_dir = out_dir / run["name"]
    done = result_file(run, out_dir)
    if done.is_file():
        return json.loads(done.read_text())
    if run_dir.exists():  # an unfinished run: its time and curve would not be one run's
        shutil.rmtree(run_dir)
    args = overrides(run, out_dir, extra)
    print(f"[ho_study] {run['name']}: {' '.join(args)}", flush=True)
    start = time.perf_counter()
    result = train(compose(args))
    summary = result["summary"]
    if summary is None:
        raise ValueError(f"{run['name']}: no run summary (the validation set and its reference must be configured)")
    row = {**run, "greedy_gap_percent": summary["greedy_gap_percent"],
           "augmented_gap_percent": summary["augmented_gap_percent"], "num_augment": summary["num_augment"],
           "reference_solver": summary["reference_solver"],
           "instances_seen": summary["instances_seen"], "train_wall_s": 60 * summary["wall_minutes"],
           "total_wall_s": time.perf_counter() - start, "overrides": args}
    done.write_text(json.dumps(row, indent=2) + "\n")
    return row


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (nan for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def table(rows: list[dict]) -> list[dict]:
    """One line per (model, setting): both gaps' mean and sd over seeds, wall time and its ratio to plain."""
    seen = sorted({r["instances_seen"] for r in rows})
    if len(seen) > 1:
        raise ValueError(f"the runs saw different numbers of training instances ({seen}): not a controlled study")
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        plain = [r["train_wall_s"] for r in mine if r["placement"] == "none"]
        for setting in dict.fromkeys(r["setting"] for r in mine):
            group = [r for r in mine if r["setting"] == setting]
            wall = statistics.fmean(r["train_wall_s"] for r in group)
            lines.append({"model": model, "setting": setting, "seeds": len(group),
                          "greedy": mean_sd([r["greedy_gap_percent"] for r in group]),
                          "augmented": mean_sd([r["augmented_gap_percent"] for r in group]),
                          "wall_s": wall, "wall_ratio": wall / statistics.fmean(plain) if plain else math.nan,
                          "num_augment": group[0]["num_augment"], "instances_seen": group[0]["instances_seen"],
                          "reference_solver": group[0]["reference_solver"]})
    return lines


def markdown(lines: list[dict]) -> str:
    fmt = lambda m, sd: f"{m:.3f} ± {sd:.3f}" if not math.isnan(sd) else f"{m:.3f}"
    aug = lines[0]["num_augment"]
    out = [f"Training instances per run: {lines[0]['instances_seen']:,}. Gaps in % to the {lines[0]['reference_solver']} "
           "tours, mean ± sample sd over seeds; wall: training minutes, ratio to the plain model's.", "",
           f"| model | HO placement | seeds | greedy gap % | x{aug} augmentation gap % | wall min | wall ratio |",
           "|---|---|---|---|---|---|---|"]
    for line in lines:
        ratio = "" if math.isnan(line["wall_ratio"]) else f"{line['wall_ratio']:.2f}"
        out.append(f"| {line['model']} | {line['setting']} | {line['seeds']} | {fmt(*line['greedy'])} | "
                   f"{fmt(*line['augmented'])} | {line['wall_s'] / 60:.2f} | {ratio} |")
    return "\n".join(out) + "\n"


def plot(rows: list[dict], lines: list[dict], path: Path) -> Path:
    """Each seed's gap (dots) and the mean +- sd (bar), greedy and augmented, per model and setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=False)
    labels = [f"{line['model']}\n{line['setting']}" for line in lines]
    for ax, key, title in ((axes[0], "greedy", "greedy (multi-start)"),
                           (axes[1], "augmented", f"best of {lines[0]['num_augment']} augmentations")):
        for i, line in enumerate(lines):
            mean, sd = line[key]
            ax.errorbar(i, mean, yerr=0 if math.isnan(sd) else sd, fmt="s", color="C0", capsize=4,
                        label="mean ± sd" if i == 0 else None)
            seeds = [r[f"{key}_gap_percent"] for r in rows
                     if r["model"] == line["model"] and r["setting"] == line["setting"]]
            ax.plot([i] * len(seeds), seeds, ".", color="C1", alpha=0.7, label="one seed" if i == 0 else None)
        ax.set_xticks(range(len(lines)), labels, fontsize=8)
        ax.set_ylabel(f"gap to {lines[0]['reference_solver']} (%)")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/ho_study"),
                   help="runs and results directory (the default keeps each run's study.json under git)")
    p.add_argument("--models", nargs="+", choices=sorted(RECIPES), default=list(RECIPES))
    p.add_argument("--placements", nargs="+", choices=PLACEMENTS, default=list(PLACEMENTS),
                   help="none: the plain model; attn-ffn: the encoder's attention and feed-forward blocks; "
                        "cached: every layer outside the decoding step; all: every linear layer")
    p.add_argument("--orders", nargs="+", type=int, default=[2, 4])
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--finished-only", action="store_true",
                   help="train nothing: table and plot the runs of the selection that have finished")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every run (after --)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    selection = runs(args.models, args.placements, args.orders, args.seeds)
    if args.finished_only:
        selection = [run for run in selection if result_file(run, args.out).is_file()]
        if not selection:
            raise SystemExit(f"no finished run of this selection in {args.out}")
    rows = [run_one(run, args.out, args.overrides) for run in selection]
    lines = table(rows)
    text = markdown(lines)
    (args.out / "ho_study.md").write_text(text)
    png = plot(rows, lines, args.out / "ho_study.png")
    print(text + f"\ntable: {args.out / 'ho_study.md'}\nplot: {png}")
    return {"rows": rows, "lines": lines, "table": args.out / "ho_study.md", "plot": png}


if __name__ == "__main__":
    main()
