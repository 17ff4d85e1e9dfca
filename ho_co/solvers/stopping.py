"""How a long solve stops on SIGINT or SIGTERM: as an exception the caller's cleanup catches,
raised only where the caller is ready for it.

Python raises SIGINT's KeyboardInterrupt at whatever bytecode the main thread is running. Inside
a library that holds locks (concurrent.futures' `wait` acquires every future's lock in a loop)
that can leave a lock held for good. `stops_deferred` records the signal instead, for the caller
to raise at a safe point; `sigterm_raises` gives SIGTERM the same exception path as SIGINT.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like SIGINT's KeyboardInterrupt so the same cleanup runs."""

    signum = signal.SIGTERM


def _raise_terminated(signum, frame):
    raise Terminated()


def _stop_exception(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


@contextmanager
def sigterm_raises():
    """While inside, SIGTERM raises `Terminated` (where SIGTERM still has its default action,
    in the main thread; elsewhere it is left alone)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


class StopRequest:
    """The stop signal received inside `stops_deferred` (None until one arrives)."""

    def __init__(self):
        self.signum: int | None = None

    def raise_if_stopped(self) -> None:
        if self.signum is not None:
            raise _stop_exception(self.signum)


@contextmanager
def stops_deferred():
    """While inside, SIGINT and SIGTERM that would raise (SIGINT's KeyboardInterrupt, SIGTERM at
    its default action or under `sigterm_raises`) are recorded in the yielded `StopRequest`
    instead, for the caller to act on at a safe point; a second one raises at once. Outside the
    main thread, and for signals the program handles itself, nothing changes."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    raising = {signal.SIGINT: (signal.default_int_handler,),
               signal.SIGTERM: (signal.SIG_DFL, _raise_terminated)}
    previous = {sig: signal.getsignal(sig) for sig in raising}
    deferred = [sig for sig in raising if previous[sig] in raising[sig]]

    def record(signum, frame):
        if stop.signum is not None:
            raise _stop_exception(signum)
        stop.signum = signum

    for sig in deferred:
        signal.signal(sig, record)
    try:
        yield stop
    finally:
        for sig in deferred:
            signal.signal(sig, previous[sig])
