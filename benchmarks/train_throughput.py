"""POMO training and inference speed: rl4co's MatNet vs ho-co's fast MatNet and HO-MatNet.

Side by side in one run, on TSP as distance matrices with every node a POMO start:

- rl4co MatNet: rl4co's untouched `MatNetPolicy` and decoding loop (the anchor), trained at full
  fp32 matmul precision like the ho-co rows (what `ho-co train` sets);
- on a CPU, rl4co MatNet again under RL4COTrainer's own default matmul precision ("medium"),
  i.e. training as rl4co ships it (training columns only: inference sets full precision);
- ho-co MatNet (fast): `build_policy("matnet", fast=True)`, the same model with
  `ho_co.routing.fast`'s lean loop;
- ho-co HO-MatNet (fast): the same with HOLinear where configs/model/ho_matnet.yaml puts it
  (or where --ho-targets says);
- with --compile [MODE ...], the two ho-co rows again with the encoder and the decoding step
  under torch.compile in each mode (CUDA only; on a CPU those rows run eager).

Training goes through rl4co's MatNet Lightning module and RL4COTrainer (what `ho-co train`
runs): instances/s and ms per step after warm-up steps, peak CUDA memory. Inference is
`ho_co.routing.decode.decode` (what `ho-co eval` runs): multi-start greedy, ms per instance,
without and with MatNet's augmentation. The models take turns, round after round, and each
figure is the median over rounds, each ratio the median of the ratios within a round
(benchmarks/timing.py). Ratios hold within one run only.

    python benchmarks/train_throughput.py                      # small CPU run (a minute or two)
    python benchmarks/train_throughput.py --preset tsp50-cpu   # TSP-50 CPU size: also GFLOP/s and % of sgemm
    python benchmarks/train_throughput.py --device cuda        # TSP-50, embed 256, 5 layers, bf16
    python benchmarks/train_throughput.py --device cuda --curves 500 --curves-csv curves.csv
        # rl4co's loop and the fast loop trained from the same weights and seed: per-step
        # reward/loss side by side (same math: equal in fp32 up to float noise)
"""

from __future__ import annotations

import argparse
import copy
import csv
import statistics
import time

import torch

from timing import interleaved, median_ratio, medians, seconds, synchronize, timed

PRESETS = {  # per device: MatNet's published size on a GPU; a quick run on a CPU
    "cuda": {"num_loc": 50, "embed_dim": 256, "layers": 5, "heads": 16, "batch": [64, 128], "steps": 20, "warmup": 3,
                 "instances": 1280, "eval_batch": 256, "augment": 8, "rounds": 3},
    "cpu": {"num_loc": 20, "embed_dim": 64, "layers": 2, "heads": 4, "batch": [32], "steps": 6, "warmup": 2,
                "instances": 256, "eval_batch": 64, "augment": 4, "rounds": 3},
    # --preset tsp50-cpu: the TSP-50 size CPU training runs at (BENCHMARKS.md, "CPU training speed")
    "tsp50-cpu": {"num_loc": 50, "embed_dim": 128, "layers": 3, "heads": 8, "batch": [64], "steps": 3, "warmup": 1,
                  "instances": 64, "eval_batch": 64, "augment": 8, "rounds": 3},
}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu (small default sizes) or cuda (MatNet's published size)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="sizes (default: cuda or cpu by --device)")
    p.add_argument("--num-loc", type=int)
    p.add_argument("--embed-dim", type=int)
    p.add_argument("--layers", type=int)
    p.add_argument("--heads", type=int)
    p.add_argument("--ff-hidden", type=int, default=512,
                   help="feed-forward width of the ho-co rows (rl4co's MatNetPolicy is fixed at 512, so the "
                        "rl4co / ho-co ratios hold at 512 only)")
    p.add_argument("--batch", type=int, nargs="+", help="training batch sizes (instances per step)")
    p.add_argument("--steps", type=int, help="timed training steps")
    p.add_argument("--warmup", type=int, help="untimed training steps first (compile, allocator)")
    p.add_argument("--instances", type=int, help="inference instances")
    p.add_argument("--eval-batch", type=int, help="inference batch size")
    p.add_argument("--augment", type=int, help="MatNet augmentations for the second inference column")
    p.add_argument("--rounds", type=int, help="interleaved repeats; medians are reported")
    p.add_argument("--order", type=int, default=2, help="HOLinear order")
    p.add_argument("--ho-targets", nargs="+", help="HO placement: presets or patterns (default: configs/model/ho_matnet.yaml)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help="default: on with cuda")
    p.add_argument("--compile", nargs="*", metavar="MODE",
                   help="also time the fast rows with the encoder and step under torch.compile (CUDA), once per "
                        "mode (default, reduce-overhead, max-autotune); --compile alone means 'default'")
    p.add_argument("--no-inference", action="store_true")
    p.add_argument("--no-train", action="store_true")
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is steadier on a shared box)")
    p.add_argument("--heap", choices=["kept", "default"], default="kept",
                   help="kept: malloc keeps freed memory, as `ho-co train` and `ho-co eval` set it on CPU "
                        "(ho_co.routing.cpu.keep_freed_memory), for every row; default: glibc's own settings")
    p.add_argument("--curves", type=int, metavar="STEPS", help="instead: train rl4co's and the fast loop STEPS steps")
    p.add_argument("--curves-csv", help="write the per-step curves here")
    args = p.parse_args()
    args.compile = [] if args.compile is None else args.compile or ["default"]
    preset = PRESETS[args.preset or ("cuda" if args.device.startswith("cuda") else "cpu")]
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.bf16 is None:
        args.bf16 = args.device.startswith("cuda")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.ho_targets is None:
        args.ho_targets = ho_targets()
    return args


def ho_targets() -> list[str]:
    from omegaconf import OmegaConf

    from ho_co.routing.train import config_dir

    return list(OmegaConf.load(config_dir() / "model" / "ho_matnet.yaml").policy.ho.targets)


# the rl4co row trained under RL4COTrainer's default matmul_precision, as rl4co's users run it
RL4CO_AS_SHIPPED = "rl4co MatNet, trainer default"


def models(args) -> dict:
    from rl4co.models.zoo.matnet import MatNetPolicy

    from ho_co.routing.policies import build_policy

    size = {"embed_dim": args.embed_dim, "num_encoder_layers": args.layers, "num_heads": args.heads}
    ho = {"order": args.order, "targets": args.ho_targets}
    ff = args.ff_hidden  # rl4co's MatNetPolicy always has a 512-wide feed-forward
    rows = {
        "rl4co MatNet": lambda: MatNetPolicy(env_name="atsp", tanh_clipping=10.0, **size),
        "ho-co MatNet (fast)": lambda: build_policy("matnet", fast=True, feedforward_hidden=ff, **size),
        "ho-co HO-MatNet (fast)": lambda: build_policy("matnet", ho=ho, fast=True, feedforward_hidden=ff, **size),
    }
    if not args.device.startswith("cuda"):
        rows[RL4CO_AS_SHIPPED] = rows["rl4co MatNet"]
    for mode in args.compile:
        rows[f"ho-co MatNet (fast+{mode})"] = lambda m=mode: build_policy("matnet", fast=m, feedforward_hidden=ff, **size)
        rows[f"ho-co HO-MatNet (fast+{mode})"] = (
            lambda m=mode: build_policy("matnet", ho=ho, fast=m, feedforward_hidden=ff, **size))
    return rows


def step_timer(warmup: int, device: str, record: list | None = None):
    """Lightning callback: wall time of the steps after `warmup`; optionally each step's metrics."""
    from lightning.pytorch.callbacks import Callback

    class StepTimer(Callback):
        start = end = None

        def on_train_batch_start(self, trainer, *args):
            if trainer.global_step == warmup:
                synchronize(device)
                self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, *args):
            if record is not None:
                record.append({k: float(v.detach()) if torch.is_tensor(v) else float(v)
                               for k, v in outputs.items() if v is not None})

        def on_train_end(self, trainer, *args):
            synchronize(device)
            self.end = time.perf_counter()

    return StepTimer()


def fit(policy, env, batch: int, steps: int, args, callback, lr: float = 4e-4, as_shipped: bool = False) -> None:
    """POMO steps through rl4co's MatNet module and RL4COTrainer, as `ho-co train` runs them
    (as_shipped: with RL4COTrainer's own default matmul precision instead)."""
    from rl4co.models import MatNet
    from rl4co.utils.trainer import RL4COTrainer

    model = MatNet(env, policy=policy, batch_size=batch, train_data_size=batch * steps, val_data_size=batch,
                   optimizer_kwargs={"lr": lr, "weight_decay": 1e-6})
    trainer = RL4COTrainer(
        accelerator="gpu" if args.device.startswith("cuda") else "cpu", devices=1, max_steps=steps,
        precision="bf16-mixed" if args.bf16 else "32-true",
        **({} if as_shipped else {"matmul_precision": "high" if args.bf16 else "highest"}),
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, callbacks=[callback],
    )
    trainer.fit(model)
    torch.set_float32_matmul_precision("highest")  # RL4COTrainer sets it process-wide


def train_speed(make, env, batch: int, args, as_shipped: bool = False) -> dict:
    """instances/s, ms per step and peak CUDA memory (GiB) of POMO training at `batch`."""
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    timer = step_timer(args.warmup, args.device)
    fit(make(), env, batch, args.warmup + args.steps, args, timer, as_shipped=as_shipped)
    seconds = timer.end - timer.start
    peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else float("nan")
    return {"inst_s": batch * args.steps / seconds, "ms_step": 1000 * seconds / args.steps, "peak_gib": peak}


def inference_ms(make, env, td, args, num_augment: int) -> float:
    """ms per instance of multi-start greedy decoding (best of all starts and augmentations)."""
    from ho_co.routing.decode import augmented_copy, decode_batch

    def decode(batch):  # what `ho-co eval` runs on a batch: every augmentation copy in turn
        for k in range(num_augment):
            decode_batch(policy, env, augmented_copy(batch, env, k, num_augment))

    policy = make().to(args.device).eval()

    def decode_all():
        for i in range(0, args.instances, args.eval_batch):
            decode(td[i : i + args.eval_batch])

    with torch.autocast(device_type=args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.bf16):
        decode(td[: args.eval_batch])  # warm-up (and compile)
        return 1000 * seconds(decode_all, args.device) / args.instances


def breakdown(make, env, batch: int, args, reps: int = 5) -> dict:
    """Where a training step's time goes (no Lightning): encoder forward, whole forward, forward +
    backward; ms each, the median of `reps` interleaved rounds, under the run's autocast."""
    policy = make().to(args.device)
    td = env.reset(env.generator(batch).to(args.device))
    autocast = torch.autocast(device_type=args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.bf16)

    def forward():
        return policy(td.clone(), env, phase="train", decode_type="multistart_sampling")

    def forward_backward():
        out = forward()
        (out["reward"] * out["log_likelihood"]).mean().backward()

    def under_autocast(fn):
        def run():
            with autocast:
                fn()
        return timed(run, args.device)

    cases = {"encoder": lambda: policy.encoder(td), "forward": forward, "fwd+bwd": forward_backward}
    times = medians(interleaved({key: under_autocast(fn) for key, fn in cases.items()}, reps, warmup=1))
    if len(times) < len(cases):
        raise RuntimeError(f"only {sorted(times)} ran")
    return {key: 1000 * t for key, t in times.items()}


def step_gflop(make, env, batch: int, args) -> float:
    """GFLOP of one training step's forward and backward per instance, by FlopCounterMode, with
    the CPU attention kernels (which FlopCounterMode does not know) counted like the CUDA ones.
    Counted on rl4co's loop, so every row is measured against the same work."""
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    extra = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        extra[aten._scaled_dot_product_flash_attention_for_cpu] = (
            lambda q, k, v, *a, out_shape=None, **kw: fc.sdpa_flop_count(q, k, v))
        extra[aten._scaled_dot_product_flash_attention_for_cpu_backward] = (
            lambda g, q, k, v, *a, out_shape=None, **kw: fc.sdpa_backward_flop_count(g, q, k, v))
    policy = make().to(args.device)
    td = env.reset(env.generator(batch).to(args.device))
    counter = fc.FlopCounterMode(display=False, custom_mapping=extra)
    with counter:
        out = policy(td, env, phase="train", decode_type="multistart_sampling")
        (out["reward"] * out["log_likelihood"]).mean().backward()
    return counter.get_total_flops() / 1e9 / batch


def sgemm_gflops(size: int = 2048, reps: int = 3) -> float:
    """This machine's fp32 matmul rate now (GFLOP/s of a size x size matmul, best of reps)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = min(seconds(lambda: torch.mm(a, b)) for _ in range(reps))
    return 2 * size**3 / best / 1e9


def check_same_math(makers: dict, env, args) -> None:
    """On this device, in float32: each fast row against rl4co's loop on the same weights and seeds.

    rl4co's loop is `AutoregressivePolicy.forward` on the very same policy object, so HO-MatNet
    is compared with itself too. Printed, not asserted: the numbers are the evidence.
    """
    from rl4co.models.common.constructive.autoregressive import AutoregressivePolicy

    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # no TF32: compare the math, not the rounding
    td = env.reset(env.generator(16).to(args.device))
    for name, make in makers.items():
        if "fast" not in name:
            continue
        try:
            torch.manual_seed(0)
            policy = make().to(args.device)
            outs = []
            for forward in (AutoregressivePolicy.forward, type(policy).forward):
                torch.manual_seed(1)
                outs.append(forward(policy, td.clone(), env, phase="train", decode_type="multistart_sampling"))
            same = (outs[0]["actions"] == outs[1]["actions"]).all(-1).float().mean().item()
            dll = (outs[0]["log_likelihood"] - outs[1]["log_likelihood"]).abs().max().item()
            grads = []
            for out in outs:
                policy.zero_grad()
                (out["reward"] * out["log_likelihood"]).mean().backward(retain_graph=True)
                grads.append(torch.cat([p.grad.flatten() for p in policy.parameters() if p.grad is not None]))
            dgrad = ((grads[0] - grads[1]).abs().max() / grads[0].abs().max()).item()
            print(f"same math on {args.device}, {name}: {100 * same:.1f}% of sampled tours equal, max |d log-lik| "
                  f"{dll:.2e}, max |d grad| / max |grad| {dgrad:.2e}")
        except Exception as err:  # noqa: BLE001 - reported; the timing still runs
            print(f"same-math check FAILED for {name}: {type(err).__name__}: {err}")
    torch.set_float32_matmul_precision(precision)


def speed(args) -> None:
    from ho_co.routing.envs import make_env

    env = make_env("tsp", args.num_loc)
    torch.manual_seed(0)
    td = env.generator(args.instances).to(args.device)
    makers = models(args)
    if args.compile:  # compiled rows draw MatNet's random embeddings as eager ones do
        from torch._inductor import config as inductor_config

        inductor_config.fallback_random = True
    print(f"device {args.device} ({torch.cuda.get_device_name() if args.device.startswith('cuda') else 'cpu'}, "
          f"{torch.get_num_threads()} CPU threads), torch {torch.__version__}, bf16 {args.bf16}; TSP-{args.num_loc} "
          f"as matrices, embed {args.embed_dim}, {args.layers} layers, {args.heads} heads, ff {args.ff_hidden} (rl4co 512), "
          f"{args.num_loc} POMO starts; HO order {args.order} on {args.ho_targets}; {args.rounds} rounds")
    if args.compile and not args.device.startswith("cuda"):
        print("note: torch.compile applies on CUDA only; on this CPU the +MODE rows run the eager fast loop")
    check_same_math(makers, env, args)
    if not args.no_train:
        b = args.batch[0]
        for name, make in makers.items():
            if name == RL4CO_AS_SHIPPED:
                continue
            try:
                t = breakdown(make, env, b, args)
                print(f"breakdown at batch {b}, {name}: encoder {t['encoder']:.1f} ms, forward {t['forward']:.1f} ms "
                      f"(decoding {t['forward'] - t['encoder']:.1f}), forward+backward {t['fwd+bwd']:.1f} ms")
            except Exception as err:  # noqa: BLE001 - reported; the timing still runs
                print(f"breakdown FAILED for {name}: {type(err).__name__}: {err}")

    def measure(name, make) -> dict:
        """One round of one model: every figure of its row."""
        row = {}
        if not args.no_inference and name != RL4CO_AS_SHIPPED:
            row["infer"] = inference_ms(make, env, td, args, 1)
            row["infer_aug"] = inference_ms(make, env, td, args, args.augment)
        if not args.no_train:
            for b in args.batch:
                r = train_speed(make, env, b, args, as_shipped=name == RL4CO_AS_SHIPPED)
                row.update({f"inst_s{b}": r["inst_s"], f"ms{b}": r["ms_step"], f"peak{b}": r["peak_gib"]})
        return row

    cases = {name: lambda name=name, make=make: measure(name, make) for name, make in makers.items()}
    cpu_train = not args.no_train and not args.device.startswith("cuda")
    if cpu_train:  # the matmul rate in the same rounds, so the load it sees is the models' load
        cases["sgemm"] = lambda: {"gflops": sgemm_gflops()}
        gflop = step_gflop(makers["rl4co MatNet"], env, args.batch[0], args)
        print(f"model work: {gflop:.3f} GFLOP per instance per training step (FlopCounterMode on rl4co's loop, "
              "CPU attention included)")
    results = interleaved(cases, args.rounds)
    med = medians(results)
    nan = float("nan")

    head = f"{'model':32s}"
    if not args.no_inference:
        head += f"{'infer ms/inst':>15s}{f'aug x{args.augment} ms/inst':>18s}"
    if not args.no_train:
        head += "".join(f"{f'b{b} inst/s':>13s}{f'b{b} ms/step':>13s}{f'b{b} peak GiB':>14s}" for b in args.batch)
    if cpu_train:
        head += f"{'GFLOP/s':>9s}{'% sgemm':>9s}"
    print(head + "   (medians over rounds)")
    for name in makers:
        r = med.get(name, {})
        line = f"{name:32s}"
        if not args.no_inference:
            line += f"{r.get('infer', nan):15.3f}{r.get('infer_aug', nan):18.3f}"
        if not args.no_train:
            line += "".join(f"{r.get(f'inst_s{b}', nan):13.1f}{r.get(f'ms{b}', nan):13.1f}{r.get(f'peak{b}', nan):14.2f}"
                            for b in args.batch)
        if cpu_train:  # batch[0]'s rate, each round against that round's sgemm
            rates = [x[f"inst_s{args.batch[0]}"] * gflop for x in results.get(name, [])]
            pct = [100 * r / g["gflops"] for r, g in zip(rates, results["sgemm"])]
            line += f"{statistics.median(rates) if rates else nan:9.1f}{statistics.median(pct) if pct else nan:9.1f}"
        print(line)
    if cpu_train:
        print(f"sgemm (2048 x 2048 fp32 matmul) in the same rounds: {med['sgemm']['gflops']:.1f} GFLOP/s")

    def ratio(a: str, b: str, key: str) -> float:
        return median_ratio(results, a, b, key)

    anchor = "rl4co MatNet"
    print("ratios (this run, medians of the ratios within a round):")
    for suffix in [""] + [f"+{mode}" for mode in args.compile]:
        fast, ho, tag = f"ho-co MatNet (fast{suffix})", f"ho-co HO-MatNet (fast{suffix})", f"fast{suffix}"
        if not args.no_train:
            for b in args.batch:
                print(f"  [{tag}] batch {b}: ho-co MatNet / rl4co MatNet training throughput "
                      f"{ratio(fast, anchor, f'inst_s{b}'):.2f}x; HO-MatNet / ho-co MatNet step time "
                      f"{ratio(ho, fast, f'ms{b}'):.3f}x")
                if RL4CO_AS_SHIPPED in makers:
                    print(f"  [{tag}] batch {b}: ho-co MatNet / rl4co MatNet under its trainer's default precision "
                          f"{ratio(fast, RL4CO_AS_SHIPPED, f'inst_s{b}'):.2f}x")
        if not args.no_inference:
            print(f"  [{tag}] inference: rl4co / ho-co MatNet time {ratio(anchor, fast, 'infer'):.2f}x "
                  f"(aug x{args.augment}: {ratio(anchor, fast, 'infer_aug'):.2f}x); HO-MatNet / ho-co MatNet "
                  f"{ratio(ho, fast, 'infer'):.3f}x (aug: {ratio(ho, fast, 'infer_aug'):.3f}x)")


def curves(args) -> None:
    """rl4co's loop and the fast loop, the same weights and seed, trained side by side."""
    from rl4co.models.zoo.matnet import MatNetPolicy

    from ho_co.routing.envs import make_env
    from ho_co.routing.fast import make_fast

    torch.manual_seed(0)
    plain = MatNetPolicy(env_name="atsp", tanh_clipping=10.0, embed_dim=args.embed_dim,
                         num_encoder_layers=args.layers, num_heads=args.heads)
    runs = {"rl4co loop": plain, "fast loop": make_fast(copy.deepcopy(plain))}
    batch = args.batch[0]
    logs = {}
    for name, policy in runs.items():
        env = make_env("tsp", args.num_loc)
        logs[name] = []
        torch.manual_seed(1)  # the same training instances and draws for both
        timer = step_timer(0, args.device, logs[name])
        fit(policy, env, batch, args.curves, args, timer)
        logs[name + " s"] = timer.end - timer.start
    a, b = logs["rl4co loop"], logs["fast loop"]
    print(f"{args.curves} POMO steps of {batch} TSP-{args.num_loc} instances each, same init and seed, bf16 {args.bf16}")
    print(f"  wall time: rl4co loop {logs['rl4co loop s']:.1f} s, fast loop {logs['fast loop s']:.1f} s")
    window = max(1, len(a) // 10)
    print(f"  {'steps':>13s} {'rl4co reward':>13s} {'fast reward':>12s} {'rl4co loss':>11s} {'fast loss':>10s}")
    def mean(log: list, key: str, start: int) -> float:
        part = log[start : start + window]
        return sum(r[key] for r in part) / len(part)

    for start in range(0, len(a), window):
        print(f"  {start:>6d}-{start + window - 1:<6d} {mean(a, 'train/reward', start):13.4f} "
              f"{mean(b, 'train/reward', start):12.4f} {mean(a, 'loss', start):11.4f} {mean(b, 'loss', start):10.4f}")
    first_diff = next((i for i, (x, y) in enumerate(zip(a, b))
                       if abs(x["train/reward"] - y["train/reward"]) > 1e-4 * abs(x["train/reward"])), None)
    if first_diff is None:
        print(f"  per-step rewards equal (rel 1e-4) at all {len(a)} steps")
    else:
        print(f"  per-step rewards equal (rel 1e-4) up to step {first_diff}; from there float noise has changed a "
              "sampled tour, and the windows above should agree in trend, not digits")
    if args.curves_csv:
        with open(args.curves_csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "rl4co_reward", "fast_reward", "rl4co_loss", "fast_loss"])
            for i, (x, y) in enumerate(zip(a, b)):
                w.writerow([i, x["train/reward"], y["train/reward"], x["loss"], y["loss"]])
        print(f"  curves written to {args.curves_csv}")


def main() -> None:
    args = parse()
    if args.heap == "kept" and not args.device.startswith("cuda"):
        from ho_co.routing.cpu import keep_freed_memory

        print(f"heap: freed memory kept for reuse ({'applied' if keep_freed_memory() else 'not glibc: unchanged'})")
    if args.curves:
        curves(args)
    else:
        speed(args)


if __name__ == "__main__":
    main()
