"""The add-on's door to pla4d's file formats: 4D assets (docs/asset-format.md), 3DGS PLY, sRGB and Blender's axes.

The formats themselves live in ``pla4d_formats``, a copy of the engine's ``pla4d/formats`` package that
``build_addon.py`` puts into the extension unchanged (numpy and plyfile only, no bpy, no torch), so the add-on
reads and writes exactly what the engine does. This module re-exports the names the other modules use and adds the
add-on's own bpy-free glue: finding an asset from whatever folder or file the user picked.

The per-frame arrays are memory-mapped (``np.memmap``): opening a large asset costs the header parse (plus the
optional sha256 pass), and a frame pages in only when the timeline lands on it. Every problem with a folder raises
:class:`AssetReadError` with a message naming the folder and the problem, which the operators show as is.
"""

from __future__ import annotations

import os
from pathlib import Path

from .pla4d_formats.asset import (
    ATTRIBUTES,
    CANONICAL_FILE,
    FORMAT_NAME,
    META_FILE,
    Asset,
    MeshData,
    read_asset,
)
from .pla4d_formats.asset import AssetError as AssetReadError
from .pla4d_formats.axes import (
    opacities_from_blender,
    opacities_to_blender,
    positions_from_blender,
    positions_to_blender,
    rotations_from_blender,
    rotations_to_blender,
    scales_from_blender,
    scales_to_blender,
)
from .pla4d_formats.colour import SH_C0, linear_rgb_to_sh_dc, linear_to_srgb, sh_dc_to_linear_rgb, srgb_to_linear
from .pla4d_formats.ply import PlyError, read_gaussian_ply, write_gaussian_ply, write_ply_sequence

__all__ = [
    "ATTRIBUTES",
    "CANONICAL_FILE",
    "FORMAT_NAME",
    "META_FILE",
    "SH_C0",
    "Asset",
    "AssetReadError",
    "MeshData",
    "find_asset",
    "linear_rgb_to_sh_dc",
    "linear_to_srgb",
    "opacities_from_blender",
    "opacities_to_blender",
    "open_asset",
    "positions_from_blender",
    "positions_to_blender",
    "read_gaussian_ply",
    "rotations_from_blender",
    "rotations_to_blender",
    "scales_from_blender",
    "scales_to_blender",
    "sh_dc_to_linear_rgb",
    "srgb_to_linear",
    "write_gaussian_ply",
    "write_ply_sequence",
]


def find_asset(path: str | os.PathLike[str]) -> Path:
    """The asset folder (or PLY file) that ``path`` names: an asset folder, its ``asset.json``, a run folder
    holding ``asset/``, a job download holding ``asset/``, or a 3DGS ``.ply`` file."""
    p = Path(path).expanduser()
    if p.is_file() and p.name == META_FILE:
        return p.parent
    if p.is_file() and p.suffix.lower() == ".ply":
        return p
    if p.is_dir():
        if (p / META_FILE).is_file():
            return p
        if (p / "asset" / META_FILE).is_file():
            return p / "asset"
        if (p / CANONICAL_FILE).is_file():
            return p / CANONICAL_FILE  # a static-stage result (lift job): one frame
        raise AssetReadError(
            f"{p} is not a pla4d 4D asset (no {META_FILE} there or in {p / 'asset'}), or its write did not finish"
        )
    raise AssetReadError(f"{p} does not exist")


def open_asset(path: str | os.PathLike[str], verify: bool = True) -> Asset:
    """Open a 4D asset folder (or anything :func:`find_asset` accepts); ``verify`` checks every file's sha256.
    A lone 3DGS PLY opens as a one-frame asset."""
    target = find_asset(path)
    if target.is_file():
        try:
            canonical = read_gaussian_ply(target)
        except (PlyError, OSError) as exc:
            raise AssetReadError(str(exc)) from None
        meta = {"format": FORMAT_NAME, "frame_count": 1, "fps": 24.0, "start_frame": 0, "prompt": None,
                "source": str(target)}  # fmt: skip
        return Asset(target, meta, canonical)
    return read_asset(target, verify=verify)
