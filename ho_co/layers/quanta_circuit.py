"""Running a QuanTA circuit fast: neighbouring gates merged into dense blocks, one GEMM each.

A gate on two axes of sizes (8, 4) is a GEMM with K = 32 over every other axis: far below
what a CPU or GPU matmul needs to run at speed, and each gate moves the activation around
once or twice (einsum permutes to put the gate's axes last). So consecutive gates whose axes
together span at most `BLOCK_LIMIT` values are multiplied out into one dense matrix over
those axes (built by running them on an identity: cheap, and differentiable, so the gates'
gradients flow through it), and each block runs as a single GEMM with its axes trailing. The
activation stays in whatever axis order the last block left it in; the next block's permute
is the only copy, and the canonical order is restored once at the end.

Gates on disjoint axes commute, so a gate may join a block ahead of gates it skips when it
shares no axis with any of them: the function is exactly the gate-by-gate circuit's. For
QuanTA's official 4-axis split of 4096, (16, 8, 8, 4), the six gates become four blocks,
on axes (1, 2, 3), (0, 3), (0, 2) and (0, 1), of 256, 64, 128 and 128 values. The limit trades
multiply-adds against GEMMs, copies and activations kept for backward: a wider block does more
work than the gates it merges, narrower ones run more small GEMMs and copies. `BLOCK_LIMIT` is
the width with the fastest training step (the plans compared in BENCHMARKS.md, "QuanTA vs LoRA").

The blocks run inside one autograd function (`CircuitFunction`) that owns its work buffers:
each GEMM writes into a buffer the step already holds, the last block is added into the base
layer's output in place (reading it through the final permutation), and backward accumulates
the input gradient into the base layer's with a GEMM, because on a CPU a fresh activation-sized
tensor can cost more in page faults than the copy or add that fills it: a step makes as few of
them as it can (how many, against a LoRA step: BENCHMARKS.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

BLOCK_LIMIT = 256  # widest block (input or output values): wider ones cost more flops than they save


@dataclass(frozen=True)
class CircuitBlock:
    """Consecutive gates run as one dense [K_in, K_out] matrix over `axes`."""

    gates: tuple[int, ...]  # indices into the circuit's gate list, in the order they act
    in_axes: tuple[int, ...]  # the axes the block acts on, in the order the activation holds them
    axes: tuple[int, ...]  # the same axes ascending: the order the block writes them in
    in_sizes: tuple[int, ...]  # sizes of `in_axes` before the block
    equations: tuple[str, ...]  # one einsum per gate on [rows, *in_axes], to build the matrix
    before: tuple[int, ...]  # the activation's axis sizes before the block, in its layout then
    permute: tuple[int, ...] | None  # moves `in_axes` last in the activation's layout (None: already)
    shape: tuple[int, ...]  # the activation's axis sizes after the block, in its new layout


@dataclass(frozen=True)
class Circuit:
    """A circuit's plan: its blocks in order, and the permutation back to the canonical order."""

    dims: tuple[int, ...]
    out_dims: tuple[int, ...]
    blocks: tuple[CircuitBlock, ...]
    final: tuple[int, ...] | None  # None when the last block leaves the canonical order

    @property
    def widest(self) -> int:
        """The most features any stage of the activation has (sizes the work buffers)."""
        return max(math.prod(self.dims), *(math.prod(b.shape) for b in self.blocks))


def plan_circuit(pairs: Sequence[tuple[int, int]], dims: Sequence[int], out_dims: Sequence[int],
                 limit: int = BLOCK_LIMIT) -> Circuit:
    """The blocks of the circuit whose gate i acts on axes pairs[i], from `dims` to `out_dims`."""
    groups, remaining = [], list(range(len(pairs)))
    while remaining:
        group, skipped, axes = [remaining[0]], [], set(pairs[remaining[0]])
        for gate in remaining[1:]:
            union = axes | set(pairs[gate])
            free = all(not set(pairs[gate]) & set(pairs[s]) for s in skipped)
            if free and _width(union, dims, out_dims) <= limit:
                group.append(gate)
                axes = union
            else:
                skipped.append(gate)
        groups.append((group, tuple(sorted(axes))))
        remaining = [g for g in remaining if g not in group]

    sizes, order = list(dims), list(range(len(dims)))  # axis sizes now; logical axis at each position
    blocks = []
    for group, axes in groups:
        # The block reads its axes in the order the activation holds them and writes them in
        # ascending order: each permute then moves whole runs of axes (a plain transpose when
        # there are two runs) instead of interleaving them.
        in_axes = tuple(a for a in order if a in axes)
        before, in_sizes = tuple(sizes[a] for a in order), tuple(sizes[a] for a in in_axes)
        letters = {a: chr(ord("a") + i) for i, a in enumerate(in_axes)}
        equations = []
        for gate in group:
            m, n = pairs[gate]
            old = "".join(letters[a] for a in in_axes)
            new = old.replace(letters[m], "Y").replace(letters[n], "Z")
            equations.append(f"r{old},YZ{letters[m]}{letters[n]}->r{new}")
            sizes[m], sizes[n] = out_dims[m], out_dims[n]
        others = [a for a in order if a not in axes]
        moved = others + list(in_axes)
        permute = None if moved == order else (0, *(1 + order.index(a) for a in moved))
        order = others + list(axes)
        blocks.append(CircuitBlock(tuple(group), in_axes, axes, in_sizes, tuple(equations), before, permute,
                                   tuple(sizes[a] for a in order)))
    final = None if order == sorted(order) else (0, *(1 + order.index(a) for a in range(len(dims))))
    return Circuit(tuple(dims), tuple(out_dims), tuple(blocks), final)


def _width(axes: set[int], dims: Sequence[int], out_dims: Sequence[int]) -> int:
    return max(math.prod(dims[a] for a in axes), math.prod(out_dims[a] for a in axes))


def _inverse(permutation: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted(range(len(permutation)), key=permutation.__getitem__))


def block_matrix(block: CircuitBlock, gates: Sequence[Tensor]) -> Tensor:
    """The block's gates multiplied out: [K_in, K_out], so that rows @ matrix applies them."""
    k_in = math.prod(block.in_sizes)
    h = torch.eye(k_in, dtype=gates[block.gates[0]].dtype, device=gates[block.gates[0]].device)
    h = h.reshape(k_in, *block.in_sizes)
    for equation, gate in zip(block.equations, (gates[i] for i in block.gates)):
        h = torch.einsum(equation, h, gate)
    return h.permute(0, *(1 + block.in_axes.index(a) for a in block.axes)).reshape(k_in, -1)


def run_circuit(rows: Tensor, gates: Sequence[Tensor], circuit: Circuit,
                weight: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
    """rows [R, prod(dims)] through the circuit -> [R, prod(out_dims)]; with `weight` (and
    `bias`), rows @ weight.T + bias is added in the same pass, as a linear layer beside it.

    Block matrices are formed in the gates' dtype and rounded once to the rows' dtype; weight
    and bias must already have the rows' dtype (the caller resolves autocast).
    """
    matrices = [block_matrix(block, gates).to(rows.dtype) for block in circuit.blocks]
    return CircuitFunction.apply(circuit, rows, weight, bias, *matrices)


class CircuitFunction(torch.autograd.Function):
    """The blocks' GEMMs with explicit work buffers (see the module docstring)."""

    @staticmethod
    def forward(ctx, circuit: Circuit, rows: Tensor, weight: Tensor | None, bias: Tensor | None,
                *matrices: Tensor) -> Tensor:
        n_rows = rows.shape[0]
        h, inputs, work = rows.reshape(n_rows, *circuit.dims), [], None
        for i, (block, matrix) in enumerate(zip(circuit.blocks, matrices)):
            if block.permute is not None:
                h = h.permute(block.permute).contiguous()  # kept for backward
            if work is not None and h.data_ptr() == work.data_ptr():
                work = None  # h still lives in the work buffer (no permute, or one of size-1 axes)
            inputs.append(h)
            if work is None:
                work = rows.new_empty(n_rows * circuit.widest)
            out = _view(work, n_rows * math.prod(block.shape) // matrix.shape[1], (matrix.shape[1],))
            h = torch.mm(h.reshape(-1, matrix.shape[0]), matrix, out=out).view(n_rows, *block.shape)
        canonical = h if circuit.final is None else h.permute(circuit.final)
        if weight is None:
            y = rows.new_empty(n_rows, math.prod(circuit.out_dims))
            y.view(n_rows, *circuit.out_dims).copy_(canonical)
        else:
            y = torch.mm(rows, weight.T) if bias is None else torch.addmm(bias, rows, weight.T)
            y.view(n_rows, *circuit.out_dims).add_(canonical)
        ctx.circuit = circuit
        ctx.save_for_backward(rows, weight, *matrices, *inputs)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        circuit, n_rows = ctx.circuit, grad.shape[0]
        rows, weight, *saved = ctx.saved_tensors
        matrices, inputs = saved[: len(circuit.blocks)], saved[len(circuit.blocks):]
        need_rows, need_weight, need_bias = ctx.needs_input_grad[1:4]
        grad_weight = grad.T.mm(rows) if need_weight else None
        grad_bias = grad.sum(0) if need_bias else None
        grad_rows = grad.new_empty(rows.shape) if need_rows else None
        # Two work buffers take turns; grad_rows can be one of them until the base layer's
        # gradient is written to it, if it is the one the circuit's last write does not land in.
        buffers: list[Tensor | None] = [None, None]
        if need_rows and rows.numel() >= n_rows * circuit.widest:
            writes = (circuit.final is not None) + sum(1 + (b.permute is not None) for b in circuit.blocks[1:])
            buffers[writes % 2] = grad_rows.view(-1)

        def buffer_beside(*live: Tensor) -> Tensor:
            """A work buffer that none of `live` occupies (made when first needed)."""
            for k, buffer in enumerate(buffers):
                if buffer is None:
                    buffers[k] = buffer = grad.new_empty(n_rows * circuit.widest)
                if all(buffer.data_ptr() != t.data_ptr() for t in live):
                    return buffer
            buffers.append(grad.new_empty(n_rows * circuit.widest))
            return buffers[-1]

        if circuit.final is None:
            g = grad.contiguous()
        else:  # the gradient in the layout the last block left
            g = _view(buffer_beside(grad), n_rows, circuit.blocks[-1].shape)
            g.copy_(grad.reshape(n_rows, *circuit.out_dims).permute(_inverse(circuit.final)))
        grad_matrices: list[Tensor | None] = [None] * len(matrices)
        for i in reversed(range(len(matrices))):
            block, matrix, h = circuit.blocks[i], matrices[i], inputs[i]
            g = g.reshape(-1, matrix.shape[1])
            if ctx.needs_input_grad[4 + i]:
                grad_matrices[i] = h.reshape(-1, matrix.shape[0]).T.mm(g)
            if i == 0:
                break
            g = _gemm_back(g, matrix, h, block, buffer_beside)

        if need_rows:
            first, matrix = circuit.blocks[0], matrices[0]
            part = None  # the circuit's share when the first block permutes
            if first.permute is not None:
                part = _gemm_back(g, matrix, inputs[0], first, buffer_beside, grad_rows)
            if weight is not None:
                torch.mm(grad, weight, out=grad_rows)
            elif part is not None:
                grad_rows.zero_()
            if part is None:  # h is rows: one GEMM onto what grad_rows holds
                grad_rows.view(-1, matrix.shape[0]).addmm_(g, matrix.T, beta=0 if weight is None else 1)
            else:
                grad_rows.add_(part.reshape(grad_rows.shape))
        return (None, grad_rows, grad_weight, grad_bias, *grad_matrices)


def _gemm_back(g: Tensor, matrix: Tensor, h: Tensor, block: CircuitBlock, buffer_beside, *keep: Tensor) -> Tensor:
    """The gradient before `block` from the one after it, in the layout before its permute,
    written to work buffers that neither g nor `keep` occupy."""
    out = _view(buffer_beside(g, *keep), h.numel() // matrix.shape[0], (matrix.shape[0],))
    g = torch.mm(g, matrix.T, out=out).view(h.shape)
    if block.permute is None:
        return g
    back = _view(buffer_beside(g, *keep), h.shape[0], block.before)
    return back.copy_(g.permute(_inverse(block.permute)))


def _view(buffer: Tensor, n_rows: int, shape: Sequence[int]) -> Tensor:
    """The front of a flat work buffer as a [n_rows, *shape] tensor."""
    return buffer[: n_rows * math.prod(shape)].view(n_rows, *shape)
