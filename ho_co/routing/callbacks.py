"""Lightning callbacks of `ho-co train`: a learning curve that survives resumes, per-rank
seeds for DDP, and the run's config stored inside every checkpoint.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

CURVE_FIELDS = ["epoch", "global_step", "instances_seen", "wall_s", "val_length", "val_gap_percent"]


class RankSeed(Callback):
    """Different seeds per DDP rank (base seed + rank), so ranks draw different instances and
    samples. DDP broadcasts rank 0's initial weights, so the model stays one model."""

    def __init__(self, seed: int | None = None):
        self.seed = seed

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.seed is not None and trainer.world_size > 1:
            L.seed_everything(self.seed + trainer.global_rank, workers=True, verbose=False)


class StoreConfig(Callback):
    """Put the resolved run config in each checkpoint: `ho-co eval` rebuilds the model from it.

    rl4co's modules save their `env` and `policy` objects as hyperparameters; those pickles
    are dropped, so checkpoints load with `weights_only=True` (Lightning's default on resume).
    """

    def __init__(self, config: dict[str, Any]):
        self.config = config

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        from ho_co import __version__

        checkpoint["ho_co"] = {"config": self.config, "version": __version__}
        hparams = checkpoint.get("hyper_parameters", {})
        for key in ("env", "policy"):
            hparams.pop(key, None)


class LearningCurve(Callback):
    """After each validation: mean tour length, gap against references (if configured),
    instances seen and wall time, logged and appended to `curve_file`.

    Counters live in the checkpoint (state_dict), so a resumed run continues the same curve;
    rows past the resumed step (from an interrupted run) are dropped on resume. With
    `instances` (+ `reference`), the policy is decoded on that fixed set with multi-start
    greedy and a fixed seed, the same way `ho-co eval` does, so the numbers compare.
    """

    def __init__(self, curve_file: str, instances: str | None = None, reference: str | None = None,
                 num_augment: int = 1, batch_size: int = 256, seed: int = 0, ranks_file: str | None = None):
        if reference and not instances:
            raise ValueError("callbacks.learning_curve.reference needs .instances (the file it solves)")
        self.curve_file = Path(curve_file)
        self.ranks_file = Path(ranks_file) if ranks_file else None
        self.instances_path, self.reference_path = instances, reference
        self.num_augment, self.batch_size, self.seed = num_augment, batch_size, seed
        self.instances_seen = 0
        self.wall_s = 0.0
        self._wall_at_start = 0.0
        self._t0: float | None = None
        self._epoch_instances = 0
        self._epoch_checksum = 0.0
        self._inst = self._ref = None

    # -- state that survives resume
    def state_dict(self) -> dict[str, Any]:
        return {"instances_seen": self.instances_seen, "wall_s": self.wall_s}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.instances_seen = int(state["instances_seen"])
        self.wall_s = float(state["wall_s"])

    # -- counters
    def on_train_start(self, trainer, pl_module) -> None:
        self._wall_at_start, self._t0 = self.wall_s, time.perf_counter()
        if trainer.is_global_zero and self.curve_file.is_file():
            self._drop_rows_after(trainer.global_step)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_instances, self._epoch_checksum = 0, 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        local = int(batch.batch_size[0])
        if self._epoch_instances == 0:  # a fingerprint of this rank's data
            first = next(iter(batch.values()))
            self._epoch_checksum = float(first.double().sum())
        self._epoch_instances += local
        self.instances_seen += local * trainer.world_size
        self.wall_s = self._wall_at_start + time.perf_counter() - self._t0

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.ranks_file is None:
            return
        mine = torch.tensor([float(trainer.global_rank), float(self._epoch_instances), self._epoch_checksum,
                             float(torch.initial_seed() % 2**31)], dtype=torch.float64, device=pl_module.device)
        every = pl_module.all_gather(mine).reshape(-1, 4).tolist()
        if trainer.is_global_zero:
            rows = [{"rank": int(r), "instances_this_epoch": int(n), "data_checksum": c, "seed": int(s)}
                    for r, n, c, s in every]
            self.ranks_file.parent.mkdir(parents=True, exist_ok=True)
            self.ranks_file.write_text(json.dumps({"world_size": trainer.world_size, "ranks": rows}, indent=2))

    # -- validation
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not self.instances_path:
            return
        from ho_co.routing.evaluate import load_reference, solve
        from ho_co.routing.instances import load_instances
        from ho_co.solvers.tours import mean_gap

        env = pl_module.env
        if self._inst is None:
            problem = getattr(env, "problem", env.name)
            self._inst = load_instances(self.instances_path, problem=problem, num_loc=env.generator.num_loc)
            self._ref = load_reference(self.reference_path, self._inst) if self.reference_path else None
        _, lengths, _ = solve(pl_module.policy, env, self._inst, num_augment=self.num_augment,
                              batch_size=self.batch_size, seed=self.seed, device=pl_module.device)
        pl_module.log("val/length", float(lengths.mean()), prog_bar=True, sync_dist=True)
        if self._ref is not None:
            pl_module.log("val/gap", mean_gap(lengths, self._ref.lengths), prog_bar=True, sync_dist=True)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        if "val/length" in metrics:
            length = float(metrics["val/length"])
        elif "val/reward" in metrics:
            length = -float(metrics["val/reward"])  # rl4co's reward is minus the tour length
        else:
            length = float("nan")
        gap = float(metrics["val/gap"]) if "val/gap" in metrics else None
        row = {"epoch": trainer.current_epoch, "global_step": trainer.global_step,
               "instances_seen": self.instances_seen, "wall_s": round(self.wall_s, 3),
               "val_length": length, "val_gap_percent": "" if gap is None else gap}
        self._append(row)
        extra = {"progress/instances_seen": float(self.instances_seen), "progress/wall_s": self.wall_s}
        if "val/length" not in metrics:
            extra["val/length"] = length
        for logger in trainer.loggers:
            logger.log_metrics(extra, step=trainer.global_step)

    def _append(self, row: dict) -> None:
        self.curve_file.parent.mkdir(parents=True, exist_ok=True)
        new = not self.curve_file.is_file()
        with self.curve_file.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CURVE_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)

    def _drop_rows_after(self, global_step: int) -> None:
        with self.curve_file.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["global_step"]) <= global_step]
        with self.curve_file.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CURVE_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
