"""The element-wise half of HOLinear: y = prod_k (1 + z_k) - 1, optionally scaled and biased.

    y = P + b                     P = prod_k (1 + z_k) - 1   (the paper's operator)
    y = F + s * (P - F) + b       F = sum_k z_k              (a `from_linear` layer, s = ho_scale)

This work is memory-bound: the matmul before it has nn.Linear's FLOPs, so what HOLinear costs
on top of nn.Linear is how often it reads and writes the K planes z_k. Two implementations:

- fused: a small C++ kernel (`high_order_kernel.cpp`, built for this CPU at first use by
  `ho_co.native`) reads the K planes once forward and once backward, and folds the scale and
  the bias into the same sweep. Used for CPU tensors.
- eager: torch ops, with a memory-lean autograd.Function that keeps only z. Used on other
  devices, under torch.compile / torch.func transforms, and whenever the kernel cannot be
  built (a warning says why, once).

Both accumulate P as P <- P + z_k (1 + P), never forming 1 + z and subtracting 1, which in
bf16 would erase every |z| < 2^-8.
"""

from __future__ import annotations

import functools
import os

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ho_co.native import build_kernel

KERNEL_SOURCE = os.path.join(os.path.dirname(__file__), "high_order_kernel.cpp")
# Set to "0" to always take the eager path (e.g. to compare both).
ENV_SWITCH = "HO_CO_FUSED_KERNEL"


@functools.cache
def fused_kernel():
    """The compiled kernel's ops namespace, or None (with a warning) when it cannot be built."""
    return build_kernel(KERNEL_SOURCE, "ho_co_kernels", ENV_SWITCH, "HOLinear's fused CPU kernel",
                        "using the eager torch implementation")


class _Fused(torch.autograd.Function):
    """The fused kernel forward and backward; scale and bias gradients come out of the same sweep."""

    @staticmethod
    def forward(ctx, z: Tensor, scale: Tensor | None, bias: Tensor | None, private_z: bool) -> Tensor:
        ctx.save_for_backward(z, scale)
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.private_z = private_z
        return fused_kernel().high_order_forward(z, scale, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        z, scale = ctx.saved_tensors
        need_z, need_scale, need_bias, _ = ctx.needs_input_grad
        # z's planes are dead after this backward unless the graph is kept: reuse their memory.
        overwrite = ctx.private_z and not torch._C._autograd._get_current_graph_task_keep_graph()
        grad_z, grad_scale, grad_bias = fused_kernel().high_order_backward(
            grad, z, scale, need_scale, need_bias, overwrite
        )
        return (
            grad_z if need_z else None,
            grad_scale.to(scale.dtype) if need_scale else None,
            grad_bias.to(ctx.bias_dtype) if need_bias else None,
            None,
        )


class _ProductMinusOne(torch.autograd.Function):
    """prod_k (1 + z_k) - 1 over the leading dim of z, with a memory-lean backward.

    Autograd through the K-step recurrence would keep K intermediate planes on top of z;
    this keeps z only and rebuilds the partial products in backward:
    d/dz_k = prod_{i != k} (1 + z_i) = prefix_k * suffix_k (no division, so z_k = -1 is fine).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(z: Tensor) -> Tensor:
        return _accumulate(z[0], z[1:])

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (z,) = ctx.saved_tensors
        # suffix_k = grad * prod_{i > k} (1 + z_i), built from the last k down.
        suffix = [grad]
        for k in range(z.shape[0] - 1, 0, -1):
            suffix.append(torch.addcmul(suffix[-1], suffix[-1], z[k]))
        suffix.reverse()
        # grad_k = suffix_k * (1 + prefix_k), prefix_k = prod_{i < k} (1 + z_i) - 1.
        grads = [suffix[0]]
        prefix = z[0]
        for k in range(1, z.shape[0]):
            grads.append(torch.addcmul(suffix[k], suffix[k], prefix))
            if k + 1 < z.shape[0]:
                prefix = _accumulate(prefix, z[k : k + 1])
        return torch.stack(grads)


def _accumulate(p: Tensor, zs: Tensor) -> Tensor:
    """P <- P + z (1 + P) for each z in zs: prod (1 + z) - 1 without (1 + z) - 1 cancellation."""
    for z_k in zs:
        p = torch.addcmul(p + z_k, p, z_k)
    return p


def product_minus_one(z: Tensor) -> Tensor:
    """prod_k (1 + z[k]) - 1, reduced over dim 0, computed without cancellation (eager torch)."""
    if z.shape[0] == 1:
        return z[0]
    return _ProductMinusOne.apply(z)


def high_order_eager(z: Tensor, scale: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
    """The operator in torch ops (any device, traceable by torch.compile and torch.func)."""
    y = product_minus_one(z)
    if scale is not None:
        first_order = z.sum(0)
        y = first_order + scale.to(y.dtype) * (y - first_order)
    if bias is not None:
        y = y + bias.to(y.dtype)
    return y


def _can_fuse(z: Tensor) -> bool:
    return (
        z.device.type == "cpu"
        and not torch.compiler.is_compiling()
        and not torch._C._functorch.is_functorch_wrapped_tensor(z)
        and fused_kernel() is not None
    )


def high_order(
    z: Tensor, scale: Tensor | None = None, bias: Tensor | None = None, *, private_z: bool = False
) -> Tensor:
    """The operator on planes z [K, ..., out]; scale and bias are [out] (or None).

    private_z: nothing but this call reads z after backward, so the fused backward may write
    the gradient into z's memory (HOLinear's planes are its own).
    """
    if not _can_fuse(z):
        return high_order_eager(z, scale, bias)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (z, scale, bias)):
        return _Fused.apply(z, scale, bias, private_z)
    return fused_kernel().high_order_forward(z, scale, bias)  # inference: no autograd node
