"""Import splats made elsewhere: a 3DGS PLY sequence (one file per frame, found by its frame-index pattern, as 4DGS
tools write them), SPZ files (one, or a numbered sequence; through gsply) and ``KHR_gaussian_splatting`` glTF
(static, numbered static files, or POSITION morph targets played by a weights animation).

Each becomes a pla4d 4D asset folder (written by ``pla4d_formats.asset.write_asset``, the engine's own writer) in the
extension's user folder, which :func:`.importer.import_asset` then imports. So a foreign file lands on the timeline
exactly like our own assets, plays through the same frame handler, bakes the same way, and the .blend keeps
working after the source files move (the converted folder stays under the extension's user folder).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import bpy
import numpy as np

from . import importer
from .asset_io import AssetReadError, PlyError, read_gaussian_ply
from .pla4d_formats.asset import ATTRIBUTES, write_asset
from .pla4d_formats.khr_gltf import KhrError, read_khr_gltf
from .pla4d_formats.sequences import SequenceError, find_sequence
from .pla4d_formats.spz import SpzError, read_spz
from .playback import ImportFailedError, forget_asset

SUFFIXES = (".ply", ".spz", ".glb", ".gltf")
_KEYS = ("positions", "rotations", "scales", "opacities", "sh_dc", "sh_rest")


def _read_one(path: Path) -> dict[str, np.ndarray]:
    suffix = path.suffix.lower()
    if suffix == ".ply":
        return read_gaussian_ply(path)
    if suffix == ".spz":
        return read_spz(path)
    return read_khr_gltf(path).canonical


def read_frames(path: str | os.PathLike[str], sequence: bool = True) -> tuple[dict, dict, float | None, list[Path]]:
    """(canonical Gaussians, per-frame arrays that change, fps or None, the files read) of a foreign file.

    With ``sequence``, a file whose name ends in a frame index brings its numbered siblings (same name around the
    digits, same suffix) in index order; a folder brings its largest such group. A glTF with morph targets is a
    sequence by itself. Raises ImportFailedError with a message for the user."""
    p = Path(path).expanduser()
    try:
        if p.is_dir() or sequence:
            files = [f for _i, f in find_sequence(p, SUFFIXES)]
        else:
            files = [p]
        if not files:
            raise ImportFailedError(f"{p}: nothing to import")
        if len(files) == 1 and files[0].suffix.lower() in (".glb", ".gltf"):
            read = read_khr_gltf(files[0])
            return read.canonical, dict(read.arrays), read.fps, files
        frames = [_read_one(f) for f in files]
    except (SequenceError, PlyError, SpzError, KhrError, AssetReadError, OSError) as exc:
        raise ImportFailedError(str(exc)) from None
    first = frames[0]
    n = first["positions"].shape[0]
    for f, frame in zip(files, frames, strict=True):
        if frame["positions"].shape[0] != n:
            raise ImportFailedError(
                f"{f.name} holds {frame['positions'].shape[0]} Gaussians and {files[0].name} {n}: the frames of a "
                "sequence must hold the same Gaussians in the same order"
            )
    canonical = {key: first[key] for key in _KEYS}
    arrays: dict[str, np.ndarray] = {}
    if len(frames) > 1:
        for name in ATTRIBUTES:
            stack = np.stack([np.asarray(f[name], np.float32) for f in frames])
            if name == "positions" or not np.array_equal(stack, np.broadcast_to(stack[:1], stack.shape)):
                arrays[name] = stack
    return canonical, arrays, None, files


def _cache_folder(source: Path) -> Path:
    """Where the converted asset goes: the extension's user folder, one sub-folder per source path."""
    key = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:12]
    base = Path(bpy.utils.extension_path_user(__package__, path="imports", create=True))
    return base / f"{source.stem[:40]}-{key}"


def convert(path: str | os.PathLike[str], sequence: bool = True, fps: float = 24.0,
            folder: str | os.PathLike[str] | None = None) -> Path:  # fmt: skip
    """Write the foreign splats at ``path`` as a pla4d asset folder (default: in the extension's user folder);
    returns the folder. ``fps`` is used when the file carries none."""
    source = Path(path).expanduser()
    canonical, arrays, file_fps, files = read_frames(source, sequence)
    if "positions" not in arrays:
        arrays["positions"] = canonical["positions"][None]
    target = Path(folder) if folder is not None else _cache_folder(files[0] if len(files) > 1 else source)
    meta = {"prompt": None, "source": str(source), "source_files": [str(f) for f in files[:2]] + (
        [f"... {len(files)} files"] if len(files) > 2 else [])}  # fmt: skip
    try:
        return write_asset(target, canonical, arrays, file_fps or fps, meta=meta)
    except (ValueError, OSError) as exc:
        raise ImportFailedError(f"cannot convert {source}: {exc}") from None


def import_foreign(context: Any, path: str | os.PathLike[str], sequence: bool = True, fps: float = 24.0) -> list[Any]:
    """Convert and import foreign splats (module docstring); returns the created objects."""
    folder = convert(path, sequence, fps)
    forget_asset(folder)  # a re-import of the same source replaced the folder
    created = importer.import_asset(context, str(folder), "GAUSSIANS")
    for obj in created:
        obj.name = "pla4d " + Path(path).stem[:40]
    return created
