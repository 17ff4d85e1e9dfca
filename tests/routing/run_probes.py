"""Callbacks that tests attach to a training run through Hydra overrides."""

import torch
from lightning.pytorch.callbacks import Callback

SEEN: dict[str, list[torch.Tensor]] = {}


class InterruptAt(Callback):
    """Interrupt training at a given step, as Ctrl-C would."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


class RecordBatches(Callback):
    """Keep every training batch's coordinates under SEEN[key]."""

    def __init__(self, key: str):
        self.key = key
        SEEN[key] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        SEEN[self.key].append(batch["locs"].clone())
