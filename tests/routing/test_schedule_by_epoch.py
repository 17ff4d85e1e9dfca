"""ScheduleByEpoch on a resume, hook by hook as Lightning calls them: configure_optimizers, then
on_fit_start, then the checkpoint's restore, then the first on_train_epoch_start."""

from types import SimpleNamespace

import pytest
import torch

from ho_co.routing.callbacks import ScheduleByEpoch


def _resume(scheduler, epoch, restore):
    trainer = SimpleNamespace(lr_scheduler_configs=[SimpleNamespace(scheduler=scheduler, interval="epoch")],
                              current_epoch=epoch, is_global_zero=True)
    callback = ScheduleByEpoch()
    callback.on_fit_start(trainer, None)
    restore(scheduler)
    callback.on_train_epoch_start(trainer, None)
    return scheduler.optimizer.param_groups[0]["lr"]


def _optimizer():
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)


def test_the_configs_milestones_win_over_the_checkpoints(rank_zero_log):
    optimizer = _optimizer()
    checkpoint = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[85], gamma=0.1)
    for _ in range(136):
        checkpoint.step()
    saved = checkpoint.state_dict()
    configured = torch.optim.lr_scheduler.MultiStepLR(_optimizer(), milestones=[85, 136], gamma=0.1)
    configured.optimizer.param_groups[0]["lr"] = 1e-4  # as the optimizer's restored state has it
    assert _resume(configured, 136, lambda s: s.load_state_dict(saved)) == pytest.approx(1e-5)
    assert sorted(configured.milestones) == [85, 136] and configured.last_epoch == 136
    assert "milestones=[85, 136], gamma=0.1 (the config's; the checkpoint had milestones=[85]" in rank_zero_log.text


def test_a_schedule_restored_in_step_with_its_config_is_left_alone(rank_zero_log):
    scheduler = torch.optim.lr_scheduler.MultiStepLR(_optimizer(), milestones=[3], gamma=0.1)
    for _ in range(5):
        scheduler.step()
    saved = scheduler.state_dict()
    fresh = torch.optim.lr_scheduler.MultiStepLR(_optimizer(), milestones=[3], gamma=0.1)
    fresh.optimizer.param_groups[0]["lr"] = 1e-4
    assert _resume(fresh, 5, lambda s: s.load_state_dict(saved)) == pytest.approx(1e-4)
    assert rank_zero_log.text == ""


def test_a_plateau_schedule_keeps_its_restored_history():
    """ReduceLROnPlateau has no closed form: its restored state (best value, bad epochs) is its
    history, not a changed setting, and the resume goes on with it."""
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(_optimizer(), patience=1)

    def restore(s):
        s.step(1.0), s.step(2.0)
        s.last_epoch = 2

    assert _resume(scheduler, 2, restore) == pytest.approx(1e-3)
    assert scheduler.best == 1.0 and scheduler.num_bad_epochs == 1
