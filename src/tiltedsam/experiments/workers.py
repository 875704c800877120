"""A process pool whose workers die with the process that started them (``sweep --workers N``).

A ``ProcessPoolExecutor`` worker outlives a parent killed with SIGKILL (it is re-parented and
trains on for as long as it has work), and on SIGTERM the parent died without stopping it.  Here:

* each worker asks the kernel for SIGKILL when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``),
  and checks that the parent is still the one that started it (it may have died before);
* a watchdog thread in each worker polls the parent's pid, the portable fallback;
* in the parent, SIGTERM raises :class:`Terminated` (a ``SystemExit``, status 143) in the main
  thread, and leaving the pool with any exception (SIGTERM, Ctrl-C, an error) kills the workers
  instead of waiting for their runs to finish.

A killed worker loses the epoch in progress only: checkpoints are written atomically, and run
claims are ``flock`` s the kernel drops with the process, so a restarted sweep finds the runs free
(and, should a worker still be alive, waits for it rather than training the run twice).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCHDOG_SECONDS = 0.5


class Terminated(SystemExit):
    """The process received SIGTERM (exit status 143, as the signal's default would give)."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


def _die_with(parent: int) -> None:
    """Worker initializer: end this process when ``parent`` ends."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl: the watchdog remains
            pass
    if os.getppid() != parent:  # the parent died before the request above
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(WATCHDOG_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="tiltedsam-parent-watchdog", daemon=True).start()


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def _kill_workers(before: set[multiprocessing.process.BaseProcess]) -> None:
    """Kill the multiprocessing children started since ``before`` (the pool's workers) and
    reap them."""
    children = [c for c in multiprocessing.active_children() if c not in before]
    for child in children:
        child.kill()
    for child in children:
        child.join(timeout=5)


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A ``ProcessPoolExecutor`` of ``workers`` processes that die with this one (module doc);
    while it is open, SIGTERM to this process ends it with :class:`Terminated`."""
    before = set(multiprocessing.active_children())
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_die_with,
                               initargs=(os.getpid(),))  # fmt: skip
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if main else None
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        _kill_workers(before)
        raise
    else:
        pool.shutdown(wait=True)
    finally:
        if main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


__all__ = ["Terminated", "worker_pool"]
