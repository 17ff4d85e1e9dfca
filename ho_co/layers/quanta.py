"""QuanTALinear: quantum-informed tensor adaptation of a frozen linear layer (Chen et al.,
NeurIPS 2024, "QuanTA: Efficient High-Rank Fine-Tuning of LLMs with Quantum-Informed Tensor
Adaptation").

The hidden vector of size d = d_1 * ... * d_N is read as an N-axis tensor (the axes play the
part of qudits). A gate is a trainable tensor of shape (o_m, o_n, i_m, i_n) that acts on two
axes m < n only, all other axes being batch dims; the adapter applies the gates one after
another, like a quantum circuit. A frozen copy S of the initial gates makes the layer start
as the base layer W0:

    y = W0 x + b + T(x) - S(x)

A product of two-axis gates reaches full rank with far fewer parameters than a LoRA of the
same rank, which is the point of the method.

Gate layout (the official code's, quanta-fine-tuning/quanta, `tuners/quanta.py`): one gate
for every pair of axes, in the order `itertools.combinations` gives on the axes counted from
the last one: for N = 3, axes (1, 2), then (0, 2), then (0, 1); for N = 4, (2, 3), (1, 3),
(0, 3), (1, 2), (0, 2), (0, 1). We keep it because every pair of qudits then interacts
directly, and it is the layout the paper's results were obtained with.

Initialization (the official "sum_opposite_freeze_one"): each gate is drawn like the weight of
a linear map from its (i_m i_n) inputs to its (o_m o_n) outputs (kaiming-uniform, unit gain),
and S is a frozen copy of it, so T - S = 0 at init while T is already well conditioned (with a
zero T, each gate's gradient, a product of the other gates, would be zero).

Non-square layers (in != out): unlike the official code, which pads the input and crops the
output of one max(in, out)-sized factorization, we use two factorizations with the same N,
`dims` for the input and `out_dims` for the output; an axis keeps its input size until the
first gate that touches it, which maps it to its output size (every axis is touched by the
first N - 1 gates). Nothing is padded, so no parameter is wasted on zeros.

The trainable gates `quanta_T.<i>` are parameters; the frozen copies `quanta_S.<i>` are
buffers (saved with the state dict, never seen by an optimizer); the base layer is frozen.

Cost. As in the official code, S is folded into the base weight once, W0 - S (a dense
[out, in] matrix), so a training step runs the base matmul and the T circuit only (as a few
dense blocks of neighbouring gates, one GEMM each, in one autograd function with the base
matmul: `quanta_circuit`). The fold
is a separate tensor (one more matrix of the base's size and dtype per layer, not saved):
`base_layer.weight` keeps W0's bits, so merge/unmerge and save/load see the unfolded layer.
It is formed in float32 (the gates' dtype) and rounded once to the base dtype, and rebuilt
when S or W0 change. Until a gradient first reaches T (or anything writes to T or S), forward
adds T(x) - T(x) detached, an exactly zero delta in any dtype, so the adapted layer starts bit
for bit as the base layer. With dropout active (training, p > 0), S sees the dropped input
like T, so it cannot be folded and runs as a circuit.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import torch
from torch import Tensor, nn

from ho_co.layers.quanta_circuit import plan_circuit, run_circuit


HALF = (torch.float16, torch.bfloat16)


def factorize(n: int, n_axes: int) -> tuple[int, ...]:
    """The most balanced split of `n` into `n_axes` integer factors, largest first.

    Balanced = smallest largest factor, then smallest sum of squares (fewer gate parameters):
    4096 -> (16, 16, 16), 11008 -> (43, 16, 16). A prime n gives (n, 1, ..., 1).
    """
    if n < 1 or n_axes < 1:
        raise ValueError(f"cannot factorize {n} into {n_axes} axes: both must be >= 1")

    def splits(m: int, k: int, largest: int):
        if k == 1:
            if m <= largest:
                yield (m,)
            return
        for f in range(min(m, largest), 0, -1):
            if m % f == 0 and f**k >= m:  # f can still be the largest of k factors
                for rest in splits(m // f, k - 1, f):
                    yield (f, *rest)

    return min(splits(n, n_axes, n), key=lambda t: (t[0], sum(f * f for f in t)))


def official_dims(n: int) -> tuple[int, ...]:
    """The default split, 4 axes as in the official runs: 4096 -> (16, 8, 8, 4).

    The first axis as large as in a balanced 3-axis split, the rest split 3 ways:
    4096 -> 16 x (8, 8, 4), 11008 -> 43 x (8, 8, 4), 768 -> 12 x (4, 4, 4).
    """
    first = factorize(n, 3)[0]
    return (first, *factorize(n // first, 3))


def _check_dims(dims: Sequence[int], features: int, what: str) -> tuple[int, ...]:
    dims = tuple(dims)
    if len(dims) < 2:
        raise ValueError(f"QuanTA {what} dims {dims} need at least 2 axes (a gate acts on a pair)")
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ValueError(f"QuanTA {what} dims {dims}: every dim must be an integer >= 1, got {d!r}")
    if math.prod(dims) != features:
        raise ValueError(
            f"QuanTA {what} dims {dims} multiply to {math.prod(dims)}, "
            f"but the layer has {features} {what} features"
        )
    return dims


def quanta_dims(
    in_features: int,
    out_features: int,
    dims: Sequence[int] | None = None,
    out_dims: Sequence[int] | None = None,
    n_axes: int | None = None,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Resolve (input dims, output dims) for a layer, checking them; ValueError names the numbers.

    dims None: `official_dims(in_features)`, or `factorize(in_features, n_axes)` when n_axes is
    given. out_dims None: `dims` for a square layer, else the output size split the same way
    (`official_dims`, or `factorize` into len(dims) axes when dims or n_axes were given).
    """
    official = dims is None and n_axes is None
    if dims is None:
        dims = official_dims(in_features) if official else factorize(in_features, n_axes)
    dims = _check_dims(dims, in_features, "input")
    if out_dims is None:
        if out_features == in_features:
            out_dims = dims
        else:
            out_dims = official_dims(out_features) if official else factorize(out_features, len(dims))
    out_dims = _check_dims(out_dims, out_features, "output")
    if len(out_dims) != len(dims):
        raise ValueError(
            f"QuanTA input dims {dims} and output dims {out_dims} must have the same number of axes"
        )
    n_params = sum(math.prod(shape) for shape in gate_shapes(dims, out_dims))
    if n_params > in_features * out_features:  # e.g. a prime size p: (p, 1, 1) makes two p x p gates
        raise ValueError(
            f"QuanTA dims {dims} -> {out_dims} need {n_params} gate parameters, more than a dense "
            f"{out_features}x{in_features} update ({in_features * out_features}); "
            "pass smaller dims or leave the layer out"
        )
    return dims, out_dims


def gate_pairs(n_axes: int) -> list[tuple[int, int]]:
    """The official gate order: every pair (m, n), m < n, counted from the last axis."""
    return [(n_axes + m, n_axes + n) for n, m in itertools.combinations(range(-1, -n_axes - 1, -1), 2)]


def gate_shapes(dims: Sequence[int], out_dims: Sequence[int]) -> list[tuple[int, int, int, int]]:
    """Shape (o_m, o_n, i_m, i_n) of each gate; an axis takes its output size at its first gate."""
    current = list(dims)
    shapes = []
    for m, n in gate_pairs(len(dims)):
        shapes.append((out_dims[m], out_dims[n], current[m], current[n]))
        current[m], current[n] = out_dims[m], out_dims[n]
    return shapes


class QuanTALinear(nn.Module):
    """A frozen `nn.Linear` plus a QuanTA adapter: `base(x) + T(x) - S(x)`.

    base_linear: the layer to adapt; it is kept as `base_layer` (PEFT's name) and frozen.
    dims / out_dims: factorizations of in_features / out_features (see `quanta_dims`).
    n_axes: None for the official 4-axis split when `dims` is None (`official_dims`), or a
    number of axes for a balanced split (`factorize`).
    dropout: dropout on the adapter's input, as LoRA's `lora_dropout`.
    """

    def __init__(
        self,
        base_linear: nn.Linear,
        dims: Sequence[int] | None = None,
        out_dims: Sequence[int] | None = None,
        n_axes: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not isinstance(base_linear, nn.Linear):
            raise TypeError(f"QuanTALinear wraps an nn.Linear, got {type(base_linear).__name__}")
        self.in_features = base_linear.in_features
        self.out_features = base_linear.out_features
        self.dims, self.out_dims = quanta_dims(self.in_features, self.out_features, dims, out_dims, n_axes)
        self.base_layer = base_linear.requires_grad_(False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # Gates of a half-precision base are kept in float32, as PEFT's autocast_adapter_dtype
        # does: small optimizer updates would round away in bf16. Forward casts them to x's dtype.
        dtype = base_linear.weight.dtype
        factory = {"device": base_linear.weight.device, "dtype": torch.float32 if dtype in HALF else dtype}
        shapes = gate_shapes(self.dims, self.out_dims)
        self.quanta_T = nn.ParameterList(nn.Parameter(torch.empty(s, **factory)) for s in shapes)
        self.quanta_S = nn.Module()  # frozen copies: buffers "0", "1", ...
        for i, s in enumerate(shapes):
            self.quanta_S.register_buffer(str(i), torch.empty(s, **factory))
        self._plan = plan_circuit(gate_pairs(len(self.dims)), self.dims, self.out_dims)
        self.merged = False
        self._fold: tuple[tuple, Tensor] | None = None  # (what it was built from, W0 - S)
        self.reset_parameters()

    # nn.Linear's attributes, for model code that reads them (e.g. `proj.weight.dtype`).
    @property
    def weight(self) -> Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> Tensor | None:
        return self.base_layer.bias

    def frozen_gates(self) -> list[Tensor]:
        return list(self.quanta_S.buffers())

    def reset_parameters(self) -> None:
        """Official init: each gate as a linear map's weight (unit gain), S a frozen copy of T."""
        with torch.no_grad():
            for t, s in zip(self.quanta_T, self.frozen_gates()):
                o_m, o_n, i_m, i_n = t.shape
                nn.init.kaiming_uniform_(t.view(o_m * o_n, i_m * i_n), nonlinearity="linear")
                s.copy_(t)
        self._initial_versions = self._gate_versions()
        self._untrained = True

    def _starts_as_base(self) -> bool:
        """T is still its copy S: no gradient has reached T and nothing wrote to T or S since init.

        Both are tracked, because a fused optimizer (AdamW(fused=True)) updates T in place
        without touching its version counter.
        """
        return self._untrained and self._gate_versions() == self._initial_versions

    def _gradient_reached_T(self, grad: Tensor) -> None:
        self._untrained = False

    def _gate_versions(self) -> tuple[tuple[int, int], ...]:
        """Storage and version counter of T and S: a write (optimizer step, load, .to) changes them."""
        return tuple((g.data_ptr(), g._version) for g in (*self.quanta_T, *self.frozen_gates()))

    def _circuit(self, rows: Tensor, gates) -> Tensor:
        """The circuit of `gates` on rows [R, in] -> [R, out] (run as dense blocks: `quanta_circuit`)."""
        return run_circuit(rows, list(gates), self._plan)

    def delta_weight(self) -> Tensor:
        """The adapter as one [out, in] matrix, T - S (the circuits applied to the identity)."""
        eye = torch.eye(self.in_features, device=self.weight.device, dtype=self.quanta_T[0].dtype)
        return (self._circuit(eye, self.quanta_T) - self._circuit(eye, self.frozen_gates())).T

    @torch.no_grad()
    def folded_weight(self) -> Tensor:
        """W0 - S in the base dtype, formed in the gates' dtype; cached until S or W0 change."""
        weight, frozen = self.base_layer.weight, self.frozen_gates()
        key = (weight.data_ptr(), weight._version, weight.dtype, *((s.data_ptr(), s._version) for s in frozen))
        if self._fold is None or self._fold[0] != key:
            self._fold = None  # free the old one first
            eye = torch.eye(self.in_features, device=weight.device, dtype=frozen[0].dtype)
            fold = (weight.to(eye.dtype) - self._circuit(eye, frozen).T).to(weight.dtype)
            self._fold = (key, fold)
        return self._fold[1]

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"QuanTALinear expected input with last dim {self.in_features}, got {tuple(x.shape)}")
        if self.merged:
            return self.base_layer(x)
        rows = self.dropout(x).reshape(-1, self.in_features)
        if self._starts_as_base():
            # T(x) - S(x) is exactly zero, and T's gradient is that of T(x).
            t = self._circuit(rows.detach(), self.quanta_T)
            if t.requires_grad:
                t.register_hook(self._gradient_reached_T)
            y, delta = self.base_layer(x), t - t.detach()
        elif self.training and isinstance(self.dropout, nn.Dropout):
            y, delta = self.base_layer(x), self._circuit(rows, self.quanta_T) - self._circuit(rows, self.frozen_gates())
        else:  # one pass: rows @ (W0 - S).T + b + T(rows), in autocast's dtype where it is on
            autocast = torch.is_autocast_enabled(x.device.type)
            dtype = torch.get_autocast_dtype(x.device.type) if autocast else x.dtype
            fold, bias = self.folded_weight().to(dtype), None if self.bias is None else self.bias.to(dtype)
            with torch.autocast(x.device.type, enabled=False):
                y = run_circuit(rows.to(dtype), list(self.quanta_T), self._plan, fold, bias)
            return y.reshape(*x.shape[:-1], self.out_features)
        return y + delta.reshape(*x.shape[:-1], self.out_features).to(y.dtype)

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """Fold T - S into the base weight, in place; returns the base layer (a plain nn.Linear).

        Until `unmerge()`, forward is the base layer alone (zero overhead), and the gates get
        no gradient: unmerge before training further.
        """
        if not self.merged:
            self.base_layer.weight += self.delta_weight().to(self.base_layer.weight.dtype)
            self.merged = True
        return self.base_layer

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take T - S back out of the base weight (exact up to float rounding)."""
        if self.merged:
            self.base_layer.weight -= self.delta_weight().to(self.base_layer.weight.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        n_params = sum(t.numel() for t in self.quanta_T)
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, dims={self.dims}, "
            f"out_dims={self.out_dims}, gates={len(self.quanta_T)}, adapter_params={n_params}, merged={self.merged}"
        )
