"""`solve_instances`: run one solver over a batch, in worker processes, resumable and cached.

- Workers are separate processes, always (even for one worker): Concorde's C code can crash
  (SIGFPE on 3 nodes), highspy and ortools cannot share a process, and the parent never loads
  either. They are forked from a clean "forkserver" process (spawn where there is none) that
  has imported this module once, so a worker starts in milliseconds instead of re-importing
  ho_co (and torch) each time. A crashed worker ends the run with an error; finished
  instances are kept.
- Resume: every finished instance is appended at once to ``OUT.partial.jsonl``; a killed run
  started again with the same instances and solver skips what is there.
- Stopping: SIGINT, or SIGTERM (unless the program handles SIGTERM itself), kills every worker
  and the solver processes they started, keeps the partial file, and then raises
  KeyboardInterrupt (`Terminated` for SIGTERM) in the parent. While workers run, the signal is
  only recorded and acted on between waits: an exception raised at an arbitrary point inside
  concurrent.futures' `wait` can leave a future's lock held, and the pool's shutdown then
  waits forever. A second signal raises at once. Workers ignore SIGINT (the parent ends them)
  and, on Linux, die with their parent even when it is killed outright.
- Cache: the result file records the SHA-256 of the instance arrays, the solver and the time
  limit; asking again for the same returns the file's content without solving anything.
- Every instance is solved on its cost matrix, the instances' own metric (TSPLIB's rounding
  included); lengths are recomputed here in float64 (`problems.tours.tour_lengths`) and every
  tour is checked to be a permutation, whatever the solver's own arithmetic was.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

import numpy as np

from ho_co.problems.instances import Instances, validate
from ho_co.problems.references import References
from ho_co.problems.tours import check_tours, tour_lengths
from ho_co.solvers.registry import SolverSpec, get_solver
from ho_co.solvers.stopping import stops_deferred

log = logging.getLogger(__name__)

CHUNK_MAX = 16  # instances per task: coarse enough to amortize pickling, fine enough to resume
STOP_POLL_S = 0.1  # how often the parent, waiting on workers, looks for a stop signal


def default_out(solver: str, digest: str, time_limit: float | None) -> Path:
    """Where results go when no file is named: ``$HO_CO_CACHE`` or ``~/.cache/ho-co``."""
    root = Path(os.environ.get("HO_CO_CACHE", "~/.cache/ho-co")).expanduser()
    limit = "" if time_limit is None else f"-t{time_limit:g}"
    return root / "references" / f"{solver}{limit}-{digest[:20]}.npz"


def solve_instances(solver: str, instances: Instances, *, out=None, workers: int = 1,
                    time_limit: float | None = None, progress: bool = True) -> References:
    """Tours for every instance, each solved on its cost matrix (the instances' own metric).

    Results are written to ``out`` (default: a cache file named by solver and instance hash),
    which doubles as the cache: the same request again returns it without solving. `progress`
    shows a progress bar on stderr; a cache hit, a replaced file and a resume are INFO records of
    this module's logger (`ho-co solve` shows them on stderr).
    """
    spec = get_solver(solver)  # unknown or not installed: a clear error before any work
    cost = instances.cost_matrix
    validate(cost, "cost_matrix", "solve_instances")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if time_limit is not None and not (np.isfinite(time_limit) and time_limit > 0):
        raise ValueError(f"time_limit must be a positive, finite number of seconds, got {time_limit}")
    size, n = cost.shape[:2]
    digest = instances.digest
    out = Path(out) if out is not None else default_out(solver, digest, time_limit)
    limit = float("nan") if time_limit is None else float(time_limit)

    cached = _cached(out, digest, solver, limit)
    if cached is not None:
        log.info("%s: cached %s references for these instances", out, solver)
        return cached
    if out.exists():
        log.info("%s: holds other references (instances, solver or time limit differ): solving again and "
                 "replacing it", out)

    partial = partial_path(out)
    header = {"instances_hash": digest, "solver": solver, "time_limit": time_limit, "size": size}
    done = _read_partial(partial, header, n)
    if done:
        log.info("%s: resuming, %d/%d instances already solved", partial, len(done), size)
    todo = [b for b in range(size) if b not in done]
    if todo:
        _run_workers(spec, cost, todo, time_limit, workers, partial, header, done, progress)

    tours = np.stack([done[b][0] for b in range(size)])
    check_tours(tours, n)
    refs = References(tours=tours, lengths=tour_lengths(cost, tours),
                      optimal=np.array([done[b][1] for b in range(size)], dtype=bool),
                      method=np.array([done[b][2] for b in range(size)], dtype=str),
                      solver=solver, instances_hash=digest, time_limit=limit)
    refs.save(out)
    partial.unlink(missing_ok=True)
    return refs


def partial_path(out) -> Path:
    """Where a run writing ``out`` keeps its finished instances until it completes."""
    out = Path(out)
    return out.with_name(out.name + ".partial.jsonl")


def _cached(out: Path, digest: str, solver: str, limit: float) -> References | None:
    if not out.exists():
        return None
    try:
        refs = References.load(out)
    except (OSError, ValueError):
        return None
    same_limit = (np.isnan(limit) and np.isnan(refs.time_limit)) or limit == refs.time_limit
    if refs.instances_hash == digest and refs.solver == solver and same_limit:
        return refs
    return None


def _read_partial(partial: Path, header: dict, n: int) -> dict:
    """Finished instances from an earlier run of the same request; a torn last line is dropped."""
    if not partial.exists():
        return {}
    lines = partial.read_text().splitlines()
    try:
        if not lines or json.loads(lines[0]) != header:
            return {}  # another request wrote it: start over
    except json.JSONDecodeError:
        return {}
    done = {}
    for line in lines[1:]:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            break  # killed mid-write
        tour = np.asarray(rec["tour"], dtype=np.int64)
        if tour.shape == (n,):
            done[int(rec["i"])] = (tour, bool(rec["optimal"]), str(rec["method"]))
    return done


def _run_workers(spec: SolverSpec, cost, todo, time_limit, workers, partial, header, done,
                 progress) -> None:
    if not done or not partial.exists():
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(header) + "\n")
    per_task = int(np.clip(len(todo) // (workers * 20), 1, CHUNK_MAX))
    chunks = [todo[k:k + per_task] for k in range(0, len(todo), per_task)]
    bar = _progress_bar(progress, spec.name, len(done) + len(todo), len(done))
    with stops_deferred() as stop:
        pool = ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=_context(),
                                   initializer=_worker_init)
        try:
            with open(partial, "a") as lines:
                pending = {pool.submit(_solve_chunk, spec, [(b, cost[b]) for b in c], time_limit)
                           for c in chunks}
                while pending and stop.signum is None:
                    finished, pending = wait(pending, timeout=STOP_POLL_S, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        _log_chunk(fut.result(), done, lines)
                        if bar is not None:
                            bar[0].update(bar[1], completed=len(done))
            stop.raise_if_stopped()
        except BrokenProcessPool as err:
            raise RuntimeError(
                f"a {spec.name} worker process died (a crash in the solver's C code?); the "
                f"{len(done)} finished instances are kept in {partial}: run again to resume, "
                "or use another solver") from err
        except BaseException:
            _end_workers(pool)  # an error or a signal: no worker outlives the run
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if bar is not None:
                bar[0].stop()
    stop.raise_if_stopped()  # a stop that came after the last wait, during the shutdown


def _log_chunk(results, done: dict, lines) -> None:
    for b, tour, optimal, method in results:
        done[b] = (tour, optimal, method)
        lines.write(json.dumps({"i": b, "tour": tour.tolist(), "optimal": optimal,
                                "method": method}) + "\n")
    lines.flush()


def _worker_init() -> None:
    """Runs first in each worker: SIGINT (a terminal's Ctrl-C reaches the whole process group)
    is left to the parent, which ends the workers; the worker leads its own process group, so
    ending it ends a solver executable it started; on Linux it dies with its parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        os.setpgrp()
    except OSError:
        pass
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG


def _end_workers(pool: ProcessPoolExecutor) -> None:
    """SIGKILL every worker's process group (the worker and what it started), at once: a solver
    deep in C code would not notice a gentler signal until it finished."""
    for pid in list(getattr(pool, "_processes", None) or {}):
        for kill in (os.killpg, os.kill):  # a worker not yet in its own group: itself
            try:
                kill(pid, signal.SIGKILL)
                break
            except (ProcessLookupError, PermissionError):
                continue


def _context():
    if "forkserver" not in get_all_start_methods():
        return get_context("spawn")
    ctx = get_context("forkserver")
    ctx.set_forkserver_preload([__name__, "ho_co.solvers.concorde"])  # no highspy, no ortools
    return ctx


def _solve_chunk(spec: SolverSpec, items, time_limit):
    """Runs in a worker: solve a few instances with the spec's solver function (imported here,
    so the parent never loads a solver's package)."""
    fn = spec.function()
    results = []
    for b, cost in items:
        try:
            sol = fn(cost, time_limit)
        except Exception as err:
            raise RuntimeError(f"{spec.target} failed on instance {b}: {type(err).__name__}: {err}") from err
        results.append((b, np.asarray(sol.tour, dtype=np.int64), bool(sol.optimal), str(sol.method)))
    return results


def _progress_bar(enabled: bool, label: str, total: int, completed: int):
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, \
        TimeRemainingColumn

    bar = Progress("[bold]{task.description}", BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True))
    task = bar.add_task(label, total=total, completed=completed)
    bar.start()
    return bar, task

