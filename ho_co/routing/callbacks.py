"""Lightning callbacks of `ho-co train`: a learning curve that travels with the weights,
per-rank seeds for DDP, the run's config stored inside every checkpoint, and `last.ckpt` that
always holds the run's final state.

What they have to say goes through Lightning's `rank_zero_info`, as Lightning's own notices do:
one line from rank 0, shown where the run shows Lightning's (stderr by default).
"""

from __future__ import annotations

import csv
import os
import statistics
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint
from lightning.pytorch.utilities import rank_zero_info

CURVE_FIELDS = ["epoch", "global_step", "instances_seen", "wall_s", "cpu_s", "val_length", "val_gap_percent", "device",
                "val_set"]


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

        checkpoint.setdefault("ho_co", {}).update(config=self.config, version=__version__)
        hparams = checkpoint.get("hyper_parameters", {})
        for key in ("env", "policy"):
            hparams.pop(key, None)


class EpochSeed(Callback):
    """Each epoch trains on instances drawn from (seed, epoch, rank) alone, and samples its tours
    from an RNG seeded the same way. Two models compared under one seed see the same data stream
    whatever their initialisation drew, and a run resumed at an epoch boundary continues exactly
    as it would have without the stop (rl4co draws the next epoch's data from the global RNG,
    which a restart resets). The instances replace those in the epoch's dataset before its first
    batch is read; a dataset marked `fixed` (a labelled pool read every epoch) is left as it is."""

    def __init__(self, seed: int | None):
        self.seed = seed

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.seed is None:
            return
        import numpy as np

        state = np.random.SeedSequence((self.seed, trainer.current_epoch, trainer.global_rank)).generate_state(2)
        dataset = trainer.train_dataloader.dataset
        if not getattr(dataset, "fixed", False):
            torch.manual_seed(int(state[0]))
            fresh = pl_module.env.dataset(len(dataset), phase="train")
            if type(fresh) is not type(dataset):
                raise TypeError(f"EpochSeed replaces a {type(dataset).__name__}, got a {type(fresh).__name__}")
            dataset.__dict__.update(fresh.__dict__)
        torch.manual_seed(int(state[1]))


# A scheduler's progress, as opposed to its settings (milestones, gamma, ...), in its state_dict.
SCHEDULER_PROGRESS = frozenset({"last_epoch", "_step_count", "_last_lr", "_get_lr_called_within_step", "_is_initial",
                                "base_lrs", "verbose"})


def schedule_settings(scheduler) -> dict:
    """What a learning-rate schedule was configured with: its state_dict less its progress."""
    return {k: v for k, v in scheduler.state_dict().items() if k not in SCHEDULER_PROGRESS}


class ScheduleByEpoch(Callback):
    """An epoch-interval learning-rate schedule follows the run's absolute epoch and the run's
    config, also on a resume. Added to a resumed run whose checkpoint holds no state for it (a long
    run trained at a constant rate that now gets POMO's x0.1 drop: `model.lr_scheduler=MultiStepLR
    model.lr_scheduler_kwargs.milestones=[E]`), Lightning would start it at epoch 0 of the resume;
    resumed with other settings than the checkpoint's (a second drop: `milestones=[85,E]`),
    Lightning would restore the checkpoint's and silently ignore the config. Here the config's
    settings take over (one line says so), the schedule's epoch is set to the run's, and the rate
    to the schedule's closed form at that epoch. A schedule restored in step with its config is
    left alone."""

    def __init__(self):
        self._configured: list[dict | None] = []  # per scheduler, its settings as configured
        self._checked = False

    def on_fit_start(self, trainer, pl_module) -> None:  # after configure_optimizers, before a checkpoint's restore
        # only a schedule with a closed form can be re-timed (ReduceLROnPlateau's state is its history)
        self._configured = [schedule_settings(config.scheduler) if hasattr(config.scheduler, "_get_closed_form_lr")
                            else None for config in trainer.lr_scheduler_configs]

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # the first epoch's number is known here
        if self._checked:
            return
        self._checked = True
        for config, settings in zip(trainer.lr_scheduler_configs, self._configured):
            scheduler = config.scheduler
            if config.interval != "epoch":
                continue
            restored = schedule_settings(scheduler) if settings is not None else None
            changed = restored != settings
            if not changed and scheduler.last_epoch == trainer.current_epoch:
                continue
            if not hasattr(scheduler, "_get_closed_form_lr"):
                raise ValueError(f"{type(scheduler).__name__} has no closed form to resume at epoch "
                                 f"{trainer.current_epoch}; resume with its own checkpoint state or another schedule")
            if changed:
                scheduler.__dict__.update(settings)
                rank_zero_info(f"learning-rate schedule from epoch {trainer.current_epoch} on: {_shown(settings)} "
                               f"(the config's; the checkpoint had {_shown(restored)})")
            scheduler.last_epoch = trainer.current_epoch
            rates = scheduler._get_closed_form_lr()
            for group, rate in zip(scheduler.optimizer.param_groups, rates):
                group["lr"] = rate
            scheduler._last_lr = list(rates)


def _shown(settings: dict) -> str:
    return ", ".join(f"{k}={sorted(v.elements()) if hasattr(v, 'elements') else v}" for k, v in settings.items())


# SittingBudget's clocks: the time module's function each reads (looked up at each reading)
BUDGET_CLOCKS = {"wall": "perf_counter", "cpu": "process_time"}


class SittingBudget(Callback):
    """Stop at an epoch boundary before `minutes` of this invocation's time run out: after
    each epoch, if one more epoch as long as the median one so far would cross the budget, the
    run ends there (validated, checkpointed, resumable with `ckpt_path=last`). The median, not the
    slowest: one epoch stretched by a pause (`kill -STOP` while something else is timed) would
    otherwise end the sitting epochs early. Lightning's `max_time` counts all resumes together
    and stops mid-epoch; this is the budget of one sitting of a run that continues over several.

    clock: "wall" counts wall time; "cpu" counts this process's CPU time (all its threads), so
    runs compared at equal CPU time get equal shares whatever else the box is running."""

    def __init__(self, minutes: float | None = None, clock: str = "wall"):
        if minutes is not None and not minutes > 0:
            raise ValueError(f"callbacks.budget.minutes must be > 0, got {minutes}")
        if clock not in BUDGET_CLOCKS:
            raise ValueError(f"callbacks.budget.clock must be one of {sorted(BUDGET_CLOCKS)}, got {clock!r}")
        self.minutes, self.clock = minutes, clock
        self._start = self._epoch_start = 0.0
        self._epochs: list[float] = []

    def now(self) -> float:
        return getattr(time, BUDGET_CLOCKS[self.clock])()

    def on_train_start(self, trainer, pl_module) -> None:
        self._start = self.now()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_start = self.now()

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.minutes is None or trainer.sanity_checking:
            return
        now = self.now()
        self._epochs.append(now - self._epoch_start)
        if now + statistics.median(self._epochs) - self._start > 60 * self.minutes:
            trainer.should_stop = True


class LastCheckpoint(Checkpoint):
    """`last.ckpt` holds the run's final state: written after every validation, when training
    ends (a stop by `max_time` or `max_steps` mid-epoch included) and when it is interrupted
    (Ctrl-C, SIGTERM, an error), so resuming from it continues exactly where the run stopped.

    Lightning's own `save_last` writes only when a top-k checkpoint is written at the same step,
    so after an epoch that is not the best, its last.ckpt is an older state. Each write goes to
    a temporary file renamed over the old one: a kill mid-write leaves the previous state.
    """

    def __init__(self, dirpath: str, filename: str = "last.ckpt"):
        self.path = Path(dirpath) / filename
        self._saved_step: int | None = None

    @property
    def last_model_path(self) -> str:
        return str(self.path)

    def save(self, trainer) -> None:
        if trainer.sanity_checking or self._saved_step == trainer.global_step:
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(tmp, weights_only=False)
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
        trainer.strategy.barrier()
        self._saved_step = trainer.global_step

    def on_validation_end(self, trainer, pl_module) -> None:
        self.save(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self.save(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if trainer.global_step == 0:
            return  # nothing trained yet: nothing worth keeping
        self.save(trainer)
        rank_zero_info(f"training stopped ({type(exception).__name__}) at step {trainer.global_step}; "
                       f"its state is in {self.path}: resume with the same command and ckpt_path={self.path}")


class LearningCurve(Callback):
    """The held-out gap after each validation, against instances seen and training wall time.

    With `instances` (+ `reference`), the policy is decoded on that fixed set with multi-start
    greedy and a fixed seed, the same way `ho-co eval` does, so the numbers compare. Each row is
    appended to `curve_file` and drawn to `plot_file`. The whole curve is stored in every
    checkpoint (`checkpoint["ho_co"]["training"]`, kept by `ho-co checkpoint export`), so a
    resumed run, or a new run warm-started from the weights (`model.policy.init_from`), carries
    on the same curve, and a shipped checkpoint says how much training it had.
    """

    def __init__(self, curve_file: str, instances: str | None = None, reference: str | None = None,
                 num_augment: int = 1, batch_size: int = 256, seed: int = 0, plot_file: str | None = None):
        if reference and not instances:
            raise ValueError("callbacks.learning_curve.reference needs .instances (the file it solves)")
        self.curve_file = Path(curve_file)
        self.plot_file = Path(plot_file) if plot_file else None
        self.instances_path, self.reference_path = instances, reference
        self.num_augment, self.batch_size, self.seed = num_augment, batch_size, seed
        self.rows: list[dict[str, Any]] = []
        self.instances_seen = 0
        self.wall_s = 0.0
        self.cpu_s = 0.0
        self._wall_at_start = self._cpu_at_start = 0.0
        self._t0 = self._c0 = 0.0
        self._inst = self._ref = None

    # -- the record that travels in checkpoints
    def record(self) -> dict[str, Any]:
        return {"instances_seen": self.instances_seen, "wall_s": self.wall_s, "cpu_s": self.cpu_s,
                "curve": list(self.rows)}

    def carry_on(self, record: dict[str, Any]) -> None:
        """Continue from a stored record (a resumed run, or the weights a run starts from)."""
        self.instances_seen = int(record["instances_seen"])
        self.wall_s = float(record["wall_s"])
        self.cpu_s = float(record.get("cpu_s", 0.0))
        self.rows = [dict(row) for row in record.get("curve", [])]

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint.setdefault("ho_co", {})["training"] = self.record()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        record = checkpoint.get("ho_co", {}).get("training")
        if record is not None:
            self.carry_on(record)

    # -- counters
    def on_train_start(self, trainer, pl_module) -> None:
        self._wall_at_start, self._t0 = self.wall_s, time.perf_counter()
        self._cpu_at_start, self._c0 = self.cpu_s, time.process_time()
        if trainer.is_global_zero:  # the file always shows the stored curve, nothing from a lost run
            self._write_csv()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.instances_seen += int(batch.batch_size[0]) * trainer.world_size
        self.wall_s = self._wall_at_start + time.perf_counter() - self._t0
        self.cpu_s = self._cpu_at_start + time.process_time() - self._c0

    # -- validation
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not self.instances_path:
            return
        from ho_co.problems import mean_gap
        from ho_co.routing.decode import decode

        inst, ref = self.validation_set(pl_module.env)
        lengths = decode(pl_module.policy, pl_module.env, inst, num_augment=self.num_augment,
                         batch_size=self.batch_size, seed=self.seed, device=pl_module.device).lengths
        pl_module.log("val/length", float(lengths.mean()), prog_bar=True, sync_dist=True)
        if ref is not None:
            pl_module.log("val/gap", mean_gap(lengths, ref.lengths), prog_bar=True, sync_dist=True)

    def val_set_name(self) -> str:
        """The validation file's stem, in every row: a curve that changes sets says where."""
        return Path(self.instances_path).stem if self.instances_path else ""

    def validation_set(self, env):
        """The fixed validation instances and their references (None without `reference`),
        read and checked once per run."""
        from ho_co.problems import load_instances, load_references

        if self._inst is None:
            problem = getattr(env, "problem", env.name)
            self._inst = load_instances(self.instances_path, problem=problem, num_loc=env.generator.num_loc)
            self._ref = load_references(self.reference_path, self._inst) if self.reference_path else None
        return self._inst, self._ref

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
        self.rows.append({"epoch": trainer.current_epoch, "global_step": trainer.global_step,
                          "instances_seen": self.instances_seen, "wall_s": round(self.wall_s, 3), "cpu_s": round(self.cpu_s, 3),
                          "val_length": length, "val_gap_percent": "" if gap is None else gap,
                          "device": device_name(pl_module.device), "val_set": self.val_set_name()})
        self._write_csv()
        if self.plot_file is not None and gap is not None:
            from ho_co.routing.figures import plot_curves

            plot_curves({"validation": self.curve_file}, self.plot_file)
        extra = {"progress/instances_seen": float(self.instances_seen), "progress/wall_s": self.wall_s}
        if "val/length" not in metrics:
            extra["val/length"] = length
        for logger in trainer.loggers:
            logger.log_metrics(extra, step=trainer.global_step)

    def _write_csv(self) -> None:
        self.curve_file.parent.mkdir(parents=True, exist_ok=True)
        with self.curve_file.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CURVE_FIELDS, restval="")
            writer.writeheader()
            writer.writerows(self.rows)


def device_name(device: torch.device) -> str:
    """What the time was spent on: "cpu" or the GPU's name (GPU-minutes are read off the curve)."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
