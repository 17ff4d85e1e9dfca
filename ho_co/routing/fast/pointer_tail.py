"""The pointer's tail on CPU: tanh clipping, mask, temperature and log-softmax in one pass per row.

rl4co's `process_logits` runs these as five or six eager passes over [B, Q, N] tensors, which
at the tour pass's [32, 2400, 50] cost more than the matmul that made the logits.
`pointer_kernel.cpp` does them in one pass per row for a rollout step (`pointer_tail`) and, for
the tour pass, returns only the chosen node's log-probability, with its backward (`chosen_logp`).
Where the kernel does not apply (autograd through a rollout step, GPU, other dtypes) the eager
ops run instead: the same values to float rounding.
"""

from __future__ import annotations

import functools
import os

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from ho_co.native import build_kernel


def masked_scores(logits: Tensor, blocked: Tensor, tanh_clipping: float, temperature: float) -> Tensor:
    """rl4co's `process_logits` before its log-softmax: clipping, mask, temperature. Adding 0 /
    -inf is its `where(mask, logits, -inf)` for the finite logits."""
    if tanh_clipping > 0:
        logits = torch.tanh(logits) * tanh_clipping
    logits = logits + blocked
    if temperature != 1.0:  # x / 1 is x: one kernel less per step
        logits = logits / temperature
    return logits


def pointer_tail(logits: Tensor, blocked: Tensor, tanh_clipping: float, temperature: float) -> Tensor:
    """Log-probabilities from the pointer's logits: `masked_scores` and a log-softmax."""
    if not (torch.is_grad_enabled() and logits.requires_grad) and pointer_tail_applies(logits, blocked):
        return pointer_kernel().pointer_log_softmax(logits, blocked, tanh_clipping, temperature)
    return F.log_softmax(masked_scores(logits, blocked, tanh_clipping, temperature), dim=-1)


POINTER_KERNEL = os.path.join(os.path.dirname(__file__), "pointer_kernel.cpp")
POINTER_SWITCH = "HO_CO_FUSED_POINTER"  # "0": the pointer's tail runs as eager torch ops


@functools.cache
def pointer_kernel():
    """The CPU kernel of the pointer's tail (pointer_kernel.cpp), or None when unavailable."""
    return build_kernel(POINTER_KERNEL, "ho_co_pointer", POINTER_SWITCH, "the CPU pointer-tail kernel",
                        "using eager torch ops")


def pointer_tail_applies(logits: Tensor, blocked: Tensor) -> bool:
    """Whether logits and mask can go through the pointer-tail kernel: contiguous float32 CPU
    tensors of one shape, outside torch.compile."""
    return (logits.device.type == "cpu" and logits.dtype == torch.float32 and blocked.dtype == torch.float32
            and logits.shape == blocked.shape and logits.is_contiguous() and blocked.is_contiguous()
            and not torch.compiler.is_compiling() and pointer_kernel() is not None)


class ChosenLogp(torch.autograd.Function):
    """log_softmax(masked_scores(logits))[chosen] per row, forward and backward by the CPU kernel:
    one pass over [B, Q, N] each way instead of eager's five or six."""

    @staticmethod
    def forward(ctx, logits: Tensor, blocked: Tensor, chosen: Tensor, tanh_clipping: float, temperature: float):
        logp, lse, tanh_or_logits = pointer_kernel().pointer_chosen_forward(
            logits, blocked, chosen, tanh_clipping, temperature)
        ctx.save_for_backward(tanh_or_logits, blocked, chosen, lse)
        ctx.settings = (tanh_clipping, temperature)
        return logp

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        tanh_or_logits, blocked, chosen, lse = ctx.saved_tensors
        d_logits = pointer_kernel().pointer_chosen_backward(grad, tanh_or_logits, blocked, chosen, lse, *ctx.settings)
        return d_logits, None, None, None, None


def chosen_logp(logits: Tensor, blocked: Tensor, chosen: Tensor, tanh_clipping: float, temperature: float) -> Tensor:
    """Log-probabilities [B, Q] of the chosen nodes [B, Q] under logits and masks [B, Q, N]."""
    if pointer_tail_applies(logits, blocked):
        return ChosenLogp.apply(logits, blocked, chosen.contiguous(), tanh_clipping, temperature)
    logp = F.log_softmax(masked_scores(logits, blocked, tanh_clipping, temperature), dim=-1)
    return logp.gather(-1, chosen.unsqueeze(-1)).squeeze(-1)
