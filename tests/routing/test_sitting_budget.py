"""A sitting's budget: it ends at the epoch boundary where one more typical epoch would cross it."""

from types import SimpleNamespace

import pytest

from ho_co.routing import callbacks
from ho_co.routing.callbacks import SittingBudget


def sitting(monkeypatch, minutes, epoch_seconds):
    """Run the callback over epochs of the given lengths; returns the epochs trained."""
    clock = [0.0]
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: clock[0])
    budget, trainer = SittingBudget(minutes), SimpleNamespace(sanity_checking=False, should_stop=False)
    budget.on_train_start(trainer, None)
    for done, seconds in enumerate(epoch_seconds, 1):
        budget.on_train_epoch_start(trainer, None)
        clock[0] += seconds
        budget.on_validation_end(trainer, None)
        if trainer.should_stop:
            return done
    return len(epoch_seconds)


def test_it_stops_before_the_next_epoch_would_cross_the_budget(monkeypatch):
    assert sitting(monkeypatch, 10, [100] * 10) == 6  # the sixth ends at 600 s, within; a seventh would not
    assert sitting(monkeypatch, 10, [110] * 10) == 5  # the fifth ends at 550 s; a sixth would end at 660


def test_one_paused_epoch_does_not_end_the_sitting_early(monkeypatch):
    # the second epoch held 200 s by a pause: the slowest epoch would stop the run after it
    # (400 + 300 > 600); the median epoch, 100 s, lets the sitting run on to its budget
    assert sitting(monkeypatch, 10, [100, 300, 100, 100, 100]) == 4


def test_a_validation_during_the_sanity_check_counts_nothing(monkeypatch):
    budget, trainer = SittingBudget(0.001), SimpleNamespace(sanity_checking=True, should_stop=False)
    budget.on_validation_end(trainer, None)
    assert not trainer.should_stop


@pytest.mark.parametrize("minutes", [0, -5])
def test_a_budget_must_be_positive(minutes):
    with pytest.raises(ValueError, match="callbacks.budget.minutes must be > 0"):
        SittingBudget(minutes)


def test_the_cpu_clock_counts_cpu_time_not_wall_time(monkeypatch):
    """Sharing a core, an epoch takes 200 s of wall time for 100 s of CPU: a budget of 10 CPU
    minutes still lasts six such epochs (on the wall clock it would last three)."""
    wall, cpu = [0.0], [0.0]
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: wall[0])
    monkeypatch.setattr(callbacks.time, "process_time", lambda: cpu[0])
    trained = {}
    for clock in ("cpu", "wall"):
        wall[0] = cpu[0] = 0.0
        budget, trainer = SittingBudget(10, clock=clock), SimpleNamespace(sanity_checking=False, should_stop=False)
        budget.on_train_start(trainer, None)
        for done in range(1, 11):
            budget.on_train_epoch_start(trainer, None)
            wall[0] += 200
            cpu[0] += 100
            budget.on_validation_end(trainer, None)
            if trainer.should_stop:
                break
        trained[clock] = done
    assert trained == {"cpu": 6, "wall": 3}


def test_an_unknown_clock_is_refused():
    with pytest.raises(ValueError, match="callbacks.budget.clock must be one of \\['cpu', 'wall'\\], got 'gpu'"):
        SittingBudget(10, clock="gpu")
