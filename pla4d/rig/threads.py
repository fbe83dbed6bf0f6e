"""One BLAS thread for the rig's fit: its matrix products are small and many, and numpy's OpenBLAS threads spin
while they wait, so on a shared or busy CPU two threads cost twice the CPU time and more wall time than one
(khr_fox_walk, 23k points, 24 bones, on this machine's 2 shared cores: 33 s CPU / 81 s wall with 2 threads,
13 s CPU / 35 s wall with 1). numpy has no API for it; this calls OpenBLAS's own setter through ctypes."""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator
from pathlib import Path

import numpy as np

_NAMES = ("scipy_openblas_{}_num_threads64_", "scipy_openblas_{}_num_threads", "openblas_{}_num_threads64_",
          "openblas_{}_num_threads")  # fmt: skip


def _openblas() -> tuple[object, object] | None:
    libs = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for path in sorted(libs.glob("*openblas*.so*")):
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:
            continue
        for name in _NAMES:
            getter, setter = getattr(lib, name.format("get"), None), getattr(lib, name.format("set"), None)
            if getter is not None and setter is not None:
                return getter, setter
    return None


@contextlib.contextmanager
def single_blas_thread() -> Iterator[None]:
    """Within the block numpy's OpenBLAS uses one thread (a no-op where it cannot be found)."""
    found = _openblas()
    if found is None:
        yield
        return
    getter, setter = found
    before = int(getter())
    setter(1)
    try:
        yield
    finally:
        setter(before)
