"""The rollout's sampling draw on CPU: `sampler_kernel.cpp`'s op beside the uniforms it takes.

`torch.multinomial(p, 1)` turns one double uniform per element into Exp(1) noise through
`exponential_`, a serial scalar loop that at POMO's [S * B, N] rows costs more than the pointer
step that made p. The kernel takes the same uniforms, drawn by torch (the same generator use),
and returns the same indices in one pass that skips visited nodes: seeded runs sample the same
tours with or without it.
"""

from __future__ import annotations

import functools
import os

import torch
from torch import Tensor

from ho_co.native import build_kernel

SAMPLER_KERNEL = os.path.join(os.path.dirname(__file__), "sampler_kernel.cpp")
SAMPLER_SWITCH = "HO_CO_FUSED_SAMPLING"  # "0": the rollout samples with torch.multinomial


@functools.cache
def sampler_kernel():
    """The CPU sampler (sampler_kernel.cpp), or None when unavailable."""
    return build_kernel(SAMPLER_KERNEL, "ho_co_decode", SAMPLER_SWITCH, "the CPU sampling kernel",
                        "sampling with torch.multinomial")


def fused_sampling_applies(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the rollout's multinomial draws can go through the CPU sampler (float32 log-probs)."""
    return (device.type == "cpu" and dtype == torch.float32 and not torch.compiler.is_compiling()
            and sampler_kernel() is not None)


def uniforms(rows: int, cols: int, device: torch.device) -> Tensor:
    """The double uniforms torch.multinomial(p [rows, cols], 1) turns into its Exp(1) noise on
    CPU (exponential_ draws one double uniform per element, in order): the same generator use."""
    return torch.empty(rows, cols, dtype=torch.float64, device=device).uniform_()
