"""The device commands in docs/gpu_training.md must keep working: a broken one costs GPU minutes.

Each command line must fit the device tool's 2,000 characters, every `ho_co train` in it must
compose with the current configs (for both experiments it is run with), and every other
`ho_co` call must parse with the current CLI.
"""

import re
import shlex
from pathlib import Path

import pytest

from ho_co.cli import build_parser
from ho_co.routing.train import compose

RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "gpu_training.md"
COMMANDS = [line for line in RUNBOOK.read_text().splitlines() if line.startswith("python3 -m pip install")]


def ho_co_calls(command: str, experiment: str) -> list[list[str]]:
    """Argument lists of each `python3 -m ho_co ...` in a shell command line, variables filled in."""
    filled = command.replace("$E", experiment).replace("$R", f"/tmp/runs/{experiment}").replace("$OUT", "/tmp/out")
    calls = []
    for part in re.split(r"&&|;|\|\|", filled):
        words = shlex.split(part.split(">")[0])
        if words[:3] == ["python3", "-m", "ho_co"]:
            calls.append(words[3:])
    return calls


def test_runbook_has_both_calls_within_the_device_limit():
    assert len(COMMANDS) == 2
    assert all(len(command) <= 2000 for command in COMMANDS)


@pytest.mark.parametrize("experiment", ["tsp50_ho_matnet", "tsp50_matnet"])
@pytest.mark.parametrize("index", [0, 1])
def test_every_runbook_call_composes_or_parses(index, experiment):
    calls = ho_co_calls(COMMANDS[index], experiment)
    assert calls and any(call[0] == "train" for call in calls)
    for call in calls:
        if call[0] == "train":
            cfg = compose(call[1:])
            assert cfg.name == experiment and cfg.trainer.max_time and cfg.callbacks.learning_curve.reference
        else:
            args, extra = build_parser().parse_known_args(call)
            assert args.handler is not None and not extra
