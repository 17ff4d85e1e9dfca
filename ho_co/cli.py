"""`ho-co` command line: parse, call one function of a client package, print.

Each subcommand is one small `_cmd_*` function that declares its arguments and sets the
handler to call; heavy imports (rl4co, transformers, solvers) happen inside the handler so
`ho-co --help` stays instant. Handlers raise on bad input; `main` turns those errors (see
`input_errors`) into one line `ho-co COMMAND: error: ...` and exit code 2, for every subcommand.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

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


def _cmd_finetune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="fine-tune a Hugging Face causal LM (c2q, quanta, lora, full)")
    p.add_argument("--model", required=True, help="local model directory or hub name")
    p.add_argument("--method", required=True, choices=["c2q", "quanta", "lora", "full"])
    p.add_argument("--data", required=True, help="Alpaca .json/.jsonl (prompt masked) or plain .txt")
    p.add_argument("--eval-data", help="held-out file in the same formats, evaluated each epoch")
    p.add_argument("--output", help="output directory (default: runs/finetune-METHOD)")
    p.add_argument("--target-modules", nargs="+", help="module name patterns (default: all linear but lm_head)")
    p.add_argument("--exclude-modules", nargs="+", help="module name patterns to leave alone")
    p.add_argument("--order", type=int, default=2, help="c2q: HOLinear order K (default 2)")
    p.add_argument("--dims", type=int, nargs="+", help="quanta: axis sizes of the features (default automatic)")
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-alpha", type=int, default=16)
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--max-steps", type=int, default=-1, help="> 0: stop after this many steps")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lr", type=float, help="learning rate (default: 2e-5 full/c2q, 2e-4 lora/quanta)")
    p.add_argument("--max-length", type=int, default=512, help="tokens per example (capped at the model's)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--save-steps", type=int, default=500, help="checkpoint every N steps")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in OUTPUT")
    p.add_argument("--merge", action="store_true", help="lora/quanta: save a merged plain model")
    p.add_argument("--seed", type=int, default=42)

    def run(args: argparse.Namespace) -> int:
        import json

        from ho_co.llm.finetune import FinetuneConfig, finetune
        from ho_co.llm.methods import MethodSpec

        spec = MethodSpec(
            args.method, target_modules=args.target_modules, exclude_modules=args.exclude_modules,
            order=args.order, dims=args.dims, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
        )
        config = FinetuneConfig(
            model=args.model, data=args.data, eval_data=args.eval_data,
            output=args.output or f"runs/finetune-{args.method}", spec=spec, epochs=args.epochs,
            max_steps=args.max_steps, batch_size=args.batch_size, grad_accum=args.grad_accum,
            lr=args.lr, max_length=args.max_length, dtype=args.dtype, merge=args.merge,
            resume=args.resume, seed=args.seed, save_steps=args.save_steps,
        )
        summary = finetune(config)
        print(json.dumps(summary, indent=2))
        return 0

    p.set_defaults(handler=run)


def _cmd_lm_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lm-eval", help="perplexity on text, accuracy on multiple-choice JSONL")
    p.add_argument("--model", required=True, help="a `ho-co finetune` output or any HF causal LM")
    p.add_argument("--base-model", help="override the recorded base model of a LoRA/QuanTA adapter")
    p.add_argument("--text", help="plain text file: report perplexity")
    p.add_argument("--choices", help="JSONL of {question, choices, answer}: report accuracy")
    p.add_argument("--block-size", type=int, default=1024, help="perplexity window (capped at the model's)")
    p.add_argument("--stride", type=int, help="perplexity window step (default: block size)")

    def run(args: argparse.Namespace) -> int:
        import json

        import torch

        from ho_co.llm.lm_eval import multiple_choice, perplexity
        from ho_co.llm.models import load_finetuned

        if not (args.text or args.choices):
            raise ValueError("give --text FILE, --choices FILE, or both")
        model, tokenizer = load_finetuned(args.model, base_model=args.base_model)
        model.to("cuda" if torch.cuda.is_available() else "cpu")
        results = {}
        if args.text:
            results["text"] = perplexity(model, tokenizer, args.text, args.block_size, args.stride)
        if args.choices:
            results["choices"] = multiple_choice(model, tokenizer, args.choices, args.block_size)
        print(json.dumps(results, indent=2))
        return 0

    p.set_defaults(handler=run)


class OverridesHelp(argparse.RawDescriptionHelpFormatter):
    """Fills the epilog `PRETRAIN_OVERRIDES` only when help is printed: listing the fields imports
    torch, which `ho-co --help` and every other command should not pay for."""

    def add_text(self, text):
        super().add_text(pretrain_overrides() if text is PRETRAIN_OVERRIDES else text)


PRETRAIN_OVERRIDES = "key=value overrides"


def pretrain_overrides() -> str:
    """PretrainConfig's fields as `key=default` lines, in the syntax the overrides take."""
    import json
    from dataclasses import MISSING, fields

    from ho_co.llm.pretrain import PretrainConfig

    lines = [f"{PRETRAIN_OVERRIDES} (defaults shown), e.g. orders=[1,2] n_layer=2 max_steps=200:"]
    for f in fields(PretrainConfig):
        if f.name not in ("text", "output"):  # the flags above
            default = f.default_factory() if f.default is MISSING else f.default
            lines.append(f"  {f.name}={json.dumps(default, separators=(',', ':'))}")
    return "\n".join(lines)


def _cmd_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="GPT-2 from scratch, HOLinear orders vs baseline (key=value overrides, e.g. orders=[1,2,4] n_layer=2)",
        epilog=PRETRAIN_OVERRIDES, formatter_class=OverridesHelp,
    )
    p.add_argument("--text", required=True, help="training text file")
    p.add_argument("--output", required=True, help="directory for runs, curves.csv, loss_curves.png")

    def run(args: argparse.Namespace) -> int:
        import json

        from omegaconf import OmegaConf

        from ho_co.llm.pretrain import PretrainConfig, pretrain

        base = OmegaConf.structured(PretrainConfig(text=args.text, output=args.output))
        config = OmegaConf.to_object(OmegaConf.merge(base, OmegaConf.from_dotlist(args.overrides)))
        summary = pretrain(config)
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
    p.add_argument("--augment", type=int, default=1, help="augmentations, best of all (default 1: none)")
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

        from ho_co.routing.evaluate import evaluate, format_table

        result = evaluate(
            args.checkpoint, args.instances, args.reference, num_augment=args.augment,
            num_starts=args.starts, batch_size=args.batch_size, device=args.device, seed=args.seed,
            render=args.render, render_count=args.render_count, json_out=args.json, out=args.out,
            optima=args.optima, overwrite=args.overwrite,
        )
        print(format_table(result) if "files" in result else json.dumps(result, indent=2))
        return 0

    p.set_defaults(handler=run)


def _cmd_make_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("make-data", help="write a deterministic TSP/ATSP instance set (.npz)")
    p.add_argument("--problem", choices=("tsp", "atsp"), required=True)
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
    p = sub.add_parser("solve", help="reference tours for instance files (Concorde, exact MIP, baselines)")
    p.add_argument("--solver", choices=("concorde", "exact", "lkh", "ortools", "nearest", "insertion"),
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
        from ho_co.solvers.driver import sigterm_raises

        _check_time_limit(args.time_limit)
        solver = args.solver or default_optimal_solver()
        files = instance_files(args.instances)
        outs = _solve_outputs(files, args)
        out = outs[0]
        with sigterm_raises():
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
    p = sub.add_parser("report", help="comparison table from eval JSONs, learning curves to PNG")
    p.add_argument("--eval", nargs="*", default=[], metavar="LABEL=JSON", help="`ho-co eval --json` outputs")
    p.add_argument("--curve", nargs="*", default=[], metavar="LABEL=CSV", help="runs' learning_curve.csv")
    p.add_argument("--png", help="write the learning curves here")
    p.add_argument("--x", nargs="+", choices=["instances_seen", "wall_s"], default=["instances_seen", "wall_s"],
                   help="curve x axes, one panel each")
    p.add_argument("--no-paper-rows", action="store_true",
                   help="leave out the seed paper's rows (shown beside a TSP-50 set only)")

    def run(args: argparse.Namespace) -> int:
        from ho_co.routing import report

        if not (args.eval or args.curve):
            p.error("give --eval LABEL=JSON ... and/or --curve LABEL=CSV ... --png OUT.png")
        if args.eval:
            print(report.comparison_table(report.parse_labelled(args.eval), with_paper_rows=not args.no_paper_rows))
        if args.curve:
            if not args.png:
                raise ValueError("--curve needs --png OUT.png")
            print(f"wrote {report.plot_curves(report.parse_labelled(args.curve), args.png, x=args.x)}")
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
