"""Run chatty C code quietly: file descriptors 1 and 2 redirected, inside a private temp dir.

Concorde's C code prints to stdout and stderr (LP warnings such as "No dual change in basis
finding code" appear even when it returns the optimum) and writes scratch files into the
current directory. Redirecting ``sys.stdout`` is not enough for C's ``printf``: the descriptors
themselves are swapped, C's stdio buffers are flushed before they are put back (otherwise the
buffered text reaches the terminal later), and the captured text is kept for error messages.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile
from pathlib import Path

_libc = ctypes.CDLL(None)


class Captured:
    """Text the C code wrote while silenced (read it after the ``with`` block)."""

    text: str = ""

    def tail(self, n: int = 800) -> str:
        return self.text[-n:].strip()


@contextlib.contextmanager
def silenced_in_tempdir():
    """Yield ``(workdir, captured)``: cwd is a fresh temp dir, fds 1 and 2 go to a log file."""
    captured = Captured()
    old_cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="ho-co-solver-") as tmp:
        log_path = Path(tmp) / "c_output.log"
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        saved = [os.dup(1), os.dup(2)]
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            os.chdir(tmp)
            yield Path(tmp), captured
        finally:
            _libc.fflush(None)  # C's stdio buffers, before the descriptors go back
            os.chdir(old_cwd)
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in (*saved, log_fd):
                os.close(fd)
            captured.text = log_path.read_text(errors="replace")
