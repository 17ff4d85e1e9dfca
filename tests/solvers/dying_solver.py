"""A solver function that dies the way C code can (e.g. Concorde's SIGFPE on 3 nodes); its own
module, so the worker that imports it stays light."""

import os
import signal


def die(cost_matrix, time_limit=None):
    os.kill(os.getpid(), signal.SIGKILL)
