"""Progress of the commands: tqdm bars on a terminal, plain lines anywhere else.

On a terminal a bar redraws itself in place.  Written to a file, a pipe, a CI log or under
``nohup``, the same redraws become one line per batch full of ``\\r`` and ``ESC[A`` escapes.
:func:`progress_bar` therefore returns a tqdm bar only when its stream (standard error, where
tqdm writes) is a terminal; otherwise a :class:`LineProgress` with the same methods, which
writes nothing per batch and one plain line per :meth:`~LineProgress.set_postfix` (the
training loops call it once per epoch) on standard error; :meth:`~LineProgress.write` prints a
message on standard output, as ``tqdm.write`` does.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any, TextIO


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an interactive terminal (False for files, pipes, captured output)."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (ValueError, OSError):  # a closed stream
        return False


class LineProgress:
    """The parts of tqdm's interface the commands use, as plain lines on ``stream``."""

    def __init__(self, iterable: Iterable[Any] | None = None, *, total: int | None = None,
                 initial: int = 0, desc: str = "", enabled: bool = True,
                 stream: TextIO | None = None) -> None:  # fmt: skip
        self.iterable = iterable
        self.total = total if total is not None else _length(iterable)
        self.n = initial
        self.desc = desc
        self.enabled = enabled
        self.stream = stream

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.n += 1

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, **values: Any) -> None:
        """One line on the stream: ``desc: n/total steps, key value, ...``."""
        if not self.enabled:
            return
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        fields = ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in values.items())
        stream = self.stream if self.stream is not None else sys.stderr
        print(f"{self.desc}: {done} steps" + (f", {fields}" if fields else ""), file=stream,
              flush=True)  # fmt: skip

    @staticmethod
    def write(message: str) -> None:
        """A message on standard output, shown even without progress (as ``tqdm.write``)."""
        print(message, flush=True)

    def close(self) -> None:
        pass


def _length(iterable: Iterable[Any] | None) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def progress_bar(iterable: Iterable[Any] | None = None, *, total: int | None = None,
                 initial: int = 0, desc: str = "", position: int = 0, leave: bool = False,
                 enabled: bool = True, stream: TextIO | None = None) -> Any:  # fmt: skip
    """A tqdm bar on a terminal, else a :class:`LineProgress` (see the module doc).

    ``stream`` defaults to standard error, read when the bar is made."""
    stream = stream if stream is not None else sys.stderr
    if not enabled or not is_terminal(stream):
        return LineProgress(iterable, total=total, initial=initial, desc=desc, enabled=enabled,
                            stream=stream)  # fmt: skip
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, initial=initial, desc=desc, position=position,
                leave=leave, file=stream, dynamic_ncols=True)  # fmt: skip


__all__ = ["LineProgress", "is_terminal", "progress_bar"]
