"""HOLinear: the quantum-inspired high-order linear map ("Reinvent the Operation, not the
Architecture").

Split the input x into K contiguous chunks x_1..x_K and the weight W (out x in) into the
matching column blocks W_1..W_K, z_i = W_i x_i. Each output m is the inner product of the
high-order weight kron_i [w_mi; 1] with the high-order input kron_i [x_i; 1], i.e.
prod_i (1 + z_mi); HOLinear returns that minus the constant 1, plus the bias:

    y = prod_i (1 + z_i) - 1 + b = W x + b + sum_{|S| >= 2} prod_{i in S} z_i

Cost: the K chunk products z_i together are one batched matmul with exactly nn.Linear's
FLOPs; the product over chunks is O(K * out) element-wise work per row. The 2^K subsets and
the kron embedding are never materialized.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ho_co.layers.high_order import high_order
from ho_co.replace import linear_from


def chunk_sizes(in_features: int, order: int) -> list[int]:
    """Chunk sizes of `torch.tensor_split(x, order, dim=-1)`: the first ones larger by one."""
    base, extra = divmod(in_features, order)
    return [base + 1] * extra + [base] * (order - extra)


class HOLinear(nn.Module):
    """Drop-in replacement for `nn.Linear` computing `prod_i (1 + W_i x_i) - 1 + b`.

    Parameters `weight` (out x in) and `bias` (out) have nn.Linear's names, shapes and
    initialization, so a Linear's state dict loads into a from-scratch HOLinear.

    `ho_scale` (shape [out], only on layers built by `from_linear`) is the learnable
    high-order strength alpha: y = W x + b + alpha * (orders >= 2). It starts at zero, so the
    converted layer computes exactly the Linear it came from, and training grows the higher
    orders. A from-scratch layer has no `ho_scale` (alpha is fixed at 1: the paper's operator).

    Numerics. The product is accumulated without the constant term,
    P_1 = z_1, P_k = P_{k-1} + z_k (1 + P_{k-1}) = prod_{i<=k} (1 + z_i) - 1,
    so the first-order part never suffers the cancellation of forming (1 + z) and then
    subtracting 1 (which in bf16 would erase every |z| < 2^-8). With nn.Linear's init and
    unit-variance inputs, Var(z_i) ~ 1/(3K), so E[prod (1 + z_i)^2] <= e^(1/3) for every K:
    the exact operator stays finite in float32 and bf16 up to K = 8 and beyond, and we add
    no stabilizer; the default is the paper's operator, nothing else.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        order: int = 2,
        bias: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise ValueError(f"HOLinear order must be an integer >= 1, got {order!r}")
        if order > in_features:
            raise ValueError(
                f"HOLinear order {order} exceeds in_features {in_features}: "
                "every chunk of the input needs at least one feature"
            )
        factory = {"device": device, "dtype": dtype}
        self.in_features = in_features
        self.out_features = out_features
        self.order = order
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.register_parameter("ho_scale", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Linear's initialization, so HOLinear(order=1) is nn.Linear in distribution."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_linear(cls, linear: nn.Linear, order: int) -> "HOLinear":
        """Compatible conversion (C2Q): same function as `linear` now, higher orders learnable.

        Copies weight and bias and adds `ho_scale` (zeros, shape [out_features]).
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear expects an nn.Linear, got {type(linear).__name__}")
        weight = linear.weight
        layer = cls(
            linear.in_features,
            linear.out_features,
            order=order,
            bias=linear.bias is not None,
            device=weight.device,
            dtype=weight.dtype,
        )
        with torch.no_grad():
            layer.weight.copy_(weight)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        layer.ho_scale = nn.Parameter(torch.zeros(linear.out_features, device=weight.device, dtype=weight.dtype))
        return layer

    def to_linear(self) -> nn.Linear:
        """The first-order part W x + b as an nn.Linear (copies of weight and bias).

        The inverse of `from_linear` only while the layer is still linear: a converted layer
        whose `ho_scale` is all zero, or a layer of order 1, computes exactly this nn.Linear.
        Any other layer loses its orders >= 2 (the first-order truncation of its function), so
        `ho_co.adapters.merge_and_unload` converts only converted layers with a zero `ho_scale`.
        """
        return linear_from(self.weight, self.bias)

    def chunk_products(self, x: Tensor) -> Tensor:
        """z_1..z_K stacked as [K, ..., out], from one strided bmm per group of equal-size chunks."""
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"HOLinear expected input with last dim {self.in_features}, got shape {tuple(x.shape)}"
            )
        sizes = chunk_sizes(self.in_features, self.order)
        rows = x.reshape(-1, self.in_features)
        groups = []
        start = 0
        # tensor_split gives at most two chunk sizes; each group is one bmm over strided views
        # (no copy of x or W), with exactly nn.Linear's FLOPs in total.
        for size in sorted(set(sizes), reverse=True):
            count = sizes.count(size)
            stop = start + size * count
            xg = rows[:, start:stop].unflatten(-1, (count, size)).transpose(0, 1)  # [k, T, c]
            wg = self.weight[:, start:stop].unflatten(-1, (count, size)).permute(1, 2, 0)  # [k, c, out]
            groups.append(torch.bmm(xg, wg))  # [k, T, out]
            start = stop
        z = groups[0] if len(groups) == 1 else torch.cat(groups)
        return z.reshape(z.shape[0], *x.shape[:-1], self.out_features)

    def forward(self, x: Tensor) -> Tensor:
        if self.order == 1 and self.ho_scale is None:
            return F.linear(x, self.weight, self.bias)
        return high_order(self.chunk_products(x), self.ho_scale, self.bias, private_z=True)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"order={self.order}, bias={self.bias is not None}, "
            f"ho_scale={'learnable' if self.ho_scale is not None else 'none (exact operator)'}"
        )
