"""`ho-co solve` never loses an input or another kind of file: outputs checked before any work,
bad options refused in one line, and a run stopped by SIGINT/SIGTERM ends its workers, keeps
its partial file and says how to resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ho_co.cli import main
from ho_co.problems import References, generate_tsp, save_instances
from ho_co.solvers.driver import partial_path
from ho_co.solvers.stopping import Terminated, stops_deferred


def _instances(path, size=3, seed=0):
    return save_instances(path, locs=generate_tsp(6, size, seed=seed))


def _solve(*args):
    return main(["solve", "--solver", "nearest", *map(str, args)])


def test_out_naming_an_instance_file_is_refused(tmp_path, capsys):
    inst = _instances(tmp_path / "t.npz")
    before = inst.read_bytes()
    (tmp_path / "sub").mkdir()
    for out in (inst, tmp_path / "sub" / ".." / "t.npz"):
        assert _solve("--instances", inst, "--out", out, "--overwrite") == 2
        assert "is one of the inputs" in capsys.readouterr().err
    # a directory of inputs written into itself: dir/t.npz is an input too
    other = _instances(tmp_path / "u.npz", seed=1)
    assert _solve("--instances", tmp_path, "--out", tmp_path) == 2
    assert "is one of the inputs" in capsys.readouterr().err
    assert inst.read_bytes() == before and other.exists()
    assert not list(tmp_path.glob("*.partial.jsonl"))


def test_replacing_another_kind_needs_overwrite(tmp_path, capsys):
    inst = _instances(tmp_path / "t.npz")
    out = tmp_path / "r.npz"
    policy = References(np.tile(np.arange(6), (3, 1)), np.ones(3), np.zeros(3, bool),
                        np.full(3, "policy"), "policy:last.ckpt")
    policy.save(out)
    assert _solve("--instances", inst, "--out", out) == 2
    err = capsys.readouterr().err
    assert "r.npz" in err and "policy tours" in err and "--overwrite" in err
    assert References.load(out).solver == "policy:last.ckpt"
    assert _solve("--instances", inst, "--out", out, "--overwrite") == 0
    assert References.load(out).solver == "nearest"
    # the same kind (a solve output, other solver) is replaced as before
    assert main(["solve", "--solver", "insertion", "--instances", str(inst), "--out", str(out)]) == 0
    assert References.load(out).solver == "insertion"
    # an instance set that is not an input, and a file of no known kind, are not replaced
    spare = _instances(tmp_path / "spare.npz", seed=3)
    notes = tmp_path / "notes.npz"
    notes.write_text("mine")
    for target, kind in ((spare, "instances"), (notes, "another kind of file")):
        assert _solve("--instances", inst, "--out", target) == 2
        assert kind in capsys.readouterr().err
    assert notes.read_text() == "mine" and len(np.load(spare)["locs"]) == 3


def test_two_inputs_with_one_output_name_are_refused(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    _instances(a / "x.npz"), _instances(b / "x.npz", seed=1)
    out = tmp_path / "refs"
    assert _solve("--instances", a / "x.npz", b / "x.npz", "--out", out) == 2
    err = capsys.readouterr().err
    assert str(a / "x.npz") in err and str(b / "x.npz") in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_out_directory_or_file_is_checked_before_solving(tmp_path, capsys):
    inst, other = _instances(tmp_path / "t.npz"), _instances(tmp_path / "u.npz", seed=1)
    folder = tmp_path / "folder"
    folder.mkdir()
    assert _solve("--instances", inst, "--out", folder) == 2
    assert "is a directory" in capsys.readouterr().err
    blocker = tmp_path / "refs.npz"
    References(np.tile(np.arange(6), (3, 1)), np.ones(3), np.zeros(3, bool), np.full(3, "x"),
               "exact").save(blocker)
    assert _solve("--instances", inst, other, "--out", blocker) == 2
    assert "need a directory" in capsys.readouterr().err
    assert _solve("--instances", inst, "--out", blocker / "r.npz") == 2
    assert "not a directory" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.partial.jsonl")) and not list(folder.iterdir())


@pytest.mark.parametrize("limit", ["0", "-1", "nan", "inf"])
def test_time_limit_must_be_positive_and_finite(tmp_path, capsys, limit):
    inst = _instances(tmp_path / "t.npz")
    assert _solve("--instances", inst, "--out", tmp_path / "r.npz", "--time-limit", limit) == 2
    assert "--time-limit" in capsys.readouterr().err
    assert not list(tmp_path.glob("r.npz*"))


def _descendants(pid: int) -> set[int]:
    """Live processes below ``pid`` (read from /proc; zombies count as gone)."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parent[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stopped_run_ends_its_workers_and_resumes(tmp_path, signum):
    size = 150
    inst = save_instances(tmp_path / "t.npz", locs=generate_tsp(10, size, seed=5))
    out, partial = tmp_path / "r.npz", tmp_path / "r.npz.partial.jsonl"
    cmd = [sys.executable, "-m", "ho_co.cli", "solve", "--solver", "exact", "--instances",
           str(inst), "--out", str(out), "--workers", "2"]
    # Ctrl-C reaches a terminal's foreground job with SIGINT at its default; a test run started in
    # the background (`cmd &` in a script) would pass SIGINT ignored down to the child
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if partial.exists() and len(partial.read_text().splitlines()) > 4:
                break
            time.sleep(0.02)
        children = _descendants(proc.pid)
        assert len(children) >= 2, "the workers never started"
        if signum == signal.SIGINT:
            os.killpg(proc.pid, signum)  # Ctrl-C reaches the terminal's whole process group
        else:
            os.kill(proc.pid, signum)  # `kill PID`
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err
    assert "run the same command again to resume" in err.strip().splitlines()[-1]
    deadline = time.monotonic() + 20
    while _alive(children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(children), "worker processes outlived the run"
    assert partial.exists() and not out.exists()
    if signum == signal.SIGTERM:
        kept = len(partial.read_text().splitlines()) - 1
        rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr
        assert "resuming, " in rerun.stderr and f"/{size} instances already solved" in rerun.stderr
        assert int(rerun.stderr.split("resuming, ")[1].split("/")[0]) >= kept - 1
        assert References.load(out).optimal.all() and not partial.exists()


# A stop signal that lands while the parent is acquiring the futures' locks inside
# concurrent.futures.wait: raised there, KeyboardInterrupt left some locks held and the pool's
# shutdown waited forever. The signal is sent from inside that acquisition, so the timing is exact.
_STOP_INSIDE_WAIT = """
import os, signal, sys
import concurrent.futures._base as futures_base
from ho_co.cli import main

acquire_all = futures_base._AcquireFutures.__enter__
calls = []

def acquire_half_then_signal(self):
    calls.append(1)
    if len(calls) != 3:
        return acquire_all(self)
    half = len(self.futures) // 2
    for future in self.futures[:half]:
        future._condition.acquire()
    os.kill(os.getpid(), signal.SIGINT)
    for future in self.futures[half:]:
        future._condition.acquire()

futures_base._AcquireFutures.__enter__ = acquire_half_then_signal
sys.exit(main(sys.argv[1:]))
"""


def test_a_stop_signal_inside_the_wait_for_workers_ends_the_run(tmp_path):
    inst = save_instances(tmp_path / "t.npz", locs=generate_tsp(10, 100, seed=6))
    out = tmp_path / "r.npz"
    cmd = [sys.executable, "-c", _STOP_INSIDE_WAIT, "solve", "--solver", "exact", "--instances", str(inst),
           "--out", str(out), "--workers", "2"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "run the same command again to resume" in err.strip().splitlines()[-1]
    assert not out.exists() and partial_path(out).exists()


@pytest.fixture
def python_signal_defaults():
    """Python's own SIGINT/SIGTERM handlers, whatever the runner inherited (a runner started in the
    background by a shell inherits SIGINT ignored, and stops_deferred leaves ignored signals alone)."""
    previous = {sig: signal.signal(sig, handler) for sig, handler in
                ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL))}
    yield
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def test_stop_signals_inside_stops_deferred_are_recorded_and_a_second_raises(python_signal_defaults):
    # pthread_kill to this (the main) thread: the handler runs before the call returns; a signal
    # to the process may land in another thread (torch's), whose handler flag a starved box sets late
    with stops_deferred() as stop:
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM  # recorded, nothing raised
        with pytest.raises(KeyboardInterrupt):
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)
            time.sleep(1)  # never reached
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with pytest.raises(Terminated):
        stop.raise_if_stopped()
