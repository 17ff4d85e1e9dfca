"""`ho-co` command line: parse, call one function of a client package, print.

Each subcommand is one small `_cmd_*` function that declares its arguments and sets the
handler to call. Choices come from the registries they name (`ho_co.solvers.SOLVERS`,
`ho_co.problems.PROBLEMS`, `ho_co.llm.methods.METHODS`); heavy imports (torch, rl4co,
transformers, the solvers' packages) happen inside the handler so `ho-co --help` stays
instant. Handlers raise on bad input; `main` turns those errors (see
`input_errors`) into one line `ho-co COMMAND: error: ...` and exit code 2, for every subcommand.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ho_co.logs import InfoOnStderr

def _cmd_version(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("version", help="print the ho-co version")

    def run(args: argparse.Namespace) -> int:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(version("ho-co"))
        except PackageNotFoundError:  # running from a checkout without install
            from ho_co import __version__

            print(__version__)
        return 0

    p.set_defaults(handler=run)


# finetune and pretrain: the config is a dataclass; every field is a `key=value` override
# (an OmegaConf structured config: typed, unknown keys refused, the dataclass's defaults), and
# the usual fields are also flags (--order), generated from the same fields.


def _field(config_cls: type, key: str):
    """The dataclass field at the dotted `key` (e.g. "spec.order") and its type."""
    from dataclasses import fields
    from typing import get_type_hints

    *parents, name = key.split(".")
    for parent in parents:
        config_cls = get_type_hints(config_cls)[parent]
    return next(f for f in fields(config_cls) if f.name == name), get_type_hints(config_cls)[name]


def _has_default(f) -> bool:
    from dataclasses import MISSING

    return f.default is not MISSING or f.default_factory is not MISSING


def _default(f):
    from dataclasses import MISSING

    return f.default_factory() if f.default is MISSING else f.default


def _add_config_flags(p: argparse.ArgumentParser, config_cls: type, keys: Sequence[str],
                      choices: dict[str, Sequence[str]] | None = None, helps: dict[str, str] | None = None) -> None:
    """The config `keys` as flags (`spec.lora_r` -> --lora-r), typed from their fields, with no
    default of their own (a flag not given leaves the dataclass's default)."""
    import json
    import types
    from typing import get_args, get_origin

    for key in keys:
        f, hint = _field(config_cls, key)
        options = {"dest": key, "default": argparse.SUPPRESS,
                   "help": (helps or {}).get(key, f.metadata.get("help", ""))}
        if hint is bool:
            options["action"] = "store_true"
        else:
            if get_origin(hint) is types.UnionType:  # X | None
                hint = next(t for t in get_args(hint) if t is not type(None))
            if get_origin(hint) is list:
                options["nargs"], hint = "+", get_args(hint)[0]
            options["type"], options["metavar"] = hint, key.rpartition(".")[2].upper()
            options["choices"] = (choices or {}).get(key, f.metadata.get("choices"))
            if options["choices"]:
                del options["metavar"]  # argparse shows {a,b,...}
            if _has_default(f) and _default(f) is not None:
                options["help"] += f" (default {json.dumps(_default(f))})"
        options["required"] = not _has_default(f)
        p.add_argument("--" + key.rpartition(".")[2].replace("_", "-"), **options)


def config_overrides(config_cls: type, example: str, prefix: str = "") -> str:
    """Every field of `config_cls` that has a default, as `key=default` lines in the syntax the
    overrides take (nested dataclasses as dotted keys), with its help."""
    import json
    from dataclasses import fields, is_dataclass
    from typing import get_type_hints

    lines = []
    hints = get_type_hints(config_cls)
    for f in fields(config_cls):
        if is_dataclass(hints[f.name]):
            lines += config_overrides(hints[f.name], "", f"{prefix}{f.name}.").splitlines()[1:]
        elif _has_default(f) and "result" not in f.metadata:
            setting = f"  {prefix}{f.name}={json.dumps(_default(f), separators=(',', ':'))}"
            lines.append(f"{setting:34} {f.metadata.get('help', '')}".rstrip())
    return "\n".join([f"key=value overrides (defaults shown), e.g. {example}:", *lines])


def _config(config_cls: type, args: argparse.Namespace, keys: Sequence[str]):
    """The config from the flags given, then the key=value overrides (which win)."""
    from omegaconf import OmegaConf

    given = OmegaConf.create()
    for key in keys:
        if hasattr(args, key):
            OmegaConf.update(given, key, getattr(args, key))
    merged = OmegaConf.merge(OmegaConf.structured(config_cls), given, OmegaConf.from_dotlist(args.overrides))
    return OmegaConf.to_object(merged)


FINETUNE_FLAGS = (
    "model", "spec.method", "data", "eval_data", "output", "spec.target_modules", "spec.exclude_modules",
    "spec.order", "spec.dims", "spec.lora_r", "spec.lora_alpha", "epochs", "max_steps", "batch_size",
    "grad_accum", "lr", "max_length", "prompt", "dtype", "save_steps", "resume", "merge", "seed",
)


def _cmd_finetune(sub: argparse._SubParsersAction) -> None:
    from ho_co.llm.finetune import FinetuneConfig
    from ho_co.llm.methods import METHODS

    p = sub.add_parser(
        "finetune", help=f"fine-tune a Hugging Face causal LM ({', '.join(METHODS)})",
        epilog=config_overrides(FinetuneConfig, "spec.lora_dropout=0.1 logging_steps=50"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    usual = {}
    for name, method in METHODS.items():
        usual.setdefault(f"{method.lr:g}", []).append(name)
    lr_help = "learning rate (default: " + ", ".join(f"{lr} {'/'.join(names)}" for lr, names in usual.items()) + ")"
    _add_config_flags(p, FinetuneConfig, FINETUNE_FLAGS, choices={"spec.method": list(METHODS)},
                      helps={"lr": lr_help})

    def run(args: argparse.Namespace) -> int:
        import json

        from ho_co.llm.finetune import finetune

        with InfoOnStderr():
            summary = finetune(_config(FinetuneConfig, args, FINETUNE_FLAGS))
        print(json.dumps(summary, indent=2))
        return 0

    p.set_defaults(handler=run, accepts_overrides=True)


def _cmd_lm_eval(sub: argparse._SubParsersAction) -> None:
    from ho_co.llm.data import PROMPT_FORMATS
    from ho_co.llm.sources import DEFAULT_MODEL

    p = sub.add_parser("lm-eval", help="perplexity on text, accuracy on multiple-choice JSONL, exact match of answers")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"a `ho-co finetune` output, any HF causal LM, a .gguf file (default {DEFAULT_MODEL})")
    p.add_argument("--base-model", help="override the recorded base model of a LoRA/QuanTA adapter")
    p.add_argument("--text", help="plain text file: report perplexity")
    p.add_argument("--choices", help="JSONL of {question, choices, answer}: report accuracy")
    p.add_argument("--answers", help="Alpaca JSONL whose outputs end on a number: report the exact match of "
                                     "greedy answers and the held-out loss")
    p.add_argument("--prompt", choices=PROMPT_FORMATS, default="auto", help="--answers prompts (default auto)")
    p.add_argument("--limit", type=int, help="--answers: score the first N records only")
    p.add_argument("--max-new-tokens", type=int, default=64, help="--answers: reply length limit (default 64)")
    p.add_argument("--block-size", type=int, default=1024, help="perplexity window (capped at the model's)")
    p.add_argument("--stride", type=int, help="perplexity window step (default: block size)")

    def run(args: argparse.Namespace) -> int:
        import json

        import torch

        from ho_co.llm.lm_eval import exact_match, multiple_choice, perplexity
        from ho_co.llm.models import load_finetuned

        if not (args.text or args.choices or args.answers):
            raise ValueError("give --text FILE, --choices FILE or --answers FILE (or several)")
        if args.limit is not None and args.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {args.limit}")
        model, tokenizer = load_finetuned(args.model, base_model=args.base_model)
        model.to("cuda" if torch.cuda.is_available() else "cpu")
        results = {}
        if args.text:
            results["text"] = perplexity(model, tokenizer, args.text, args.block_size, args.stride)
        if args.choices:
            results["choices"] = multiple_choice(model, tokenizer, args.choices, args.block_size)
        if args.answers:
            scored = exact_match(model, tokenizer, args.answers, args.prompt, args.max_new_tokens, limit=args.limit)
            results["answers"] = {k: v for k, v in scored.items() if k != "correct"}
        print(json.dumps(results, indent=2))
        return 0

    p.set_defaults(handler=run)


def _cmd_llm_experiment(sub: argparse._SubParsersAction) -> None:
    from ho_co.llm.experiment import ExperimentConfig

    p = sub.add_parser(
        "llm-experiment",
        help="the fine-tuning methods side by side on the arithmetic task, several seeds, one run per core",
        epilog=config_overrides(ExperimentConfig, "seeds=[0,1,2] max_steps=40 lrs.full=1e-4"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config_flags(p, ExperimentConfig, ("model", "output"))
    p.add_argument("--report", nargs="*", metavar="MERGE", default=None,
                   help="only write the table and figure from the results so far (into --output), "
                        "with those of these output folders merged in")

    def run(args: argparse.Namespace) -> int:
        from ho_co.llm.experiment import report, run_experiment

        config = _config(ExperimentConfig, args, ("model", "output"))
        with InfoOnStderr():
            summary = report(config.output, args.report) if args.report is not None else run_experiment(config)
        print(summary["table"])
        print(f"figure: {summary['figure']}")
        for failure in summary.get("failed", []):
            print(f"failed: {failure}", file=sys.stderr)
        return 1 if summary.get("failed") else 0

    p.set_defaults(handler=run, accepts_overrides=True)


PRETRAIN_FLAGS = ("text", "output")


def _cmd_pretrain(sub: argparse._SubParsersAction) -> None:
    from ho_co.llm.pretrain import PretrainConfig

    p = sub.add_parser(
        "pretrain",
        help="GPT-2 from scratch, HOLinear orders vs baseline (key=value overrides, e.g. orders=[1,2,4] n_layer=2)",
        epilog=config_overrides(PretrainConfig, "orders=[1,2] n_layer=2 max_steps=200"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config_flags(p, PretrainConfig, PRETRAIN_FLAGS)

    def run(args: argparse.Namespace) -> int:
        import json

        from ho_co.llm.pretrain import pretrain

        with InfoOnStderr():
            summary = pretrain(_config(PretrainConfig, args, PRETRAIN_FLAGS))
        print(json.dumps({k: summary[k] for k in ("final_val_loss", "best_val_loss", "train_runtime_s")}, indent=2))
        return 0

    p.set_defaults(handler=run, accepts_overrides=True)


def _cmd_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a routing policy (rl4co + Lightning) from Hydra configs",
        description="ho-co train experiment=NAME [key=value ...]  (Hydra overrides; resume with "
        "ckpt_path=runs/NAME/checkpoints/last.ckpt; DDP: trainer.devices=N)",
    )
    p.add_argument("--cfg", action="store_true", help="print the composed config and exit")

    def run(args: argparse.Namespace) -> int:
        from omegaconf import OmegaConf

        from ho_co.routing.train import compose, experiments, train

        if not args.overrides and not args.cfg:  # the defaults alone are a 100-epoch TSP-50 job
            raise ValueError(f"name an experiment, e.g. `ho-co train experiment=tsp20_cpu` "
                             f"(experiments: {', '.join(experiments())})")
        cfg = compose(args.overrides)
        if args.cfg:
            print(OmegaConf.to_yaml(cfg))
            return 0
        result = train(cfg)
        print(f"run: {result['output_dir']}  epoch {result['epoch']}  step {result['global_step']}")
        if result["summary"]:
            from ho_co.routing.summary import format_summary

            print(format_summary(result["summary"]))
        else:
            print(f"last checkpoint: {result['last_checkpoint']}")
        return 0

    p.set_defaults(handler=run, accepts_overrides=True)


def _cmd_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="decode a trained routing checkpoint on instances: length, gap, time")
    p.add_argument("--checkpoint", required=True, help="a `ho-co train` checkpoint (.ckpt)")
    p.add_argument("--instances", required=True, nargs="+",
                   help="instance files (.npz: locs or cost_matrix; TSPLIB .tsp/.atsp) or directories")
    p.add_argument("--reference", help="reference tours for the gap: a `ho-co solve` output (.npz) or a "
                   "TSPLIB .opt.tour; for several files, a directory of NAME.npz")
    p.add_argument("--optima", help="published optimal lengths for the gap, lines 'name: length'")
    p.add_argument("--out", help="write tours and lengths in `ho-co solve`'s format (.npz; a directory "
                   "for several files)")
    p.add_argument("--augment", type=positive_int, default=1, help="augmentations, best of all (default 1: none)")
    p.add_argument("--starts", type=int, help="POMO start nodes (default: all N)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=0, help="seed of MatNet's random one-hot embeddings")
    p.add_argument("--render", metavar="PNG", help="draw the first tours to this PNG (TSP)")
    p.add_argument("--render-count", type=int, default=4)
    p.add_argument("--json", metavar="OUT", help="write the result as JSON")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output of another kind (never an input)")

    def run(args: argparse.Namespace) -> int:
        import json

        from ho_co.routing.evaluate import evaluate
        from ho_co.routing.report import format_table

        result = evaluate(
            args.checkpoint, args.instances, args.reference, num_augment=args.augment,
            num_starts=args.starts, batch_size=args.batch_size, device=args.device, seed=args.seed,
            render=args.render, render_count=args.render_count, json_out=args.json, out=args.out,
            optima=args.optima, overwrite=args.overwrite,
        )
        print(format_table(result) if "files" in result else json.dumps(result, indent=2))
        return 0

    p.set_defaults(handler=run)


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (argparse names the option in its error)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1 or str(value) != text.strip().lstrip("+"):
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _cmd_make_data(sub: argparse._SubParsersAction) -> None:
    from ho_co.problems import PROBLEMS

    p = sub.add_parser("make-data", help="write a deterministic TSP/ATSP instance set (.npz)")
    p.add_argument("--problem", choices=PROBLEMS, required=True)
    p.add_argument("--num-loc", type=int, required=True, help="nodes per instance (N)")
    p.add_argument("--size", type=int, required=True, help="number of instances (B)")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--overwrite", action="store_true", help="replace an --out that holds another kind of file")

    def run(args: argparse.Namespace) -> int:
        from ho_co.outputs import check_output
        from ho_co.problems import generate_atsp, generate_tsp, save_instances

        _check_make_data(args)
        check_output(args.out, "instances", overwrite=args.overwrite)
        if args.problem == "tsp":
            path = save_instances(args.out, locs=generate_tsp(args.num_loc, args.size, args.seed))
        else:
            path = save_instances(args.out, cost_matrix=generate_atsp(args.num_loc, args.size, args.seed))
        print(f"wrote {args.size} {args.problem.upper()}-{args.num_loc} instances to {path}")
        return 0

    p.set_defaults(handler=run)


SEED_MAX = 2**32 - 1  # numpy's RandomState takes seeds 0 .. 2**32 - 1


def _check_make_data(args: argparse.Namespace) -> None:
    """Refuse a set that cannot be made before any allocation: numpy would raise MemoryError
    (or the machine swap) only after trying."""
    from ho_co.problems.instances import generation_bytes

    if args.num_loc < 3:
        raise ValueError(f"--num-loc must be at least 3, got {args.num_loc}")
    if args.size < 1:
        raise ValueError(f"--size must be at least 1, got {args.size}")
    if not 0 <= args.seed <= SEED_MAX:
        raise ValueError(f"--seed must be between 0 and 2**32 - 1 (numpy's seed range), got {args.seed}")
    if not args.out.endswith(".npz"):
        raise ValueError(f"--out {args.out}: instance files are written as .npz")
    need, have = generation_bytes(args.problem, args.num_loc, args.size), _available_memory()
    if need > have:
        raise ValueError(f"--size {args.size} of {args.problem.upper()}-{args.num_loc} needs about "
                         f"{_bytes(need)} of memory to generate; {_bytes(have)} is available")


def _available_memory() -> int:
    """MemAvailable from /proc/meminfo (Linux), else the physical memory."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.1f} {unit}"
        n /= 1024


def _cmd_solve(sub: argparse._SubParsersAction) -> None:
    from ho_co.solvers import SOLVERS

    p = sub.add_parser("solve", help="reference tours for instance files (Concorde, exact MIP, baselines)")
    p.add_argument("--solver", choices=list(SOLVERS),
                   help="default: concorde if installed, else exact (HiGHS)")
    p.add_argument("--instances", required=True, nargs="+",
                   help="instance files (.npz: locs or cost_matrix; TSPLIB .tsp/.atsp) or directories")
    p.add_argument("--out", required=True, help="output .npz: tours, lengths, optimal, solver (a directory "
                   "of NAME.npz for several files)")
    p.add_argument("--workers", type=int, default=1, help="solver processes (default 1)")
    p.add_argument("--time-limit", type=float, help="seconds per instance (concorde, exact, ortools)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an output that holds another kind of file (an input never is)")

    def run(args: argparse.Namespace) -> int:
        from ho_co.problems import instance_files
        from ho_co.solvers import default_optimal_solver
        from ho_co.solvers.stopping import sigterm_raises

        _check_time_limit(args.time_limit)
        solver = args.solver or default_optimal_solver()
        files = instance_files(args.instances)
        outs = _solve_outputs(files, args)
        out = outs[0]
        with sigterm_raises(), InfoOnStderr():  # the driver's notes: cached, replaced, resuming
            try:
                for path, out in zip(files, outs):
                    _solve_one(solver, path, out, args)
            except KeyboardInterrupt as err:  # SIGINT, or SIGTERM through sigterm_raises
                return _stopped(err, out)
        return 0

    # a solver that crashes or finds no tour raises RuntimeError naming the solver and instance
    p.set_defaults(handler=run, input_errors=(RuntimeError,))


def _check_time_limit(limit: float | None) -> None:
    import math

    if limit is not None and not (math.isfinite(limit) and limit > 0):
        raise ValueError(f"--time-limit must be a positive, finite number of seconds, got {limit:g}")


def _solve_outputs(files, args: argparse.Namespace) -> list:
    """Every output path, checked before the first solve: none is an input (an instance file or
    the NAME.opt.tour read beside it), none holds another kind of file unless --overwrite."""
    from ho_co.outputs import check_output, per_file_outputs

    inputs = files + [path.with_name(f"{path.stem}.opt.tour") for path in files]
    outs = per_file_outputs(files, args.out)
    for out in outs:
        check_output(out, "reference tours", inputs=inputs, overwrite=args.overwrite)
    return outs


def _solve_one(solver: str, path, out, args: argparse.Namespace) -> None:
    from ho_co.problems import load_instances
    from ho_co.solvers import solve_instances

    inst = load_instances(path)
    refs = solve_instances(solver, inst, out=out, workers=args.workers, time_limit=args.time_limit)
    what = f"{inst.name} ({inst.edge_weight_type}, N={inst.num_loc})" if inst.name else \
        f"{len(refs.lengths)} tours"
    print(f"{solver}: {what}, mean length {refs.lengths.mean():.6f}, "
          f"{int(refs.optimal.sum())} proven optimal{_opt_tour_check(path, inst, refs)} -> {out}")


def _stopped(err: KeyboardInterrupt, out) -> int:
    """One line for a run stopped by SIGINT or SIGTERM, and the shell's exit code for it."""
    import signal

    from ho_co.solvers.driver import partial_path

    signum = getattr(err, "signum", signal.SIGINT)
    partial = partial_path(out)
    kept = f"the finished instances are kept in {partial}; " if partial.exists() else ""
    print(f"ho-co solve: stopped by {signal.Signals(signum).name}; {kept}run the same command again "
          "to resume", file=sys.stderr)
    return 128 + signum


def _opt_tour_check(path, inst, refs) -> str:
    """Where TSPLIB's NAME.opt.tour sits beside NAME.tsp: compare its length with the tour found
    (a proven-optimal tour longer than it is an error)."""
    from ho_co.problems import load_references

    tour_file = path.with_name(f"{path.stem}.opt.tour")
    if inst.name is None or not tour_file.is_file():
        return ""
    best = float(load_references(tour_file, inst).lengths[0])
    if refs.optimal[0] and refs.lengths[0] > best + 1e-9 * best:
        raise ValueError(f"{path}: tour proven optimal has length {refs.lengths[0]:.6g}, but "
                         f"{tour_file.name} has {best:.6g}")
    return f" ({tour_file.name}: {best:.6g})"


def _cmd_checkpoint(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("checkpoint", help="export the weights-only (bf16) file that ships with a model; "
                       "convert a trusted checkpoint that needs pickle into plain data")
    p.add_argument("action", choices=["export", "convert"],
                   help="export: weights, config and learning curve only; convert --trust: rewrite a "
                   "checkpoint that only loads with pickle as plain data (unpickles it once: trusted files only)")
    p.add_argument("source", help="a `ho-co train` checkpoint")
    p.add_argument("dest", help="output checkpoint")
    p.add_argument("--trust", action="store_true", help="convert: I trust this file to run code when unpickled")
    p.add_argument("--overwrite", action="store_true", help="replace a dest that holds another kind of "
                   "file (never the source)")

    def run(args: argparse.Namespace) -> int:
        from ho_co.outputs import check_output, kind_of
        from ho_co.routing import checkpoints

        kind = "weights-only checkpoint" if args.action == "export" else \
            kind_of(args.source) or "training checkpoint"  # convert keeps the source's kind
        check_output(args.dest, kind, inputs=[args.source], overwrite=args.overwrite, option="dest")
        if args.action == "convert":
            if not args.trust:
                raise ValueError("convert unpickles the file, which can run code: add --trust if you trust it")
            out = checkpoints.convert_trusted(args.source, args.dest)
            print(f"wrote {out}: plain data, loads without pickle")
            return 0
        out = checkpoints.export_weights(args.source, args.dest)
        print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, weights only, bf16)")
        return 0

    p.set_defaults(handler=run)


def _cmd_report(sub: argparse._SubParsersAction) -> None:
    from ho_co.routing.figures import AXES

    p = sub.add_parser("report", help="comparison table from eval JSONs, learning curves to PNG")
    p.add_argument("--eval", nargs="*", default=[], metavar="LABEL=JSON", help="`ho-co eval --json` outputs")
    p.add_argument("--curve", nargs="*", default=[], metavar="LABEL=CSV", help="runs' learning_curve.csv")
    p.add_argument("--png", help="write the learning curves here")
    p.add_argument("--x", nargs="+", choices=list(AXES), default=list(AXES),
                   help="curve x axes, one panel each")
    p.add_argument("--no-paper-rows", action="store_true",
                   help="leave out the seed paper's rows (shown beside a TSP-50 set only)")

    def run(args: argparse.Namespace) -> int:
        from ho_co.routing import figures, report

        if not (args.eval or args.curve):
            p.error("give --eval LABEL=JSON ... and/or --curve LABEL=CSV ... --png OUT.png")
        if args.eval:
            print(report.comparison_table(report.parse_labelled(args.eval), with_paper_rows=not args.no_paper_rows))
        if args.curve:
            if not args.png:
                raise ValueError("--curve needs --png OUT.png")
            print(f"wrote {figures.plot_curves(report.parse_labelled(args.curve), args.png, x=args.x)}")
        return 0

    p.set_defaults(handler=run)


# Subcommands register here, one line each, in the order `ho-co --help` lists them.
COMMANDS = [
    _cmd_version,
    _cmd_make_data,
    _cmd_solve,
    _cmd_train,
    _cmd_eval,
    _cmd_checkpoint,
    _cmd_report,
    _cmd_finetune,
    _cmd_lm_eval,
    _cmd_llm_experiment,
    _cmd_pretrain,
]


def input_errors() -> tuple[type[Exception], ...]:
    """What bad input raises (a file, a field, a setting, a missing solver), with a message
    naming it: every subcommand ends such an error with one line and exit code 2. A handler
    adds its own with `set_defaults(input_errors=...)`; anything else is a bug and keeps its
    traceback."""
    from omegaconf.errors import OmegaConfBaseException

    from ho_co.solvers import SolverUnavailable

    return (ValueError, FileNotFoundError, OmegaConfBaseException, SolverUnavailable)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ho-co",
        description="High-order layers for neural combinatorial optimization.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    try:
        return int(args.handler(args) or 0)
    except Exception as err:
        if not isinstance(err, input_errors() + getattr(args, "input_errors", ())):
            raise  # a bug: its traceback stays
        print(f"ho-co {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
