"""A test-only Lightning callback: after each training epoch every DDP rank reports what it
trained on (instances, a checksum of its first batch, its seed), and rank 0 writes them to JSON,
so a test can see that both processes took part with their own data."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback


class RankFingerprint(Callback):
    def __init__(self, path: str):
        self.path = Path(path)
        self.instances, self.checksum = 0, 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.instances, self.checksum = 0, 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.instances == 0:
            self.checksum = float(next(iter(batch.values())).double().sum())
        self.instances += int(batch.batch_size[0])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        mine = torch.tensor([float(trainer.global_rank), float(self.instances), self.checksum,
                             float(torch.initial_seed() % 2**31)], dtype=torch.float64, device=pl_module.device)
        every = pl_module.all_gather(mine).reshape(-1, 4).tolist()
        if trainer.is_global_zero:
            rows = [{"rank": int(r), "instances_this_epoch": int(n), "data_checksum": c, "seed": int(s)}
                    for r, n, c, s in every]
            self.path.write_text(json.dumps({"world_size": trainer.world_size, "ranks": rows}))
