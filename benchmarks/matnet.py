"""MatNet vs HO-MatNet, side by side in one run: inference and training throughput.

Three models of the same size on TSP as distance matrices: rl4co's untouched `MatNetPolicy`
(the anchor), ho-co's MatNet (`build_policy`, no HO), ho-co's HO-MatNet (the default
placement of configs/model/ho_matnet.yaml unless --ho-targets). Inference: multi-start greedy
over every start node, ms per instance. Training: rl4co's MatNet Lightning module under
RL4COTrainer, instances per second after warm-up steps. Ratios are within this run only.

    python benchmarks/matnet.py                       # GPU defaults: TSP-50, embed 256, 5 layers
    python benchmarks/matnet.py --cpu-small           # a minute on a CPU, so the script cannot rot
"""

from __future__ import annotations

import argparse
import time

import torch


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--num-loc", type=int, default=50)
    p.add_argument("--instances", type=int, default=1280, help="inference instances")
    p.add_argument("--eval-batch", type=int, default=256)
    p.add_argument("--embed-dim", type=int, default=256)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--ff", type=int, default=512, help="rl4co's MatNetPolicy is always 512")
    p.add_argument("--batch", type=int, nargs="+", default=[64, 128], help="training batch sizes")
    p.add_argument("--train-steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3, help="interleaved repeats; the best of each is kept")
    p.add_argument("--order", type=int, default=2)
    p.add_argument("--ho-targets", nargs="+", default=None, help="default: configs/model/ho_matnet.yaml")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help="default: on with cuda")
    p.add_argument("--cpu-small", action="store_true", help="TSP-20, embed 64, 2 layers, 64 instances")
    args = p.parse_args()
    if args.cpu_small:
        args.device, args.num_loc, args.instances, args.embed_dim = "cpu", 20, 64, 64
        args.layers, args.heads, args.ff, args.batch, args.train_steps, args.warmup = 2, 8, 512, [32], 4, 1
    if args.bf16 is None:
        args.bf16 = args.device.startswith("cuda")
    if args.ho_targets is None:
        from omegaconf import OmegaConf

        from ho_co.routing.train import config_dir

        args.ho_targets = list(OmegaConf.load(config_dir() / "model" / "ho_matnet.yaml").policy.ho.targets)
    return args


def models(args):
    from rl4co.models.zoo.matnet import MatNetPolicy

    from ho_co.routing.policies import build_policy

    size = dict(embed_dim=args.embed_dim, num_encoder_layers=args.layers, num_heads=args.heads)
    ho = {"order": args.order, "targets": args.ho_targets}
    return {
        "rl4co MatNet": lambda: MatNetPolicy(env_name="atsp", tanh_clipping=10.0, **size),
        "ho-co MatNet": lambda: build_policy("matnet", feedforward_hidden=args.ff, **size),
        "ho-co HO-MatNet": lambda: build_policy("matnet", ho=ho, feedforward_hidden=args.ff, **size),
    }


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def inference_ms(make, env, args) -> float:
    from ho_co.routing.evaluate import decode_batch

    policy = make().to(args.device).eval()
    td = env.generator(args.instances).to(args.device)
    with torch.autocast(device_type=args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.bf16):
        decode_batch(policy, env, td[: args.eval_batch])  # warm-up
        sync(args.device)
        start = time.perf_counter()
        for i in range(0, args.instances, args.eval_batch):
            decode_batch(policy, env, td[i : i + args.eval_batch])
        sync(args.device)
    return 1000 * (time.perf_counter() - start) / args.instances


class StepTimer:
    """Lightning callback: wall time of the training steps after the warm-up ones."""

    def __init__(self, warmup: int, device: str):
        from lightning.pytorch.callbacks import Callback

        timer = self

        class _CB(Callback):
            def on_train_batch_start(self, trainer, *a):
                if trainer.global_step == warmup:
                    sync(device)
                    timer.start = time.perf_counter()

            def on_train_end(self, trainer, *a):
                sync(device)
                timer.end = time.perf_counter()

        self.callback = _CB()
        self.start = self.end = None


def train_instances_per_s(make, env, batch, args) -> float:
    from rl4co.models import MatNet
    from rl4co.utils.trainer import RL4COTrainer

    steps = args.warmup + args.train_steps
    model = MatNet(env, policy=make(), batch_size=batch, train_data_size=batch * steps, val_data_size=batch,
                   optimizer_kwargs={"lr": 4e-4, "weight_decay": 1e-6})
    timer = StepTimer(args.warmup, args.device)
    trainer = RL4COTrainer(
        accelerator="gpu" if args.device.startswith("cuda") else "cpu", devices=1, max_steps=steps,
        precision="bf16-mixed" if args.bf16 else "32-true", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[timer.callback],
    )
    trainer.fit(model)
    return batch * args.train_steps / (timer.end - timer.start)


def main() -> None:
    args = parse()
    from ho_co.routing.envs import make_env

    torch.manual_seed(0)
    env = make_env("tsp", args.num_loc)
    print(f"{args.rounds} rounds, device {args.device}, TSP-{args.num_loc} as matrices, embed {args.embed_dim}, {args.layers} layers, "
          f"{args.heads} heads, ff {args.ff}, {args.num_loc} starts, bf16 {args.bf16}, "
          f"HO order {args.order} on {args.ho_targets}")
    # Rounds interleave the models, so drift in machine load hits all of them alike; the
    # best of the rounds is the least disturbed measurement of each.
    rows: dict[str, dict[str, float]] = {name: {} for name in models(args)}
    for _ in range(args.rounds):  # all inference first: no Lightning run in between
        for name, make in models(args).items():
            rows[name]["infer_ms"] = min(rows[name].get("infer_ms", float("inf")), inference_ms(make, env, args))
    for _ in range(args.rounds):
        for name, make in models(args).items():
            for b in args.batch:
                k = f"train_b{b}"
                rows[name][k] = max(rows[name].get(k, 0.0), train_instances_per_s(make, env, b, args))
    cols = list(next(iter(rows.values())))
    print(f"{'model':18s}" + "".join(f"{c:>16s}" for c in ["infer ms/inst"] + [f"train/s b{b}" for b in args.batch]))
    for name, r in rows.items():
        print(f"{name:18s}" + "".join(f"{r[c]:16.3f}" for c in cols))
    base, ho, anchor = rows["ho-co MatNet"], rows["ho-co HO-MatNet"], rows["rl4co MatNet"]
    print("ratios (same run):")
    print(f"  HO-MatNet / ho-co MatNet inference time: {ho['infer_ms'] / base['infer_ms']:.3f}x")
    print(f"  ho-co MatNet / rl4co MatNet inference time: {base['infer_ms'] / anchor['infer_ms']:.3f}x")
    for b in args.batch:
        k = f"train_b{b}"
        print(f"  batch {b}: HO-MatNet / ho-co MatNet step time: {base[k] / ho[k]:.3f}x; "
              f"ho-co MatNet / rl4co MatNet throughput: {base[k] / anchor[k]:.3f}x")


if __name__ == "__main__":
    main()
