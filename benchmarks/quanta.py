"""QuanTA vs LoRA of equal trainable size, and merged QuanTA vs the base layer, side by side.

    python benchmarks/quanta.py                        # 4096 x 4096, 8192 tokens, dims (16, 8, 8, 4)
    python benchmarks/quanta.py --features 1024 --tokens 2048 --dims 16,8,8 --device cuda
    python benchmarks/quanta.py --quick                # tiny shapes, to check the script runs

Training step = forward + backward of one layer, the input requiring grad as it does in the
middle of a network, after one optimizer step on the gates (T no longer equals S: the steady
state, where S is folded into the base weight and each step runs the base matmul and T). LoRA is
PEFT's (`pip install peft`), else a plain B @ A of the same rank; its rank r gives r * (in +
out) parameters, the nearest to QuanTA's gate count.
Merged inference = `merge_and_unload` output vs the base nn.Linear (both under no_grad):
the ratio should be 1. The cases take turns (benchmarks/timing.py), so the ratios hold on a
shared machine better than the absolute times. Where page faults are slow (VMs), glibc's default
of handing large tensors back to the OS shows in every step; to time the layers' own work, run
with the allocator keeping freed memory, as jemalloc or tcmalloc do:

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 python benchmarks/quanta.py
"""

from __future__ import annotations

import argparse
import copy
import math

import torch
from torch import nn

from ho_co.adapters import apply_quanta, merge_and_unload
from timing import interleaved, median_ratio, medians, timed


class OneLayer(nn.Module):
    """A model with one target module, so PEFT and our API select it the same way."""

    def __init__(self, features: int, device, dtype) -> None:
        super().__init__()
        self.proj = nn.Linear(features, features, device=device, dtype=dtype)

    def forward(self, x):
        return self.proj(x)


class PlainLoRA(nn.Module):
    """W0 x + B A x, the fallback when PEFT is not installed."""

    def __init__(self, base: nn.Linear, rank: int) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.A = nn.Parameter(torch.randn(rank, base.in_features, **factory) / math.sqrt(base.in_features))
        self.B = nn.Parameter(torch.zeros(base.out_features, rank, **factory))

    def forward(self, x):
        return self.base(x) + (x @ self.A.T) @ self.B.T


def lora_model(features: int, rank: int, device, dtype) -> tuple[nn.Module, str]:
    model = OneLayer(features, device, dtype)
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        return PlainLoRA(model.proj, rank), "plain B @ A"
    return get_peft_model(model, LoraConfig(r=rank, lora_alpha=rank, target_modules=["proj"])), "PEFT LoraConfig"


def train_step(model: nn.Module, x: torch.Tensor):
    return lambda: model(x).sum().backward()


def inference(model: nn.Module, x: torch.Tensor):
    def run():
        with torch.no_grad():
            model(x)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=int, default=4096)
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--dims", default=None, help="QuanTA factorization of --features (default: the official 4 axes)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="float32 (CPU default) or bfloat16 (CUDA default)")
    parser.add_argument("--rounds", type=int, default=5, help="timed runs per case (median reported)")
    parser.add_argument("--quick", action="store_true", help="256 x 256, 512 tokens, 2 rounds (smoke check)")
    args = parser.parse_args()
    if args.quick:
        args.features, args.tokens, args.dims, args.rounds = 256, 512, None, 2

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    dims = tuple(int(d) for d in args.dims.split(",")) if args.dims else None
    torch.manual_seed(0)

    base = OneLayer(args.features, device, dtype).requires_grad_(False)
    quanta = OneLayer(args.features, device, dtype)
    quanta.load_state_dict(base.state_dict())
    apply_quanta(quanta, "proj", dims=dims)
    dims = quanta.proj.dims
    quanta(torch.randn(4, args.features, device=device, dtype=dtype)).sum().backward()
    torch.optim.SGD([p for p in quanta.parameters() if p.requires_grad], lr=1e-3).step()
    n_quanta = sum(p.numel() for p in quanta.parameters() if p.requires_grad)
    rank = max(1, round(n_quanta / (2 * args.features)))
    lora, lora_kind = lora_model(args.features, rank, device, dtype)
    n_lora = sum(p.numel() for p in lora.parameters() if p.requires_grad)

    x = torch.randn(args.tokens, args.features, device=device, dtype=dtype, requires_grad=True)
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    print(f"{args.features}x{args.features}, {args.tokens} tokens, {dtype}, {device}{threads}")
    print(f"QuanTA dims {dims}: {n_quanta:,d} trainable; LoRA ({lora_kind}) r={rank}: {n_lora:,d} trainable")
    fold = quanta.proj.folded_weight()
    print(f"fold W0 - S: {fold.numel() * fold.element_size() / 2**20:.1f} MiB per layer "
          f"(the base weight's size; the gates take {n_quanta * 4 / 2**20:.1f} MiB)")

    merged = merge_and_unload(copy.deepcopy(quanta))
    cases = {
        "base": train_step(base, x),
        "lora": train_step(lora, x),
        "quanta": train_step(quanta, x),
        "base-infer": inference(base, x.detach()),
        "merged-infer": inference(merged, x.detach()),
    }
    print(f"{args.rounds} rounds of {len(cases)} cases, taking turns...", flush=True)
    t = interleaved({label: timed(run, device) for label, run in cases.items()}, args.rounds, warmup=1)
    print("median seconds:")
    for label, seconds in medians(t).items():
        print(f"  {label:<14} {seconds * 1e3:10.1f} ms")
    print("ratios (median over rounds of the ratio within a round):")
    print(f"  QuanTA / LoRA   training step  {median_ratio(t, 'quanta', 'lora'):6.2f}x")
    print(f"  QuanTA / base   training step  {median_ratio(t, 'quanta', 'base'):6.2f}x")
    print(f"  LoRA   / base   training step  {median_ratio(t, 'lora', 'base'):6.2f}x")
    print(f"  merged / base   inference      {median_ratio(t, 'merged-infer', 'base-infer'):6.2f}x")


if __name__ == "__main__":
    main()
