"""Ends what a SIGKILLed sweep driver leaves behind of the local Ray cluster it started.

Ray's head processes die with the driver that started them, but two of the raylet's agents
(``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) were measured to outlive a SIGKILLed driver
by minutes (Ray 2.60).  :func:`start_reaper` starts this module as a child process that, while
the driver lives, records the driver's descendants every half second (pid and start time, from
``/proc``); when the driver is gone it SIGKILLs those still running (the start time guards
against a reused pid) and exits.  Linux only (elsewhere nothing is started).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

POLL_SECONDS = 0.5


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of ``pid``; None if it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else (int(fields[1]), int(fields[19]))


def descendants(root: int) -> dict[int, int]:
    """Every running descendant of ``root``: pid → start time."""
    parents: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (info := _stat(int(entry.name))) is not None:
            parents.setdefault(info[0], []).append((int(entry.name), info[1]))
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for pid, started in parents.get(todo.pop(), []):
            if pid not in found:
                found[pid] = started
                todo.append(pid)
    return found


def watch(driver: int) -> None:
    """Record ``driver``'s descendants while it lives; then kill those still running."""
    me = os.getpid()
    seen: dict[int, int] = {}
    ready = False
    while _stat(driver) is not None:
        seen.update({p: s for p, s in descendants(driver).items() if p != me})
        if not ready:  # the first record is taken: the driver may go on
            print("ready", flush=True)
            ready = True
        time.sleep(POLL_SECONDS)
    for pid, started in seen.items():
        info = _stat(pid)
        if info is not None and info[1] == started:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def start_reaper() -> subprocess.Popen | None:
    """A reaper watching this process, once it has recorded its descendants (None where
    ``/proc`` is missing).  Run as a script: it imports nothing but the standard library."""
    if not Path("/proc/self/stat").exists():
        return None
    reaper = subprocess.Popen([sys.executable, __file__, str(os.getpid())],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)  # fmt: skip
    reaper.stdout.readline()  # "ready" (or "" if it could not start: nothing to wait for)
    return reaper


if __name__ == "__main__":
    watch(int(sys.argv[1]))
