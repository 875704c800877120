"""The figures' common look: one matplotlib style, label wrapping and the atomic save.

:func:`paper_style` gives ``matplotlib.pyplot`` (headless Agg backend) with type that is
readable at 100 % (10-11 pt at 150 dpi) and a light grid; :func:`wrap` breaks a long legend or
tick label over lines instead of cutting it; :func:`finish` lays the figure out and writes it
through :func:`tiltedsam._files.save_figure` (atomically).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tiltedsam._files import save_figure

STYLE = {
    "figure.dpi": 150,
    "savefig.dpi": 150,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
}


@contextmanager
def paper_style() -> Iterator[Any]:
    """``matplotlib.pyplot`` (Agg backend) with :data:`STYLE`, for the figures drawn inside."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.rc_context(STYLE):
        yield plt


def wrap(label: str, width: int = 28) -> str:
    """A legend or tick label on several lines, broken after commas and at spaces, never cut
    (a non-breaking space keeps ``n = 3`` together)."""
    lines: list[str] = []
    for token in re.findall(r"[^, ]+,? ?|[, ]", label):
        if lines and len(lines[-1] + token.rstrip()) <= width:
            lines[-1] += token
        else:
            lines.append(token)
    return "\n".join(line.strip() for line in lines if line.strip())


def count(n: int) -> str:
    """``(n = 3)`` with non-breaking spaces, for legends and tick labels."""
    return f"(n\u00a0=\u00a0{n})"


def finish(fig: Any, plt: Any, path: str | Path) -> Path:
    """Tight layout, write ``path`` (PNG, atomically), close the figure; returns ``path``."""
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return Path(path)


__all__ = ["STYLE", "count", "finish", "paper_style", "wrap"]
