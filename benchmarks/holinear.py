"""Forward+backward time of HOLinear vs nn.Linear, side by side in one run.

    python benchmarks/holinear.py                 # CPU: 65536 x 256 -> 256, K = 2, 4, 8
    python benchmarks/holinear.py --device cuda   # GPU (bf16 autocast by default there)
    python benchmarks/holinear.py --quick         # tiny shapes, to check the script runs
    python benchmarks/holinear.py --large         # also 8192 x 4096 -> 4096 (slow on a CPU)

Timings alternate between the layers each repetition (noisy machines) and report medians;
the ratio column is each layer / nn.Linear measured in the same run. The "eager" rows run the
element-wise product in torch ops (what HOLinear does off the CPU, under torch.compile, or
without a C++ compiler); the others use the fused CPU kernel when it is available.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from ho_co.layers import HOLinear
from ho_co.layers.high_order import fused_kernel, high_order_eager


class EagerHOLinear(HOLinear):
    """HOLinear with the element-wise product always in torch ops."""

    def forward(self, x):
        return high_order_eager(self.chunk_products(x), self.ho_scale, self.bias)

SHAPES = [(65536, 256, 256, (2, 4, 8))]  # (tokens, in, out, orders)
LARGE_SHAPES = [(8192, 4096, 4096, (4,))]
QUICK_SHAPES = [(512, 64, 64, (2, 4)), (128, 256, 256, (4,))]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_time(layer: nn.Module, x: torch.Tensor, autocast_dtype) -> float:
    device = x.device
    synchronize(device)
    start = time.perf_counter()
    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        y = layer(x)
    y.float().sum().backward()
    synchronize(device)
    return time.perf_counter() - start


def compare(tokens, d_in, d_out, order, device, autocast_dtype, repeats, compile_layers):
    torch.manual_seed(0)
    linear = nn.Linear(d_in, d_out, device=device)
    layers = {
        "nn.Linear": linear,
        "HOLinear": HOLinear(d_in, d_out, order=order, device=device),
        "HOLinear.from_linear": HOLinear.from_linear(linear, order),
        "HOLinear, eager": EagerHOLinear(d_in, d_out, order=order, device=device),
        "from_linear, eager": EagerHOLinear.from_linear(linear, order),
    }
    if compile_layers:
        layers = {name: torch.compile(layer) for name, layer in layers.items()}
    x = torch.randn(tokens, d_in, device=device, requires_grad=True)
    times = {name: [] for name in layers}
    for rep in range(repeats + 2):  # two warm-up rounds (allocator, compile)
        for name, layer in layers.items():
            x.grad = None
            layer.zero_grad(set_to_none=True)
            t = step_time(layer, x, autocast_dtype)
            if rep >= 2:
                times[name].append(t)
    base = statistics.median(times["nn.Linear"])
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append((f"{tokens}x{d_in}->{d_out}", order, name, med * 1e3, med / base))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default=None,
                        help="autocast dtype (default: bf16 on cuda, fp32 on cpu)")
    parser.add_argument("--compile", action="store_true", help="torch.compile every layer")
    parser.add_argument("--quick", action="store_true", help="tiny shapes (smoke check)")
    parser.add_argument("--large", action="store_true", help="also the 4096-feature shape")
    parser.add_argument("--orders", default=None, help="only these orders, e.g. 2,4")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    autocast_dtype = torch.bfloat16 if dtype == "bf16" else None
    print(f"device={device} ({torch.cuda.get_device_name() if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"dtype={dtype}, compile={args.compile}, torch={torch.__version__}, repeats={args.repeats}, "
          f"fused CPU kernel={'yes' if fused_kernel() is not None else 'no'}")
    print(f"{'shape':>18} {'K':>2} {'layer':>22} {'fwd+bwd ms':>11} {'x Linear':>9}")
    shapes = QUICK_SHAPES if args.quick else SHAPES + (LARGE_SHAPES if args.large else [])
    only = {int(k) for k in args.orders.split(",")} if args.orders else None
    for tokens, d_in, d_out, orders in shapes:
        for order in (k for k in orders if only is None or k in only):
            for shape, k, name, ms, ratio in compare(tokens, d_in, d_out, order, device, autocast_dtype,
                                                     args.repeats, args.compile):
                print(f"{shape:>18} {k:>2} {name:>22} {ms:>11.2f} {ratio:>9.2f}")


if __name__ == "__main__":
    main()
