"""MatNet's random one-hot column embeddings: the draw range, and draws seeded per instance.

rl4co's `MatNetInitEmbedding` gives each of the N column nodes a distinct one-hot position
among the first N embedding dimensions, so a model trained at N=20 never trains positions
20..49 that TSP-50 then uses. MatNet's own code draws the N positions among a fixed
`one_hot_seed_cnt` (>= N); `WideOneHotEmbedding(positions=P)` is that draw, and with P unset it
is rl4co's draw among the N node positions. In training, positions are drawn from torch's
global CPU generator as rl4co's are. A decode that must not depend on how instances were
batched hands each instance its own positions (`seeded_positions`, under `ONE_HOT_KEY`): drawn
from (seed, augmentation copy, instance index) alone, so any batch size, thread count or batch
order gives the same tours.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from rl4co.models.nn.env_embeddings.init import MatNetInitEmbedding
from tensordict import TensorDict

ONE_HOT_KEY = "one_hot_position"  # [B, N] long: each column node's one-hot position, given by the caller


class WideOneHotEmbedding(MatNetInitEmbedding):
    """Column one-hots at N distinct positions drawn among `positions` (N <= positions <= embed_dim;
    None: among the N node positions, rl4co's draw), or taken from ``td[ONE_HOT_KEY]``."""

    def __init__(self, embed_dim: int, positions: int | None = None) -> None:
        if positions is not None and not 1 <= positions <= embed_dim:
            raise ValueError(f"one_hot_positions={positions} must be between 1 and embed_dim={embed_dim}")
        super().__init__(embed_dim, mode="RandomOneHot")
        self.positions = positions

    def width(self, num_loc: int) -> int:
        """How many positions an instance of `num_loc` nodes draws among."""
        return num_loc if self.positions is None else self.positions

    def forward(self, td: TensorDict):
        dmat = td["cost_matrix"]
        b, r, c = dmat.shape
        width = self.width(c)
        if c > width:
            raise ValueError(f"N={c} nodes, but the one-hot embedding draws among one_hot_positions={self.positions}")
        position = td.get(ONE_HOT_KEY, None)
        if position is None:
            position = torch.rand(b, width).argsort(dim=1)[:, :c]  # rl4co's draw when width == N
        position = position.to(dmat.device)
        col_emb = torch.zeros(b, c, self.embed_dim, device=dmat.device)
        col_emb.scatter_(2, position.unsqueeze(-1), 1.0)
        row_emb = torch.zeros(b, r, self.embed_dim, device=dmat.device)
        return row_emb, col_emb, dmat


def seeded_positions(seed: int, copy: int, indices: Iterable[int], num_loc: int, width: int) -> torch.Tensor:
    """One-hot positions [len(indices), num_loc]: instance ``i`` of augmentation copy ``copy`` gets
    ``num_loc`` distinct positions among ``width`` from a generator seeded by (seed, copy, i) alone."""
    rows = [np.random.default_rng((seed, copy, int(i))).permutation(width)[:num_loc] for i in indices]
    return torch.as_tensor(np.stack(rows), dtype=torch.long)


def one_hot_embedding(policy) -> WideOneHotEmbedding | None:
    """The policy's one-hot column embedding, if it is MatNet's."""
    embedding = getattr(getattr(policy, "encoder", None), "init_embedding", None)
    return embedding if isinstance(embedding, WideOneHotEmbedding) else None
