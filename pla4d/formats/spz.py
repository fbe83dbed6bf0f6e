"""Niantic's compressed SPZ splat format, through the maintained ``gsply`` library (MIT; numpy + numba), not a codec of
our own. ``gsply`` is imported when a function here is first called, so the rest of this package (and the Blender
add-on, which vendors it but does not bundle gsply: numba's llvmlite would add ~150 MB to the extension) works without
it; a missing library raises :class:`SpzError` saying so. No smaller SPZ library can be bundled instead (checked on PyPI
in December 2026): Niantic's own Python bindings are not published there, the ``spz`` project is a Rust sdist without
wheels, ``alspz`` has a Windows wheel only, and ``gaussforge`` 0.6.0 (Apache-2.0, Niantic's C++ codec; decodes our files
as gsply does, to float32 rounding) has cp311 wheels for Windows, Linux and Apple-silicon macOS but none for Intel
macOS, which the add-on supports.

gsply writes the legacy gzip container, version 3 (Niantic's ``load-spz.cc`` layout: 16-byte header, then
positions, alphas, colours, scales, rotations, SH in one gzip stream) and reads versions 1-4. SPZ's frame is
RUB (right, up, back: glTF's), which is ours (+Y up, front +Z), so nothing is rotated either way.

Quantisation per field (version 3, 12 fractional bits; the round-trip test checks each bound):

=========== ================================= ====================================================================
field       stored as                         worst-case error
=========== ================================= ====================================================================
positions   24-bit fixed point, step 2^-12    1.22e-4 units (half a step); range +-2048 units
opacities   8-bit ``sigmoid(logit)``          0.002 in opacity (half of 1/255)
colour (DC) 8-bit ``dc * 0.15 * 255 + 127.5`` 0.0131 in the DC coefficient = 0.0037 in the sRGB colour
scales      8-bit ``(log_scale + 10) * 16``   0.031 in log-scale (3.2% relative); range exp(-10) .. exp(5.9)
rotations   "smallest three", 9 bits + sign  7e-4 per component of the unit quaternion (about 0.1 degree)
SH rest     8-bit ``sh * 128 + 128``          0.0039 per coefficient; range [-1, 0.99]
=========== ================================= ====================================================================
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SpzError", "read_spz", "spz_available", "write_spz"]


class SpzError(ValueError):
    """An SPZ file cannot be read or written (no gsply, not an SPZ file); the message says which and why."""


def _gsply() -> Any:
    try:
        import gsply
    except ImportError as exc:
        raise SpzError(
            f"SPZ needs the gsply library ({exc}); install it with `python -m pip install gsply` (for the Blender "
            "add-on: with Blender's own Python, in Blender's python/bin folder)"
        ) from None
    return gsply


def spz_available() -> bool:
    """Whether gsply can be imported here."""
    try:
        _gsply()
    except SpzError:
        return False
    return True


def write_spz(
    path: str | os.PathLike[str],
    positions: np.ndarray,
    rotations: np.ndarray,
    scales: np.ndarray,
    opacities: np.ndarray,
    sh_dc: np.ndarray,
    sh_rest: np.ndarray | None = None,
) -> Path:
    """Write one SPZ file (version 3) atomically from Gaussians in the storage convention (log-scales, opacity
    logits, (w, x, y, z) quaternions, SH DC; ``pla4d_formats.ply`` keys). Quaternions are normalised first (SPZ
    stores unit ones). Raises ValueError for non-finite values."""
    gsply = _gsply()
    from gsply.gsdata import GSData

    n = int(np.shape(positions)[0])
    q = np.asarray(rotations, np.float32).reshape(n, 4)
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    q = np.where(norm > 1e-12, q / np.maximum(norm, 1e-30), np.array([1.0, 0.0, 0.0, 0.0], np.float32))
    rest = None if sh_rest is None or np.size(sh_rest) == 0 else np.asarray(sh_rest, np.float32).reshape(n, -1, 3)
    arrays = [np.asarray(positions, np.float32), q, np.asarray(scales, np.float32),
              np.asarray(opacities, np.float32), np.asarray(sh_dc, np.float32)]  # fmt: skip
    if not all(np.isfinite(a).all() for a in arrays) or (rest is not None and not np.isfinite(rest).all()):
        raise ValueError(f"non-finite Gaussian parameters; not writing {path}")
    data = GSData(means=arrays[0].reshape(n, 3), quats=q.astype(np.float32), scales=arrays[2].reshape(n, 3),
                  opacities=arrays[3].reshape(n), sh0=arrays[4].reshape(n, 3), shN=rest)  # fmt: skip

    # gsply writes to a path: a temporary file beside the target, renamed onto it once complete.
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".spz", dir=path.parent)
    os.close(fd)
    try:
        gsply.write_spz(tmp, data, version=3)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_spz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """An SPZ file (versions 1-4) as float32 arrays in the storage convention (``pla4d_formats.ply`` keys).
    Raises :class:`SpzError` for a file gsply cannot read, OSError when it cannot be opened."""
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head[:2] != b"\x1f\x8b" and head != b"NGSP":
        raise SpzError(f"{path} is not an SPZ file (neither gzip nor NGSP)")
    gsply = _gsply()
    try:
        data = gsply.read_spz(path)
    except (ValueError, EOFError, OSError) as exc:
        raise SpzError(f"{path}: not a readable SPZ file ({exc})") from None
    n = int(data.means.shape[0])
    rest = data.shN
    return {
        "positions": np.ascontiguousarray(data.means, np.float32),
        "rotations": np.ascontiguousarray(data.quats, np.float32),
        "scales": np.ascontiguousarray(data.scales, np.float32),
        "opacities": np.ascontiguousarray(np.reshape(data.opacities, n), np.float32),
        "sh_dc": np.ascontiguousarray(data.sh0, np.float32),
        "sh_rest": np.zeros((n, 0, 3), np.float32) if rest is None else np.ascontiguousarray(rest, np.float32),
    }
