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
QuanTA's official 4-axis split of 4096, (16, 8, 8, 4), the six gates become three blocks,
on axes (1, 2, 3), (0, 2, 3) and (0, 1), of 256, 512 and 128 values: twice the gates' flops
in three large GEMMs instead of six small ones, three copies instead of about twelve, and half
the activations kept for backward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

BLOCK_LIMIT = 512  # widest block (input or output values): wider ones cost more flops than they save


@dataclass(frozen=True)
class CircuitBlock:
    """Consecutive gates run as one dense [K_in, K_out] matrix over `axes`."""

    gates: tuple[int, ...]  # indices into the circuit's gate list, in the order they act
    axes: tuple[int, ...]  # the axes the block acts on, ascending
    in_sizes: tuple[int, ...]  # sizes of `axes` before the block
    equations: tuple[str, ...]  # one einsum per gate on [rows, *axes], to build the matrix
    permute: tuple[int, ...] | None  # moves `axes` last in the activation's layout (None: already)
    shape: tuple[int, ...]  # the activation's axis sizes after the block, in its new layout


def circuit_blocks(pairs: Sequence[tuple[int, int]], dims: Sequence[int], out_dims: Sequence[int],
                   limit: int = BLOCK_LIMIT) -> tuple[list[CircuitBlock], tuple[int, ...] | None]:
    """The blocks of the circuit whose gate i acts on axes pairs[i], and the final permutation
    back to the canonical axis order (None when the layout already is)."""
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
        in_sizes = tuple(sizes[a] for a in axes)
        letters = {a: chr(ord("a") + i) for i, a in enumerate(axes)}
        equations = []
        for gate in group:
            m, n = pairs[gate]
            before = "".join(letters[a] for a in axes)
            after = before.replace(letters[m], "Y").replace(letters[n], "Z")
            equations.append(f"r{before},YZ{letters[m]}{letters[n]}->r{after}")
            sizes[m], sizes[n] = out_dims[m], out_dims[n]
        new_order = [a for a in order if a not in axes] + list(axes)
        permute = None if new_order == order else (0, *(1 + order.index(a) for a in new_order))
        order = new_order
        blocks.append(CircuitBlock(tuple(group), axes, in_sizes, tuple(equations), permute,
                                   tuple(sizes[a] for a in order)))
    final = None if order == sorted(order) else (0, *(1 + order.index(a) for a in range(len(dims))))
    return blocks, final


def _width(axes: set[int], dims: Sequence[int], out_dims: Sequence[int]) -> int:
    return max(math.prod(dims[a] for a in axes), math.prod(out_dims[a] for a in axes))


def block_matrix(block: CircuitBlock, gates: Sequence[Tensor]) -> Tensor:
    """The block's gates multiplied out: [K_in, K_out], so that rows @ matrix applies them."""
    k_in = math.prod(block.in_sizes)
    h = torch.eye(k_in, dtype=gates[block.gates[0]].dtype, device=gates[block.gates[0]].device)
    h = h.reshape(k_in, *block.in_sizes)
    for equation, gate in zip(block.equations, (gates[i] for i in block.gates)):
        h = torch.einsum(equation, h, gate)
    return h.reshape(k_in, -1)


def run_circuit(rows: Tensor, gates: Sequence[Tensor], dims: Sequence[int], blocks: Sequence[CircuitBlock],
                final: tuple[int, ...] | None) -> Tensor:
    """rows [R, prod(dims)] through the circuit -> [R, prod(out_dims)], in rows' dtype.

    Block matrices are formed in the gates' dtype and rounded once to the rows' dtype.
    """
    h = rows.reshape(-1, *dims)
    for block in blocks:
        matrix = block_matrix(block, gates).to(h.dtype)
        if block.permute is not None:
            h = h.permute(block.permute)
        h = (h.reshape(-1, matrix.shape[0]) @ matrix).view(-1, *block.shape)
    if final is not None:
        h = h.permute(final)
    return h.reshape(rows.shape[0], -1)
