"""QuanTA vs LoRA of equal trainable size, and merged QuanTA vs the base layer, side by side.

    python benchmarks/quanta.py                        # 4096 x 4096, 8192 tokens, dims (16, 16, 16)
    python benchmarks/quanta.py --features 1024 --tokens 2048 --dims 16,8,8 --device cuda

Training step = forward + backward of one layer, the input requiring grad as it does in the
middle of a network. LoRA is PEFT's (`pip install peft`), else a plain B @ A of the same
rank; its rank r gives r * (in + out) parameters, the nearest to QuanTA's gate count.
Merged inference = `merge_and_unload` output vs the base nn.Linear (both under no_grad):
the ratio should be 1. Each timing is torch.utils.benchmark's (it synchronizes CUDA).
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import nn
from torch.utils import benchmark

from ho_co.adapters import apply_quanta, merge_and_unload


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


def train_step(model: nn.Module, x: torch.Tensor) -> None:
    model(x).sum().backward()


def time_it(label: str, stmt: str, min_run_time: float, **env) -> float:
    timer = benchmark.Timer(stmt=stmt, globals={"train_step": train_step, "torch": torch, **env})
    seconds = timer.blocked_autorange(min_run_time=min_run_time).median
    print(f"  {label:<34} {seconds * 1e3:10.1f} ms", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=int, default=4096)
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--dims", default=None, help="QuanTA factorization of --features (default: 3 balanced axes)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="float32 (CPU default) or bfloat16 (CUDA default)")
    parser.add_argument("--min-run-time", type=float, default=2.0, help="seconds per measurement")
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    dims = tuple(int(d) for d in args.dims.split(",")) if args.dims else None
    torch.manual_seed(0)

    base = OneLayer(args.features, device, dtype).requires_grad_(False)
    quanta = OneLayer(args.features, device, dtype)
    quanta.load_state_dict(base.state_dict())
    apply_quanta(quanta, "proj", dims=dims)
    dims = quanta.proj.dims
    n_quanta = sum(p.numel() for p in quanta.parameters() if p.requires_grad)
    rank = max(1, round(n_quanta / (2 * args.features)))
    lora, lora_kind = lora_model(args.features, rank, device, dtype)
    n_lora = sum(p.numel() for p in lora.parameters() if p.requires_grad)

    x = torch.randn(args.tokens, args.features, device=device, dtype=dtype, requires_grad=True)
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    print(f"{args.features}x{args.features}, {args.tokens} tokens, {dtype}, {device}{threads}")
    print(f"QuanTA dims {dims}: {n_quanta:,d} trainable; LoRA ({lora_kind}) r={rank}: {n_lora:,d} trainable")

    print("training step (forward + backward):")
    t_base = time_it("base nn.Linear (frozen)", "train_step(m, x)", args.min_run_time, m=base, x=x)
    t_lora = time_it(f"LoRA r={rank}", "train_step(m, x)", args.min_run_time, m=lora, x=x)
    t_quanta = time_it(f"QuanTA {dims}", "train_step(m, x)", args.min_run_time, m=quanta, x=x)

    print("inference (no_grad):")
    merged = merge_and_unload(quanta)
    with torch.no_grad():
        xi = x.detach()
        t_infer_base = time_it("base nn.Linear", "m(x)", args.min_run_time, m=base, x=xi)
        t_merged = time_it("QuanTA merged", "m(x)", args.min_run_time, m=merged, x=xi)

    print("ratios:")
    print(f"  QuanTA / LoRA   training step  {t_quanta / t_lora:6.2f}x")
    print(f"  QuanTA / base   training step  {t_quanta / t_base:6.2f}x")
    print(f"  LoRA   / base   training step  {t_lora / t_base:6.2f}x")
    print(f"  merged / base   inference      {t_merged / t_infer_base:6.2f}x")


if __name__ == "__main__":
    main()
