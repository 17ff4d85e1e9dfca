"""benchmarks/timing.py, the timing every benchmark shares: turns, warm-up, failures, medians."""

import importlib.util
import math
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("timing", Path(__file__).parents[1] / "benchmarks" / "timing.py")
timing = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(timing)


def test_cases_take_turns_and_warmup_rounds_are_dropped():
    calls = []

    def case(name, values):
        it = iter(values)
        return lambda: calls.append(name) or next(it)

    results = timing.interleaved({"a": case("a", [9, 1, 2, 3]), "b": case("b", [9, 2, 8, 3])}, rounds=3, warmup=1)
    assert calls == ["a", "b", "b", "a"] * 2  # each round starts one case later
    assert results == {"a": [1, 2, 3], "b": [2, 8, 3]}
    assert timing.medians(results) == {"a": 2, "b": 3}
    assert timing.median_ratio(results, "a", "b") == 0.5  # per round 0.5, 0.25, 1.0
    assert timing.median_ratio(results, "a", "b") != timing.medians(results)["a"] / timing.medians(results)["b"]


def test_a_failing_case_leaves_the_others_their_rounds(capsys):
    rounds = iter(range(10))

    def flaky():
        if next(rounds) == 1:
            raise RuntimeError("compile failed")
        return {"ms": 4.0, "inst_s": 10.0}

    results = timing.interleaved({"flaky": flaky, "steady": lambda: {"ms": 2.0, "inst_s": 20.0}}, rounds=3)
    assert "FAILED flaky: RuntimeError: compile failed" in capsys.readouterr().out
    assert len(results["flaky"]) == 1 and len(results["steady"]) == 3
    assert timing.medians(results)["steady"] == {"ms": 2.0, "inst_s": 20.0}
    assert timing.median_ratio(results, "flaky", "steady", "ms") == 2.0  # only the round both ran
    assert timing.medians({"never": []}) == {}
    assert math.isnan(timing.median_ratio(results, "flaky", "missing", "ms"))


def test_timed_measures_one_call(monkeypatch):
    clock = iter([1.0, 3.5, 5.0])
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    calls = []
    assert timing.timed(lambda: calls.append(1))() == 2.5 and calls == [1]
    with pytest.raises(ZeroDivisionError):
        timing.seconds(lambda: 1 / 0)
