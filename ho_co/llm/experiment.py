"""`ho-co llm-experiment`: the fine-tuning methods side by side on one task, several seeds each.

The base model is scored first (no training). Then every variant trains at equal data, steps and
batch (the same training file, the same shuffling for a given seed, `max_steps` steps of
`batch_size` examples), each at its method's usual learning rate unless `lrs` says otherwise:

    full      full fine-tuning (standard SFT)
    c2q-K     C2Q-SFT: every linear layer but the output head converted to HOLinear of order K
              (the same function at the start), then the whole model fine-tuned
    lora-R    LoRA of rank R (alpha 2R) on the same layers, base frozen
    lora-qp   LoRA whose rank gives (about) QuanTA's parameter count
    quanta    QuanTA on the same layers (dims: `quanta_dims`, or each layer's own), base frozen

Every run is one process pinned to one core (`cores`; none: in this process, one after the
other), so two cores run two runs side by side. A finished run appends one JSON line to
`OUTPUT/results.jsonl`, and a started experiment skips the runs it already holds, so a stopped
experiment resumes where it stopped (with the same settings: `OUTPUT/settings.json` records
them, and other settings are refused). Each run reports the exact match of the greedy answer on
the first `eval_examples` held-out problems and the held-out loss (`lm_eval.exact_match`), the
trainable parameters, the CPU seconds of training, and the exact match on the first
`curve_examples` of them every `eval_every` steps (the curve). `report` writes the table
(`results.md`, `results.csv`: mean and standard deviation over seeds) and the figure of held-out
accuracy against steps (`heldout_accuracy.png`), over the results of other output folders as well
when asked (`merge`).

Every setting is checked before any run starts: the data files (a record without an answer
fails naming its file and line), the variants, the cores, and each variant against the model's
layers on a weightless copy (QuanTA dims that do not factor a layer, a HOLinear order above a
layer's width).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ho_co.llm.data import PROMPT_FORMATS
from ho_co.llm.methods import METHODS, MethodSpec
from ho_co.llm.sources import DEFAULT_MODEL

log = logging.getLogger(__name__)

VARIANTS = ("full", "c2q-2", "c2q-4", "lora-8", "lora-qp", "quanta")
BASE = "base"
RESULTS = "results.jsonl"
SETTINGS = "settings.json"
_VARIANT = re.compile(r"^(full|quanta|lora-qp|c2q-(\d+)|lora-(\d+))$")


@dataclass
class ExperimentConfig:
    """The experiment's settings; every field is a `key=value` override of `ho-co llm-experiment`."""

    model: str = field(default=DEFAULT_MODEL, metadata={"help": "model (folder, hub name, .gguf, packaged name)"})
    train: str = field(default="data/llm/arith_train.jsonl", metadata={"help": "training split (Alpaca JSONL)"})
    heldout: str = field(default="data/llm/arith_heldout.jsonl", metadata={"help": "held-out split"})
    output: str = field(default="runs/llm-experiment", metadata={"help": "results, table, figure, logs"})
    variants: list[str] = field(default_factory=lambda: list(VARIANTS), metadata={
        "help": "full, c2q-K, lora-R, lora-qp (QuanTA's parameter count), quanta"})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    max_steps: int = field(default=40, metadata={"help": "training steps of every variant"})
    batch_size: int = 8
    max_length: int = field(default=256, metadata={"help": "tokens per example"})
    lrs: dict[str, float] = field(default_factory=dict, metadata={
        "help": "learning rate by method, e.g. lrs.full=1e-4 (default: the method's usual)"})
    quanta_dims: list[int] | None = field(default=None, metadata={"help": "QuanTA dims (default: each layer's own)"})
    prompt: str = field(default="auto", metadata={"choices": PROMPT_FORMATS})
    eval_examples: int = field(default=100, metadata={"help": "held-out problems scored at the end"})
    curve_examples: int = field(default=32, metadata={"help": "held-out problems scored every eval_every steps"})
    eval_every: int = 10
    max_new_tokens: int = 48
    eval_batch_size: int = 16
    cores: list[int] = field(default_factory=lambda: [0, 1], metadata={
        "help": "one run per core, side by side (empty: one after the other in this process)"})
    threads: int = field(default=1, metadata={"help": "torch threads of each run's process (with cores)"})
    adapters_seed: int = field(default=0, metadata={"help": "keep the LoRA and QuanTA adapters of this seed"})

    def settings(self) -> dict:
        """What makes two runs comparable (not where they run or are written)."""
        keep = {k: v for k, v in asdict(self).items() if k not in ("output", "variants", "seeds", "cores",
                                                                      "adapters_seed")}
        for key in ("train", "heldout"):
            path = Path(keep[key])
            keep[key + "_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None
        return keep


# --- variants --------------------------------------------------------------------------------------


def check_variant(label: str) -> None:
    if label != BASE and not _VARIANT.match(label):
        raise ValueError(f"unknown variant {label!r}; use full, c2q-K (K >= 2), lora-R, lora-qp or quanta")


def variant_spec(label: str, config: ExperimentConfig, lora_qp_rank: int | None = None) -> MethodSpec:
    """The MethodSpec of a variant label (see the module docstring)."""
    check_variant(label)
    if label == "full":
        return MethodSpec("full")
    if label == "quanta":
        return MethodSpec("quanta", dims=list(config.quanta_dims) if config.quanta_dims else None)
    if label.startswith("c2q-"):
        return MethodSpec("c2q", order=int(label[4:]))
    rank = lora_qp_rank if label == "lora-qp" else int(label[5:])
    if rank is None or rank < 1:
        raise ValueError(f"{label}: LoRA needs a rank >= 1, got {rank}")
    return MethodSpec("lora", lora_r=rank, lora_alpha=2 * rank)


def _linear_shapes(skeleton, spec: MethodSpec) -> list[tuple[int, int]]:
    from ho_co.llm.methods import target_names
    from ho_co.replace import linear_features

    return [linear_features(skeleton.get_submodule(name)) for name in target_names(skeleton, spec)]


def quanta_parameters(skeleton, spec: MethodSpec) -> int:
    """QuanTA's trainable parameters on `spec`'s targets (its gates T), counted from the shapes."""
    from ho_co.layers.quanta import gate_shapes, quanta_dims

    total = 0
    for n_in, n_out in _linear_shapes(skeleton, spec):
        dims, out_dims = quanta_dims(n_in, n_out, spec.dims)
        total += sum(math.prod(shape) for shape in gate_shapes(dims, out_dims))
    return total


def lora_rank_for(skeleton, n_params: int) -> tuple[int, int]:
    """(rank, its parameter count) of the LoRA on every default target whose parameter count is
    nearest `n_params` (rank r costs r * (in + out) per layer)."""
    per_rank = sum(n_in + n_out for n_in, n_out in _linear_shapes(skeleton, MethodSpec("lora")))
    rank = max(1, round(n_params / per_rank))
    return rank, rank * per_rank


def skeleton_of(model: str):
    """The model built from its config on the meta device: its layers, no weights."""
    import torch
    from transformers import AutoModelForCausalLM

    from ho_co.llm.sources import model_config

    config = model_config(model)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


# --- checks ----------------------------------------------------------------------------------------


def check_config(config: ExperimentConfig) -> None:
    """Everything that can be checked without the model's weights; ValueError on the first problem."""
    from ho_co.llm.lm_eval import read_answers

    if not config.variants:
        raise ValueError("variants is empty: name at least one of " + ", ".join(VARIANTS))
    for label in config.variants:
        check_variant(label)
    if len(set(config.variants)) != len(config.variants):
        raise ValueError(f"variants {config.variants} name one twice")
    if not config.seeds or len(set(config.seeds)) != len(config.seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {config.seeds}")
    for key in ("max_steps", "batch_size", "max_length", "eval_examples", "eval_every", "max_new_tokens",
                "eval_batch_size", "threads"):
        if getattr(config, key) < 1:
            raise ValueError(f"{key} must be >= 1, got {getattr(config, key)}")
    if not 0 <= config.curve_examples <= config.eval_examples:
        raise ValueError(f"curve_examples must be in [0, eval_examples={config.eval_examples}], "
                         f"got {config.curve_examples}")
    if config.prompt not in PROMPT_FORMATS:
        raise ValueError(f"prompt must be one of {', '.join(PROMPT_FORMATS)}, got {config.prompt!r}")
    for method in config.lrs:
        if method not in METHODS:
            raise ValueError(f"lrs.{method}: unknown method; choose among {', '.join(METHODS)}")
    if config.cores:
        available = os.sched_getaffinity(0)
        missing = sorted(set(config.cores) - available)
        if missing or len(set(config.cores)) != len(config.cores):
            raise ValueError(f"cores {config.cores}: this process may run on cores {sorted(available)} only, "
                             "each named once")
    read_answers(config.train)  # every record has an answer (DataError naming file and line)
    _, answers = read_answers(config.heldout)
    if config.eval_examples > len(answers):
        raise ValueError(f"eval_examples={config.eval_examples}, but {config.heldout} holds {len(answers)} records")


def check_lengths(config: ExperimentConfig) -> None:
    """Every training record and every scored held-out record fits `max_length` in the prompt
    format the runs use (DataError naming the first that does not)."""
    from ho_co.llm.data import load_examples
    from ho_co.llm.models import load_tokenizer

    tokenizer = load_tokenizer(config.model)
    load_examples(config.train, tokenizer, config.max_length, config.prompt)
    load_examples(config.heldout, tokenizer, config.max_length, config.prompt)


def check_settings(config: ExperimentConfig) -> None:
    """Write OUTPUT/settings.json, or check that the results already there used these settings."""
    out = Path(config.output)
    path = out / SETTINGS
    settings = config.settings()
    if path.is_file():
        stored = json.loads(path.read_text())
        differ = sorted(k for k in set(stored) | set(settings) if stored.get(k) != settings.get(k))
        if differ:
            raise ValueError(f"{out} holds results of other settings (they differ in {', '.join(differ)}); "
                             "choose another output or restore them")
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=2) + "\n")


def plan(config: ExperimentConfig) -> dict:
    """Check every variant against the model's layers on a weightless copy; returns
    {"lora_qp_rank", "quanta_parameters", "lora_qp_parameters", "specs": {label: spec dict}}."""
    from ho_co.llm.finetune import check_spec

    skeleton = skeleton_of(config.model)
    info = {"lora_qp_rank": None, "quanta_parameters": None, "lora_qp_parameters": None}
    if "lora-qp" in config.variants or "quanta" in config.variants:
        quanta = variant_spec("quanta", config)
        check_spec(config.model, quanta)
        info["quanta_parameters"] = quanta_parameters(skeleton, quanta)
        info["lora_qp_rank"], info["lora_qp_parameters"] = lora_rank_for(skeleton, info["quanta_parameters"])
    specs = {}
    for label in config.variants:
        spec = variant_spec(label, config, info["lora_qp_rank"])
        check_spec(config.model, spec)
        specs[label] = spec.to_dict()
    info["specs"] = specs
    return info


# --- results ---------------------------------------------------------------------------------------


def read_results(output: str | Path) -> list[dict]:
    path = Path(output) / RESULTS
    if not path.is_file():
        return []
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut off by a crash: that run is simply redone
                log.warning("%s:line %d: not JSON, ignored (its run is done again)", path, lineno)
    return rows


def append_result(output: str | Path, row: dict) -> None:
    """One JSON line, written with a single append (whole lines even from two processes)."""
    data = (json.dumps(row) + "\n").encode()
    fd = os.open(Path(output) / RESULTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def jobs_to_run(config: ExperimentConfig) -> list[tuple[str, int]]:
    """(label, seed) of every run not yet in the results; the base model is scored once (seed 0:
    greedy decoding has no randomness)."""
    done = {(row["label"], row["seed"]) for row in read_results(config.output)}
    wanted = [(BASE, 0)] + [(label, seed) for seed in config.seeds for label in config.variants]
    return [job for job in wanted if job not in done]


# --- one run -------------------------------------------------------------------------------------------


def run_job(config: ExperimentConfig, label: str, seed: int, info: dict, core: int | None = None) -> dict:
    """Train (unless `label` is the base) and score one run; appends its row to the results."""
    import tempfile

    import torch
    from transformers import TrainerCallback, set_seed

    from ho_co.adapters import trainable_parameters
    from ho_co.llm.data import load_examples
    from ho_co.llm.finetune import FinetuneConfig, build_trainer
    from ho_co.llm.lm_eval import exact_match
    from ho_co.llm.methods import apply_method
    from ho_co.llm.models import load_pretrained, save_finetuned

    if core is not None:  # a worker process of its own
        os.sched_setaffinity(0, {core})
        torch.set_num_threads(config.threads)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    set_seed(seed)
    model, tokenizer = load_pretrained(config.model)
    load_cpu = time.process_time() - cpu0
    score = dict(prompt=config.prompt, max_new_tokens=config.max_new_tokens, batch_size=config.eval_batch_size,
                 max_length=config.max_length)
    row = {"label": label, "seed": seed, "steps": 0}

    def final_eval(model) -> None:
        cpu = time.process_time()
        result = exact_match(model, tokenizer, config.heldout, limit=config.eval_examples, **score)
        row.update(exact_match=result["exact_match"], loss=result["loss"], questions=result["questions"],
                   eval_cpu_s=round(time.process_time() - cpu, 1))
        row["curve"].append([row["steps"], _mean(result["correct"][: config.curve_examples])])

    if label == BASE:
        row.update(method=None, trainable_parameters=0, train_cpu_s=0.0, curve=[])
        row["total_parameters"] = trainable_parameters(model)[1]
        final_eval(model)
    else:
        spec = MethodSpec(**info["specs"][label])
        train_examples = load_examples(config.train, tokenizer, config.max_length, config.prompt)
        model = apply_method(model, spec)
        trainable, total = trainable_parameters(model)
        lr = config.lrs.get(spec.method, METHODS[spec.method].lr)
        row.update(method=spec.method, spec=spec.to_dict(), lr=lr, trainable_parameters=trainable,
                   total_parameters=total, curve=[])
        eval_cpu = [0.0]

        class Curve(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                step = state.global_step
                if step % config.eval_every == 0 and step < config.max_steps and config.curve_examples:
                    cpu = time.process_time()
                    result = exact_match(model, tokenizer, config.heldout, limit=config.curve_examples,
                                         with_loss=False, **score)
                    row["curve"].append([step, result["exact_match"]])
                    eval_cpu[0] += time.process_time() - cpu
                    model.train()

        with tempfile.TemporaryDirectory(dir=config.output, prefix=f".{label}-s{seed}.") as tmp:
            finetune_config = FinetuneConfig(
                model=config.model, data=config.train, output=tmp, spec=spec, max_steps=config.max_steps,
                batch_size=config.batch_size, lr=lr, max_length=config.max_length, prompt=config.prompt,
                seed=seed, save_steps=config.max_steps + 1, logging_steps=max(1, config.max_steps // 8),
                use_cpu=True)
            trainer = build_trainer(model, tokenizer, train_examples, finetune_config)
            trainer.add_callback(Curve())
            cpu = time.process_time()
            result = trainer.train()
            row.update(steps=result.global_step, train_loss=result.training_loss,
                       train_cpu_s=round(time.process_time() - cpu - eval_cpu[0], 1))
        final_eval(trainer.model)
        if seed == config.adapters_seed and METHODS[spec.method].adapter:
            save_finetuned(trainer.model, tokenizer, Path(config.output) / "adapters" / label, spec, config.model)
    row.update(load_cpu_s=round(load_cpu, 1), wall_s=round(time.perf_counter() - wall0, 1),
               cpu_s=round(time.process_time() - cpu0, 1), core=core, threads=config.threads)
    append_result(config.output, row)
    return row


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


# --- the whole experiment -----------------------------------------------------------------------------


def _worker_command(job_file: Path) -> list[str]:
    return [sys.executable, "-m", "ho_co.llm.experiment", "--job", str(job_file)]


def run_experiment(config: ExperimentConfig) -> dict:
    """Check everything, run the missing runs (side by side on `cores`), write the report."""
    from ho_co.llm.sources import model_source

    check_config(config)
    model_source(config.model)  # a GGUF model is dequantized once here, not by each run
    check_lengths(config)
    info = plan(config)
    check_settings(config)
    out = Path(config.output)
    (out / "plan.json").write_text(json.dumps(info, indent=2) + "\n")
    jobs = jobs_to_run(config)
    log.info("%d run(s) to do: %s", len(jobs), ", ".join(f"{label}/s{seed}" for label, seed in jobs) or "none")
    failed = []
    if not config.cores:
        for label, seed in jobs:
            row = run_job(config, label, seed, info)
            log.info("%s seed %d: exact match %.3f", label, seed, row["exact_match"])
    else:
        failed = _run_side_by_side(config, jobs)
    summary = report(config.output)
    summary["failed"] = failed
    return summary


def _run_side_by_side(config: ExperimentConfig, jobs: list[tuple[str, int]]) -> list[str]:
    """One worker process per core, the next job on a core as soon as it is free."""
    out = Path(config.output)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    pending, running, failed = list(jobs), {}, []
    try:
        while pending or running:
            for core in config.cores:
                if core not in running and pending:
                    label, seed = pending.pop(0)
                    job_file = out / "logs" / f"{label}-s{seed}.job.json"
                    job_file.write_text(json.dumps({"config": asdict(config), "label": label, "seed": seed,
                                                    "core": core}))
                    log_file = (out / "logs" / f"{label}-s{seed}.log").open("w")
                    proc = subprocess.Popen(_worker_command(job_file), stdout=log_file, stderr=subprocess.STDOUT)
                    running[core] = (proc, label, seed, log_file)
                    log.info("core %d: %s seed %d started (pid %d)", core, label, seed, proc.pid)
            time.sleep(1.0)
            for core, (proc, label, seed, log_file) in list(running.items()):
                if proc.poll() is None:
                    continue
                log_file.close()
                del running[core]
                if proc.returncode == 0:
                    log.info("core %d: %s seed %d done", core, label, seed)
                else:
                    lines = Path(log_file.name).read_text(errors="replace").strip().splitlines()
                    failed.append(f"{label}/s{seed}: {lines[-1] if lines else 'no output'}")
                    log.warning("core %d: %s seed %d failed (exit %d); see %s", core, label, seed,
                                proc.returncode, log_file.name)
    finally:
        for proc, *_ in running.values():  # stopped: end the runs this call started
            proc.terminate()
            proc.wait()
    return failed


# --- the report -----------------------------------------------------------------------------------------


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return _mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def groups(rows: list[dict]) -> dict[str, list[dict]]:
    """The runs of each variant and learning rate (base first, then in the order met), named by
    the variant, with `@ lr` where the rows hold the variant at more than one rate."""
    rates: dict[str, list] = {}
    for row in rows:
        rates.setdefault(row["label"], [])
        if row.get("lr") not in rates[row["label"]]:
            rates[row["label"]].append(row.get("lr"))
    named: dict[str, list[dict]] = {}
    for label in sorted(rates, key=lambda label: label != BASE):  # stable: the order met otherwise
        for lr in rates[label]:
            name = label if len(rates[label]) == 1 else f"{label} @ {lr:g}"
            named[name] = [row for row in rows if row["label"] == label and row.get("lr") == lr]
    return named


def summarize(rows: list[dict]) -> list[dict]:
    """One row per variant and learning rate (`groups`): mean and sd over seeds."""
    table = []
    for name, runs in groups(rows).items():
        em_mean, em_sd = _mean_sd([100 * row["exact_match"] for row in runs])
        loss_mean, loss_sd = _mean_sd([row["loss"] for row in runs])
        table.append({
            "label": name, "seeds": len(runs), "exact_match": em_mean, "exact_match_sd": em_sd,
            "loss": loss_mean, "loss_sd": loss_sd, "trainable_parameters": runs[0]["trainable_parameters"],
            "train_cpu_s": _mean([row["train_cpu_s"] for row in runs]), "lr": runs[0].get("lr"),
        })
    return table


def format_table(table: list[dict]) -> str:
    lines = ["| variant | lr | seeds | held-out exact match (%) | held-out loss | trainable parameters | train CPU s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in table:
        lr = "-" if row["lr"] is None else f"{row['lr']:g}"
        lines.append(f"| {row['label']} | {lr} | {row['seeds']} | {row['exact_match']:.1f} ± "
                     f"{row['exact_match_sd']:.1f} | {row['loss']:.3f} ± {row['loss_sd']:.3f} "
                     f"| {row['trainable_parameters']:,} | {row['train_cpu_s']:.0f} |")
    return "\n".join(lines)


def plot_curves(rows: list[dict], png: str | Path) -> Path:
    """Held-out exact match (the curve examples) against training steps, mean ± sd over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    base = [row for row in rows if row["label"] == BASE]
    for label, runs in groups(rows).items():
        if label == BASE:
            continue
        steps = sorted({step for row in runs for step, _ in row["curve"]})
        start = [base[0]["curve"][0][1]] if base and base[0]["curve"] else []
        means, sds = [], []
        for step in steps:
            values = [100 * acc for row in runs for s, acc in row["curve"] if s == step]
            mean, sd = _mean_sd(values)
            means.append(mean)
            sds.append(sd)
        xs, ys = ([0] if start else []) + steps, [100 * v for v in start] + means
        sds = [0.0] * len(start) + sds
        seeds = f"{len(runs)} seed{'s' if len(runs) > 1 else ''}"
        (line,) = ax.plot(xs, ys, marker="o", markersize=3, label=f"{label} ({seeds})")
        ax.fill_between(xs, [y - s for y, s in zip(ys, sds)], [y + s for y, s in zip(ys, sds)],
                        color=line.get_color(), alpha=0.15)
    if base and base[0]["curve"]:
        ax.axhline(100 * base[0]["curve"][0][1], color="gray", linestyle="--", linewidth=1, label="base model")
    ax.set_ylim(0, 100)
    ax.set_xlabel("training step")
    ax.set_ylabel("held-out exact match (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = Path(png)
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


def report(output: str | Path, merge: list[str | Path] = ()) -> dict:
    """results.md, results.csv and heldout_accuracy.png in OUTPUT, from OUTPUT/results.jsonl and
    the results of the `merge` folders (experiments of the same task that differ in learning
    rates, e.g. the adapters at a rate chosen on the validation split); a run found twice
    (variant, seed and rate) counts once."""
    import csv

    out = Path(output)
    rows, seen = [], set()
    for folder in [out, *map(Path, merge)]:
        found = read_results(folder)
        if not found:
            raise ValueError(f"{folder / RESULTS}: no results yet")
        for row in found:
            key = (row["label"], row["seed"], row.get("lr"))
            if key not in seen:
                seen.add(key)
                rows.append(row)
    table = summarize(rows)
    text = format_table(table)
    (out / "results.md").write_text(text + "\n")
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    png = plot_curves(rows, out / "heldout_accuracy.png")
    return {"table": text, "rows": len(rows), "figure": str(png)}


def _job_main(job_file: str) -> int:
    from ho_co.logs import InfoOnStderr

    job = json.loads(Path(job_file).read_text())
    config = ExperimentConfig(**job["config"])
    info = json.loads((Path(config.output) / "plan.json").read_text())
    with InfoOnStderr():
        row = run_job(config, job["label"], job["seed"], info, core=job["core"])
    print(json.dumps({k: v for k, v in row.items() if k != "curve"}))
    return 0


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="one run of ho-co llm-experiment (started by it)")
    parser.add_argument("--job", required=True)
    sys.exit(_job_main(parser.parse_args().job))
