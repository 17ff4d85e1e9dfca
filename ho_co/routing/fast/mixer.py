"""MatNet's mixed-score attention (rl4co's `MixedScoresSDPA`) with a fused CPU kernel.

rl4co's mixer runs a 2 -> hidden -> 1 MLP per head on every (row, column) score: eager torch
builds [B, M, H, N, hidden] tensors for it (the concatenated inputs, the first layer, its bias
and ReLU, their gradients) and broadcast-reduces the parameter gradients out of them. At MatNet's
sizes those are the largest tensors of a training step and most of the encoder's time. The kernel
(`mixer_kernel.cpp`, compiled with the system's C++ compiler at first use for this CPU and
cached by torch.utils.cpp_extension) computes the mixed scores and their softmax row by row,
keeps only the softmax output, and recomputes the hidden layer in backward.

`FusedMixedScoresSDPA` is rl4co's class with the same parameters (so state dicts and
checkpoints are unchanged) and a forward that takes the kernel for float32 CPU tensors without
an attention mask; anything else (CUDA, bf16, a mask, no compiler, `HO_CO_FUSED_MIXER=0`) runs
rl4co's own forward. The kernel sums in another order than torch's batched matmuls (the hidden
units one by one, the parameter gradients per block of rows in double), so results match
rl4co's to float rounding, not bit for bit.
"""

from __future__ import annotations

import functools
import os

import torch
from rl4co.models.zoo.matnet.encoder import MixedScoresSDPA
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ho_co.native import build_kernel

KERNEL_SOURCE = os.path.join(os.path.dirname(__file__), "mixer_kernel.cpp")
ENV_SWITCH = "HO_CO_FUSED_MIXER"  # "0": always rl4co's eager mixer


@functools.cache
def kernel():
    """The compiled kernel's ops namespace, or None (with a warning) when it cannot be built."""
    return build_kernel(KERNEL_SOURCE, "ho_co_mixer", ENV_SWITCH, "the fused MatNet mixer kernel",
                        "using rl4co's eager mixer")


class _MixedSoftmax(torch.autograd.Function):
    """softmax(mixer(raw / sqrt_d, dmat)) with the kernel's forward and backward."""

    @staticmethod
    def forward(ctx, raw: Tensor, dmat: Tensor, sqrt_d: float, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor):
        attn = kernel().mixed_softmax_forward(raw, dmat, sqrt_d, w1, b1, w2, b2)
        ctx.save_for_backward(attn, raw, dmat, w1, b1, w2, b2)
        ctx.sqrt_d = sqrt_d
        return attn

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        attn, raw, dmat, w1, b1, w2, b2 = ctx.saved_tensors
        g_raw, g_w1, g_b1, g_w2, g_b2 = kernel().mixed_softmax_backward(
            grad.contiguous(), attn, raw, dmat, ctx.sqrt_d, w1, b1, w2, b2)
        need = ctx.needs_input_grad
        return (g_raw if need[0] else None, None, None, g_w1 if need[3] else None, g_b1 if need[4] else None,
                g_w2 if need[5] else None, g_b2 if need[6] else None)


def mixed_softmax(raw: Tensor, dmat: Tensor, sqrt_d: float, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
    """Attention weights [B, H, M, N] from raw dot products [B, H, M, N] and costs [B, M, N]."""
    dmat, params = dmat.contiguous(), [p.contiguous() for p in (w1, b1, w2, b2)]
    if torch.is_grad_enabled() and (raw.requires_grad or any(p.requires_grad for p in params)):
        return _MixedSoftmax.apply(raw.contiguous(), dmat, sqrt_d, *params)
    return kernel().mixed_softmax_forward(raw.contiguous(), dmat, sqrt_d, *params)


def can_fuse(q: Tensor, dmat: Tensor, attn_mask, dropout_p: float, num_scores: int) -> bool:
    return (
        attn_mask is None
        and dropout_p == 0.0
        and num_scores == 1
        and q.device.type == "cpu"
        and q.dtype == torch.float32
        and dmat.dtype == torch.float32
        and not dmat.requires_grad
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
        and not torch._C._functorch.is_functorch_wrapped_tensor(q)
        and kernel() is not None
    )


class FusedMixedScoresSDPA(MixedScoresSDPA):
    """rl4co's mixed-score attention, the mixer and softmax in the fused kernel where it applies."""

    def forward(self, q, k, v, attn_mask=None, dmat=None, dropout_p=0.0):
        if dmat is None or not can_fuse(q, dmat, attn_mask, dropout_p, self.num_scores):
            return super().forward(q, k, v, attn_mask=attn_mask, dmat=dmat, dropout_p=dropout_p)
        b, m, n = dmat.shape[:3]
        raw = torch.matmul(q, k.transpose(-2, -1))
        attn = mixed_softmax(raw, dmat.reshape(b, m, n), k.size(-1) ** 0.5, self.mix_W1, self.mix_b1, self.mix_W2,
                             self.mix_b2)
        return torch.matmul(attn, v)


def fuse_mixers(module: nn.Module) -> int:
    """Turn every plain `MixedScoresSDPA` inside `module` into `FusedMixedScoresSDPA` (in place:
    same parameters and names); returns how many. Other mixers (HO-MatNet's HO mixer) stay."""
    count = 0
    for m in module.modules():
        if type(m) is MixedScoresSDPA:
            m.__class__ = FusedMixedScoresSDPA
            count += 1
    return count
