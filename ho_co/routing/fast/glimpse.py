"""The pointer's glimpse attention on CPU: `glimpse_kernel.cpp`'s ops as torch functions.

MatNet's pointer attends from each start's query to the N nodes' keys with narrow heads (50 keys,
16 wide at the TSP-50 size), a shape aten's CPU flash-attention kernels are not tiled for. The
kernel computes it per (instance, head) with the keys in cache: the plain form (`flash_forward`,
`flash_backward`, aten's values to float rounding, aten's kernels where it does not apply) and
the split form, for queries that are a start's part plus the current node's part
(`split_forward`, `SplitAttention`). The tour pass replays the rollout's forward and runs only
the backward (`ReplayedAttention`, `SplitAttention`).
"""

from __future__ import annotations

import functools
import os

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from ho_co.native import build_kernel

GLIMPSE_KERNEL = os.path.join(os.path.dirname(__file__), "glimpse_kernel.cpp")
GLIMPSE_SWITCH = "HO_CO_FUSED_GLIMPSE"  # "0": the pointer's attention runs aten's CPU flash kernels


@functools.cache
def glimpse_kernel():
    """The CPU glimpse-attention kernel (glimpse_kernel.cpp), or None when unavailable."""
    return build_kernel(GLIMPSE_KERNEL, "ho_co_glimpse", GLIMPSE_SWITCH, "the CPU glimpse-attention kernel",
                        "using aten's flash attention")


def glimpse_applies(q: Tensor, *others: Tensor) -> bool:
    """Whether the pointer's attention on `q` [B, H, S, d] (and `others`, its keys, values, mask and
    gradients) can go through the glimpse kernel: float32 CPU tensors with unit last strides, a
    head width it is built for, outside torch.compile."""
    tensors = (q, *others)
    return (q.size(-1) in (8, 16, 32, 64) and all(t.dtype == torch.float32 and t.device.type == "cpu"
                                                   and t.stride(-1) == 1 for t in tensors)
            and not torch.compiler.is_compiling() and glimpse_kernel() is not None)


def flash_forward(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor) -> tuple[Tensor, Tensor]:
    """SDPA's output and the log-sum-exp of each row: the glimpse kernel, else aten's flash kernel."""
    if glimpse_applies(q, k, v, attn_mask):
        return glimpse_kernel().glimpse_forward(q, k, v, attn_mask, q.size(-1) ** -0.5)
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, attn_mask=attn_mask)[:2]


def glimpse_attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor) -> Tensor:
    """`F.scaled_dot_product_attention` for a rollout step no gradient goes through: the glimpse
    kernel where it applies."""
    if glimpse_applies(q, k, v, attn_mask):
        return glimpse_kernel().glimpse_forward(q, k, v, attn_mask, q.size(-1) ** -0.5)[0]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)


def flash_backward(grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor, out: Tensor,
                   logsumexp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """dq, dk, dv of SDPA from its saved output and log-sum-exps (the same two kernels)."""
    if glimpse_applies(q, k, v, attn_mask, grad_out, out):
        return glimpse_kernel().glimpse_backward(grad_out, q, k, v, attn_mask, out, logsumexp, q.size(-1) ** -0.5)
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
        grad_out, q, k, v, out, logsumexp, 0.0, False, attn_mask=attn_mask)


class ReplayedAttention(torch.autograd.Function):
    """SDPA whose forward is given (the rollout computed it) and whose backward is the CPU
    kernel's (`flash_backward`)."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor, out: Tensor, logsumexp: Tensor) -> Tensor:
        ctx.save_for_backward(q, k, v, attn_mask, out, logsumexp)
        return out.detach()

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        q, k, v, attn_mask, out, logsumexp = ctx.saved_tensors
        return (*flash_backward(grad_out, q, k, v, attn_mask, out, logsumexp), None, None, None)


def split_forward(score_first: Tensor, score_cur: Tensor, nodes: Tensor, values: Tensor,
                  mask: Tensor) -> tuple[Tensor, Tensor]:
    """The attention [B, H, R, d] and log-sum-exps [B, H, R] of query rows whose scores are
    score_first[start] + score_cur[node] (score_first [B, H, S, N] and score_cur [B, H, N, N],
    scaled; nodes [B, R] with R / S consecutive rows per start; values [B, H, N, d]; additive mask
    [B, 1, R, N])."""
    return glimpse_kernel().split_glimpse_forward(score_first, score_cur, nodes.contiguous(), values, mask)


class SplitAttention(torch.autograd.Function):
    """The glimpse attention of MatNet's pointer with its query split, forward given (the rollout
    computed it), backward by the CPU kernel.

    A row's query is q_first[start] + q_cur[node], so its scores are score_first[start] +
    score_cur[node], both tables made once per batch (`ho_co.routing.fast.loop.step_tables`): no
    per-row query, no per-row q . k, and the backward returns the score gradients summed per start
    and per node (autograd takes them through the two table matmuls to the queries and keys)
    instead of a query gradient per row. The sums run in another order than
    `ReplayedAttention`'s: the same values to float rounding.
    """

    @staticmethod
    def forward(ctx, score_first: Tensor, score_cur: Tensor, nodes: Tensor, values: Tensor, mask: Tensor,
                out: Tensor, logsumexp: Tensor) -> Tensor:
        ctx.save_for_backward(score_first, score_cur, nodes, values, mask, out, logsumexp)
        return out.detach()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        score_first, score_cur, nodes, values, mask, out, logsumexp = ctx.saved_tensors
        if grad_out.stride(-1) != 1:
            grad_out = grad_out.contiguous()
        d_first, d_cur, d_values = glimpse_kernel().split_glimpse_backward(
            grad_out, score_first, score_cur, nodes, values, mask, out, logsumexp)
        return d_first, d_cur, None, d_values, None, None, None
