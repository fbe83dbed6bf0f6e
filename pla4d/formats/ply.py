"""Gaussians in the standard 3DGS PLY layout (read and written through ``plyfile``), and PLY sequences.

The layout the Inria code, gsplat's tools, SuperSplat, the Blender 3DGS add-ons and the web viewers all read:
one ``vertex`` element, binary little-endian float32 properties in this order::

    x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 f_rest_0 ... f_rest_{3K-1}
    opacity scale_0 scale_1 scale_2 rot_0 rot_1 rot_2 rot_3

``opacity`` is the logit, ``scale_*`` are log-scales, ``rot_*`` the (w, x, y, z) quaternion (not necessarily
normalised), ``nx ny nz`` are zeros, and ``f_rest`` is channel-major as 3DGS writes it (all red coefficients of
degrees >= 1, then green, then blue): ``f_rest_{c * K + k} = sh_rest[:, k, c]`` with ``K = (d+1)^2 - 1``.

Gaussians travel as a dict of numpy arrays in that storage convention, keyed like the arguments of
:func:`write_gaussian_ply`: ``positions`` (N, 3), ``rotations`` (N, 4), ``scales`` (N, 3), ``opacities`` (N,),
``sh_dc`` (N, 3) and ``sh_rest`` (N, K, 3).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import plyfile

from .files import atomic_write

__all__ = [
    "GAUSSIAN_KEYS",
    "PlyError",
    "property_names",
    "read_gaussian_ply",
    "sequence_frames",
    "write_gaussian_ply",
    "write_ply_sequence",
]

GAUSSIAN_KEYS = ("positions", "rotations", "scales", "opacities", "sh_dc", "sh_rest")
_REQUIRED = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
             "rot_0", "rot_1", "rot_2", "rot_3")  # fmt: skip


class PlyError(ValueError):
    """A file is not a readable 3DGS PLY; the message names the path and the problem."""


def property_names(num_rest: int) -> list[str]:
    """The vertex properties, in file order, of Gaussians with ``num_rest`` SH coefficients per channel past DC."""
    return [
        "x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2",
        *(f"f_rest_{i}" for i in range(3 * num_rest)),
        "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
    ]  # fmt: skip


def write_gaussian_ply(
    path: str | os.PathLike[str],
    positions: np.ndarray,
    rotations: np.ndarray,
    scales: np.ndarray,
    opacities: np.ndarray,
    sh_dc: np.ndarray,
    sh_rest: np.ndarray | None = None,
) -> Path:
    """Write one standard 3DGS PLY, atomically: the data goes to a temporary file beside ``path`` that replaces
    it only once complete. Inputs are in the storage convention and asset axes (+Y up), like
    :func:`read_gaussian_ply` returns them. Raises ValueError for non-finite values (3DGS viewers fail on them)."""
    path = Path(path)
    n = int(np.shape(positions)[0])
    rest = np.zeros((n, 0, 3), np.float32) if sh_rest is None else np.asarray(sh_rest, np.float32)
    num_rest = rest.shape[1]
    names = property_names(num_rest)
    flat = np.empty((n, len(names)), dtype="<f4")
    flat[:, 0:3] = positions
    flat[:, 3:6] = 0.0
    flat[:, 6:9] = sh_dc
    flat[:, 9 : 9 + 3 * num_rest] = rest.transpose(0, 2, 1).reshape(n, 3 * num_rest)  # channel-major
    k = 9 + 3 * num_rest
    flat[:, k] = np.reshape(opacities, -1)
    flat[:, k + 1 : k + 4] = scales
    flat[:, k + 4 : k + 8] = rotations
    if not np.isfinite(flat).all():
        bad = int((~np.isfinite(flat)).any(axis=1).sum())
        raise ValueError(f"{bad} of {n} Gaussians have non-finite parameters; not writing {path}")
    vertex = flat.view(np.dtype([(name, "<f4") for name in names])).reshape(n)
    ply = plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex")], byte_order="<")
    return atomic_write(path, ply.write)


def read_gaussian_ply(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """A 3DGS PLY (any byte order or ASCII, any scalar property types, extra properties ignored) as float32
    arrays in the storage convention (see the module docstring). Raises :class:`PlyError` for a file that is
    not a PLY or does not hold 3DGS Gaussians, OSError when it cannot be opened."""
    path = Path(path)
    with open(path, "rb") as handle:
        if handle.read(3) != b"ply":
            raise PlyError(f"{path} is not a PLY file")
        handle.seek(0)
        try:
            # Memory-mapped where the layout allows (binary, fixed-size records): plyfile's streaming read takes
            # ~9 s for 100k Gaussians, the map ~2 ms. The columns are copied out below, so the map does not outlive
            # this function.
            ply = plyfile.PlyData.read(handle, mmap=True)
        except plyfile.PlyHeaderParseError as exc:
            raise PlyError(f"{path}: bad PLY header ({exc})") from None
        except plyfile.PlyElementParseError as exc:
            state = "truncated" if "end-of-file" in str(exc) else "malformed"
            raise PlyError(f"{path}: PLY data is {state} ({exc})") from None
    not_3dgs = f"{path} is not a 3DGS Gaussian PLY"
    if "vertex" not in [element.name for element in ply.elements]:
        raise PlyError(f"{not_3dgs}: it has no vertex element")
    data = ply["vertex"].data
    names = data.dtype.names or ()
    missing = [p for p in _REQUIRED if p not in names]
    if missing:
        raise PlyError(f"{not_3dgs}: the vertex element lacks {', '.join(missing)}")
    rest_ids = sorted(int(p[7:]) for p in names if p.startswith("f_rest_") and p[7:].isdigit())
    num_rest, rem = divmod(len(rest_ids), 3)
    degree = round(np.sqrt(num_rest + 1)) - 1
    if rem or (degree + 1) ** 2 - 1 != num_rest or rest_ids != list(range(len(rest_ids))):
        raise PlyError(f"{not_3dgs}: {len(rest_ids)} f_rest_* properties do not make a whole SH degree")

    def cols(*keys: str) -> np.ndarray:
        out = np.empty((len(data), len(keys)), np.float32)
        for i, key in enumerate(keys):
            out[:, i] = data[key]
        return out

    rest = cols(*(f"f_rest_{i}" for i in range(3 * num_rest)))
    return {
        "positions": cols("x", "y", "z"),
        "rotations": cols("rot_0", "rot_1", "rot_2", "rot_3"),
        "scales": cols("scale_0", "scale_1", "scale_2"),
        "opacities": np.array(data["opacity"], dtype=np.float32),
        "sh_dc": cols("f_dc_0", "f_dc_1", "f_dc_2"),
        "sh_rest": np.ascontiguousarray(rest.reshape(len(data), 3, num_rest).transpose(0, 2, 1)),
    }


# ---------------------------------------------------------------------------------------------- sequences


def sequence_frames(frame_count: int, frames: Sequence[int] | None = None) -> list[int]:
    """The frames to export: all of them by default; ValueError for none, IndexError for one out of range."""
    chosen = list(range(frame_count)) if frames is None else [int(t) for t in frames]
    if not chosen:
        raise ValueError("no frames chosen")
    bad = [t for t in chosen if not 0 <= t < frame_count]
    if bad:
        raise IndexError(f"frames {bad} out of range: the asset has frames 0..{frame_count - 1}")
    return chosen


def write_ply_sequence(
    out_dir: str | os.PathLike[str],
    frame_count: int,
    gaussians_at: Callable[[int], dict[str, np.ndarray]],
    frames: Sequence[int] | None = None,
    prefix: str = "frame_",
) -> list[Path]:
    """One standard 3DGS PLY per frame (``frame_000.ply``, ...; at least three digits, more past 1000 frames)
    into ``out_dir``: ``gaussians_at(t)`` gives frame t's Gaussians as a dict (module docstring). Returns the
    paths in the order of ``frames`` (default: all ``frame_count`` frames)."""
    out = Path(out_dir)
    chosen = sequence_frames(frame_count, frames)
    width = max(3, len(str(frame_count - 1)))
    return [write_gaussian_ply(out / f"{prefix}{t:0{width}d}.ply", **gaussians_at(t)) for t in chosen]
