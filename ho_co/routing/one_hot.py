"""MatNet's random one-hot column embeddings, drawn over a range wider than the instance.

rl4co's `MatNetInitEmbedding` gives each of the N column nodes a distinct one-hot position
among the first N embedding dimensions, so a model trained at N=20 never trains positions
20..49 that TSP-50 then uses. MatNet's own code draws the N positions among a fixed
`one_hot_seed_cnt` (>= N); `WideOneHotEmbedding(positions=P)` is that draw. Positions are drawn
from torch's global CPU generator as rl4co's are, so seeding decodes the same way.
"""

from __future__ import annotations

import torch
from rl4co.models.nn.env_embeddings.init import MatNetInitEmbedding
from tensordict import TensorDict


class WideOneHotEmbedding(MatNetInitEmbedding):
    """Column one-hots at N distinct positions drawn among `positions` (N <= positions <= embed_dim)."""

    def __init__(self, embed_dim: int, positions: int) -> None:
        if not 1 <= positions <= embed_dim:
            raise ValueError(f"one_hot_positions={positions} must be between 1 and embed_dim={embed_dim}")
        super().__init__(embed_dim, mode="RandomOneHot")
        self.positions = positions

    def forward(self, td: TensorDict):
        dmat = td["cost_matrix"]
        b, r, c = dmat.shape
        if c > self.positions:
            raise ValueError(f"N={c} nodes, but the one-hot embedding draws among one_hot_positions={self.positions}")
        position = torch.rand(b, self.positions).argsort(dim=1)[:, :c].to(dmat.device)
        col_emb = torch.zeros(b, c, self.embed_dim, device=dmat.device)
        col_emb.scatter_(2, position.unsqueeze(-1), 1.0)
        row_emb = torch.zeros(b, r, self.embed_dim, device=dmat.device)
        return row_emb, col_emb, dmat
