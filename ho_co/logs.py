"""ho-co's log messages on a terminal: the library logs (logger "ho_co"), a command shows.

Shared by the command line and the worker processes that a command starts (they have no
command line of their own), so neither imports the other.
"""

from __future__ import annotations

import logging
import sys


class InfoOnStderr:
    """ho-co's own INFO messages (what was adapted, the data sizes) on stderr while a command runs."""

    def __enter__(self):
        self.logger, self.handler = logging.getLogger("ho_co"), logging.StreamHandler(sys.stderr)
        self.handler.setFormatter(logging.Formatter("%(message)s"))
        self.level = self.logger.level
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)
