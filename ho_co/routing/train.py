"""`ho-co train`: Hydra config -> rl4co env + model -> RL4COTrainer.fit.

The configs follow rl4co's own layout (configs/experiment, model, env, trainer, callbacks,
logger, paths). They are composed with Hydra's compose API rather than `@hydra.main`, so the
command runs in the caller's directory and Lightning's DDP launcher can re-run the same
command line for each rank. The config directory is `$HO_CO_CONFIG_DIR` where that is set (and
holds main.yaml), else the checkout's (`<repo>/configs`), else the installed package's
(`ho_co/configs`); the data sets the configs name are found under `paths.data_dir`
(`$HO_CO_DATA_DIR`, default `data/` in the working directory).
"""

from __future__ import annotations

import logging
import os
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

from ho_co.routing.checkpoints import SafeCheckpointIO, read_checkpoint, training_record
from ho_co.routing.cpu import runs_on_cpu, set_cpu_threads, settle_cpu_process


def config_dir() -> Path:
    """Where the Hydra configs live: $HO_CO_CONFIG_DIR, the checkout, or the package copy."""
    candidates = []
    if os.environ.get("HO_CO_CONFIG_DIR"):
        candidates.append(Path(os.environ["HO_CO_CONFIG_DIR"]))
    candidates.append(Path(__file__).resolve().parents[2] / "configs")  # <repo>/configs
    candidates.append(Path(str(resources.files("ho_co"))) / "configs")  # installed package data
    for path in candidates:
        if (path / "main.yaml").is_file():
            return path
    raise FileNotFoundError(
        "no ho-co configs found (looked in: " + ", ".join(str(p) for p in candidates) + "); "
        "set HO_CO_CONFIG_DIR to a directory holding main.yaml"
    )


def experiments() -> list[str]:
    """Names accepted by `experiment=NAME`."""
    return sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """The run config: main.yaml + `experiment=NAME` + `key=value` overrides, resolved."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    directory = config_dir()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(directory), version_base="1.3"):
        try:
            cfg = hydra_compose(config_name="main", overrides=list(overrides))
            groups = [o for o in overrides if (directory / o.split("=")[0].split("@")[0]).is_dir()]
            defaults = hydra_compose(config_name="main", overrides=groups)
        except HydraException as err:
            known = ", ".join(experiments())
            raise ValueError(f"bad config override ({err}); experiments: {known}") from err
    check_value_types(overrides, cfg, defaults)
    OmegaConf.resolve(cfg)
    return cfg


# settings Lightning also takes as text ("auto", "0,1") where the configs hold a number
TEXT_OR_NUMBER = {"trainer.devices"}


def check_value_types(overrides: Sequence[str], cfg: DictConfig, defaults: DictConfig) -> None:
    """`key=abc` where the config holds a number (or a bool) is refused here: Hydra takes any
    text, and the class it reaches fails deep inside training, or not at all."""
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or key[:1] in "+~" or key in TEXT_OR_NUMBER:
            continue
        default = OmegaConf.select(defaults, key, default=None)
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ValueError(f"{key}={text}: expected true or false")
        if isinstance(default, (int, float)) and not isinstance(default, bool) and isinstance(value, str):
            raise ValueError(f"{key}={text}: expected a number, like the default {default!r}")


def per_rank_batch(batch_size: int, world_size: int, key: str) -> int:
    """POMO's batch is the global batch: each of `world_size` processes takes its share."""
    if batch_size % world_size:
        raise ValueError(f"{key}={batch_size} does not split over {world_size} processes; use a multiple")
    return batch_size // world_size


def instantiated(what: str, make):
    """`make()`, with a failure inside a configured class reported as one line naming `what`
    and the real cause, instead of Hydra's wrapped traceback."""
    from hydra.errors import InstantiationException

    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return make()
    except InstantiationException as err:
        cause = err.__cause__ or err
        if isinstance(cause, (ValueError, FileNotFoundError)):
            raise type(cause)(f"{what}: {cause}") from err
        if isinstance(cause, MisconfigurationException):  # Lightning: an accelerator or device it cannot use
            raise ValueError(f"{what}: {cause}") from err
        raise


def resume_path(cfg: DictConfig) -> Path | None:
    """The checkpoint a run resumes from (`ckpt_path=last`: this run's own last.ckpt), checked
    before anything is built; a run directory that already holds a run is never written over."""
    output_dir = Path(cfg.paths.output_dir)
    own_last = output_dir / "checkpoints" / "last.ckpt"
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is None:
        earlier = [p for p in (own_last, output_dir / "learning_curve.csv") if p.exists()]
        if earlier:
            raise ValueError(
                f"{output_dir} already holds a run ({earlier[0]}): resume it with ckpt_path=last, "
                "or give this run another name=NAME")
        return None
    path = own_last if str(ckpt_path) == "last" else Path(ckpt_path)
    read_checkpoint(path, "ckpt_path")  # missing, corrupt or unsafe files end here, in one line
    return path


# Third-party notices no ho-co user can act on: (logger, message start) and (warning category,
# message regex). Lightning advertises litlogger on every run and trips torch's LeafSpec
# deprecation itself; rl4co's module saves env and policy as hyperparameters (they are in the
# state dict anyway) and announces generated validation data, which the configs ask for.
QUIET_LOGS = [("lightning.pytorch.utilities.rank_zero", "💡 Tip:"),
              ("rl4co.envs.common.base", "val_file not set"), ("rl4co.envs.common.base", "test_file not set")]
QUIET_WARNINGS = [(FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
                  (UserWarning, r"Attribute '(env|policy)' is an instance of `nn.Module` and is already saved")]


class DropNotices(logging.Filter):
    """Drops a logger's records that start with one of `starts`."""

    def __init__(self, starts: list[str]):
        super().__init__()
        self.starts = tuple(starts)

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


def quiet_third_party() -> None:
    """Silence QUIET_LOGS and QUIET_WARNINGS (once per process; DDP ranks each call it)."""
    for name in dict.fromkeys(name for name, _ in QUIET_LOGS):
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropNotices) for f in logger.filters):
            logger.addFilter(DropNotices([start for n, start in QUIET_LOGS if n == name]))
    for category, message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit the configured model; returns paths, final metrics and the run summary."""
    import lightning as L
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import ModelCheckpoint
    from rl4co.utils.instantiators import instantiate_callbacks, instantiate_loggers

    from ho_co.routing.callbacks import (EpochSeed, LastCheckpoint, LearningCurve, RankSeed, ScheduleByEpoch,
                                         StoreConfig)
    from ho_co.routing.policies import check_one_hot_width, policy_options
    from ho_co.routing.summary import RunSummary

    quiet_third_party()
    ckpt_path = resume_path(cfg)
    set_cpu_threads(cfg.get("threads"), cfg.trainer.accelerator)
    if runs_on_cpu(cfg.trainer.accelerator):
        settle_cpu_process()
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    env = instantiated("env", lambda: instantiate(cfg.env))
    if env.generator.num_loc < 3:
        raise ValueError(f"env.generator_params.num_loc={env.generator.num_loc}: a tour needs at least 3 nodes")
    check_one_hot_width(num_loc=env.generator.num_loc, **policy_options(cfg.model.policy))

    callbacks = instantiated("callbacks", lambda: instantiate_callbacks(cfg.get("callbacks")))
    for callback in callbacks:  # the validation set and its references: checked before any training
        if isinstance(callback, LearningCurve) and callback.instances_path:
            callback.validation_set(env)
    callbacks += [RankSeed(cfg.get("seed")), EpochSeed(cfg.get("seed")), ScheduleByEpoch(),
                  StoreConfig(OmegaConf.to_container(cfg, resolve=True))]
    trainer = instantiated("trainer", lambda: instantiate(cfg.trainer, callbacks=callbacks, logger=False))

    world = trainer.world_size
    sizes = {"batch_size": per_rank_batch(cfg.model.batch_size, world, "model.batch_size")}
    if cfg.model.get("val_batch_size"):
        sizes["val_batch_size"] = per_rank_batch(cfg.model.val_batch_size, world, "model.val_batch_size")
    model = instantiated("model", lambda: instantiate(cfg.model, env=env, _convert_="all", **sizes))
    trainer.loggers = instantiate_loggers(cfg.get("logger"), model)
    init_from = cfg.model.policy.get("init_from")
    if init_from and ckpt_path is None:  # warm start: the curve carries on from the weights' own
        record = training_record(read_checkpoint(init_from, "init_from checkpoint"))
        if record:
            for callback in callbacks:
                if isinstance(callback, LearningCurve):
                    callback.carry_on(record)

    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    trainer.strategy.checkpoint_io = SafeCheckpointIO()
    trainer.fit(model, ckpt_path=None if ckpt_path is None else str(ckpt_path))

    best = next((c for c in callbacks if isinstance(c, ModelCheckpoint)), None)
    last = next((c for c in callbacks if isinstance(c, LastCheckpoint)), None)
    summary = next((c.summary for c in callbacks if isinstance(c, RunSummary)), None)
    return {
        "output_dir": str(output_dir),
        "best_checkpoint": getattr(best, "best_model_path", None),
        "last_checkpoint": getattr(last, "last_model_path", None),
        "global_step": trainer.global_step,
        "epoch": trainer.current_epoch,
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
        "summary": summary,
    }
