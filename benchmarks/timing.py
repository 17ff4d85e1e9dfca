"""How every benchmark times: the cases take turns, round after round, and medians count.

The machines are shared and their load drifts. A round calls every case once, in turn, so a
drift hits all cases alike; the median over rounds ignores the odd disturbed round, and a ratio
taken within each round (`median_ratio`) cancels what that round's load did to both sides. Each
round starts one case later than the last, because a case also inherits what the one before it
left behind (memory it just freed is cheaper to take again than memory the OS reclaimed): with a
fixed order the same case would always get the same predecessor.

    times = interleaved({"linear": timed(step_a), "ho": timed(step_b)}, rounds=5, warmup=2)
    print(medians(times), median_ratio(times, "ho", "linear"))

A case may also measure itself and return a dict of numbers (instances/s, ms per step, ...):
`medians` and `median_ratio` then work per key.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Mapping, Union

import torch

Measurement = Union[float, dict[str, float]]


def synchronize(device: str | torch.device) -> None:
    """Wait for the device's queued work, so that a clock reading covers it (CUDA only)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], object], device: str | torch.device = "cpu") -> float:
    """Wall time of one call of `fn`, its queued device work included."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def timed(fn: Callable[[], object], device: str | torch.device = "cpu") -> Callable[[], float]:
    """A case for `interleaved` that measures the seconds of one call of `fn`."""
    return lambda: seconds(fn, device)


def interleaved(cases: Mapping[str, Callable[[], Measurement]], rounds: int,
                warmup: int = 0) -> dict[str, list[Measurement]]:
    """Each case's measurements, round by round; every round calls every case once, in turn,
    starting one case later than the round before.

    `warmup` rounds run first and are not kept (allocator, compilation, lazy initialisation).
    A case that raises is reported and left out of the later rounds, so one failing variant
    (say a compile mode) does not cost the others their numbers; its list stays short.
    """
    results: dict[str, list[Measurement]] = {name: [] for name in cases}
    failed: set[str] = set()
    order = list(cases)
    for round_ in range(warmup + rounds):
        for name in order:
            if name in failed:
                continue
            try:
                value = cases[name]()
            except Exception as err:  # noqa: BLE001 - reported, the other cases go on
                print(f"FAILED {name}: {type(err).__name__}: {err}", flush=True)
                failed.add(name)
                continue
            if round_ >= warmup:
                results[name].append(value)
        order = order[1:] + order[:1]
    return results


def _median(values: list[Measurement]) -> Measurement:
    if isinstance(values[0], dict):
        return {key: statistics.median(v[key] for v in values) for key in values[0]}
    return statistics.median(values)


def medians(results: Mapping[str, list[Measurement]]) -> dict[str, Measurement]:
    """The median of each case's rounds (per key for dict measurements); cases with none are left out."""
    return {name: _median(values) for name, values in results.items() if values}


def median_ratio(results: Mapping[str, list[Measurement]], a: str, b: str, key: str | None = None) -> float:
    """Median over rounds of a / b, both measured in the same round (NaN when they share none)."""
    pairs = list(zip(results.get(a, []), results.get(b, [])))
    if key is not None:
        pairs = [(x[key], y[key]) for x, y in pairs]
    return statistics.median(x / y for x, y in pairs) if pairs else float("nan")
