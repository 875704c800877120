"""Copy a uv/pip-compile lock, leaving out the packages only torch's CUDA build needs.

``python scripts/drop_cuda_pins.py IN OUT``: drops ``nvidia-*``, ``cuda-*`` and ``triton`` pins
(with their ``# via`` lines).  The project pins the CPU torch wheel separately; a constraint on a
package that is never installed is harmless but misleading in a lock.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

CUDA_ONLY = re.compile(r"^(nvidia-[\w.-]+|cuda-[\w.-]+|triton)==")


def main(source: str, target: str) -> None:
    out: list[str] = []
    dropping = False
    for line in Path(source).read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            dropping = bool(CUDA_ONLY.match(line))
        if not dropping:
            out.append(line)
    Path(target).write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:3])
