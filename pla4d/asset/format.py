"""The 4D asset for the engine: :class:`Asset4D` (canonical :class:`GaussianModel` plus per-frame numpy arrays)
and :class:`AnimatedMesh`, written and read through :mod:`pla4d.formats.asset`.

The on-disk contract (``docs/asset-format.md``) lives in ``pla4d.formats``, which the Blender add-on vendors
unchanged; this module only converts between the engine's types (torch tensors, ``GaussianModel``, the render
``Mesh``, PIL images) and that package's numpy arrays. Per-frame values use the storage convention of
``canonical.ply`` (log-scales, opacity logits, unnormalised (w, x, y, z) quaternions), so frame t's arrays replace
the model's parameters one for one (:func:`frame_model`).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pla4d import __version__
from pla4d.formats import asset as _disk
from pla4d.formats.asset import ATTRIBUTES, FORMAT_NAME, FORMAT_VERSION, AssetError, frame_byte_range, read_meta
from pla4d.formats.rig import RigData
from pla4d.gaussians.model import GaussianModel
from pla4d.gaussians.ply import model_arrays, model_from_arrays

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "AnimatedMesh",
    "Asset4D",
    "AssetError",
    "asset_from_models",
    "frame_byte_range",
    "frame_model",
    "read_asset",
    "read_meta",
    "write_asset",
]

# GaussianModel parameter each attribute replaces (same storage convention as canonical.ply).
_PARAM_OF = {"positions": "means", "rotations": "quats", "scales": "log_scales", "opacities": "opacity_logits"}


# ----------------------------------------------------------------------------------------------- data classes


def _as_array(value: Any, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    return arr


@dataclass
class AnimatedMesh(_disk.MeshData):
    """A mesh with constant topology and one vertex-position set per frame, checked on construction.

    ``faces`` (F, 3) vertex indices; ``positions`` (T, V, 3) in the world frame (+Y up); ``vertex_colors``
    (V, 3) LINEAR RGB in [0, 1] (as glTF COLOR_0); ``uvs`` (V, 2) in the glTF convention with ``texture``
    (H, W, 3) uint8 sRGB, decoded (the format package's :class:`MeshData` holds the PNG file instead).
    Colours and UVs do not change over time.
    """

    faces: np.ndarray
    positions: np.ndarray
    vertex_colors: np.ndarray | None = None
    uvs: np.ndarray | None = None
    texture: np.ndarray | None = None

    def __post_init__(self) -> None:
        faces = _as_array(self.faces, "mesh faces")
        if faces.ndim != 2 or faces.shape[1] != 3 or faces.dtype.kind not in "iu":
            raise ValueError(f"mesh faces must be (F, 3) integers, got {faces.shape} {faces.dtype}")
        pos = _as_array(self.positions, "mesh positions")
        if pos.ndim != 3 or pos.shape[2] != 3 or pos.shape[0] < 1:
            raise ValueError(f"mesh positions must be (T, V, 3) with T >= 1, got {pos.shape}")
        n_verts = pos.shape[1]
        if faces.size and (int(faces.min()) < 0 or int(faces.max()) >= n_verts):
            raise ValueError(f"mesh faces index vertices outside [0, {n_verts})")
        self.faces, self.positions = faces, pos
        if self.vertex_colors is not None:
            vc = _as_array(self.vertex_colors, "vertex_colors")
            vc = vc.astype(np.float32) / 255.0 if vc.dtype == np.uint8 else vc.astype(np.float32, copy=False)
            if vc.ndim != 2 or vc.shape[0] != n_verts or vc.shape[1] not in (3, 4):
                raise ValueError(f"vertex_colors must be (V, 3) with V={n_verts}, got {vc.shape}")
            self.vertex_colors = np.ascontiguousarray(vc[:, :3])
        if self.uvs is not None:
            uvs = _as_array(self.uvs, "uvs").astype(np.float32, copy=False)
            if uvs.shape != (n_verts, 2):
                raise ValueError(f"uvs must be (V, 2) with V={n_verts}, got {uvs.shape}")
            self.uvs = uvs
        if self.texture is not None:
            tex = _as_array(self.texture, "texture")
            if tex.dtype != np.uint8:
                tex = (np.clip(tex.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
            if tex.ndim != 3 or tex.shape[2] not in (3, 4):
                raise ValueError(f"texture must be (H, W, 3), got {tex.shape}")
            if self.uvs is None:
                raise ValueError("a textured mesh needs uvs")
            self.texture = np.ascontiguousarray(tex[..., :3])

    @classmethod
    def from_mesh(cls, mesh: Any, positions: Any) -> AnimatedMesh:
        """From a :class:`pla4d.render.mesh.Mesh` (topology, colours, texture) and per-frame vertices (T, V, 3).

        The mesh's base-colour factor is folded into the linear vertex colours (glTF multiplies COLOR_0 with
        the texture). Meshes with several materials are not supported (the mesh stage makes single-material
        meshes).
        """
        if mesh.materials:
            raise ValueError("an animated mesh takes a single-material mesh; this one has several materials")
        positions = _as_array(positions, "positions")
        if positions.ndim == 2:
            positions = positions[None]
        base = mesh.base_color.detach().cpu().float().numpy()
        vc = None
        if mesh.vertex_colors is not None:
            vc = mesh.vertex_colors.detach().cpu().float().numpy() * base
        elif not np.allclose(base, 1.0):
            vc = np.broadcast_to(base, (mesh.num_vertices, 3)).astype(np.float32)
        return cls(
            faces=mesh.faces.detach().cpu().numpy(),
            positions=positions,
            vertex_colors=vc,
            uvs=None if mesh.uvs is None else mesh.uvs.detach().cpu().numpy(),
            texture=None if mesh.texture is None else mesh.texture.detach().cpu().numpy(),
        )

    def mesh_at(self, t: int) -> Any:
        """Frame ``t`` as a :class:`pla4d.render.mesh.Mesh` (for rendering or metrics)."""
        from pla4d.render.mesh import Mesh

        _check_frame(t, self.num_frames)
        return Mesh(
            torch.from_numpy(np.asarray(self.positions[t], dtype=np.float32)),
            torch.from_numpy(self.faces.astype(np.int64)),
            vertex_colors=None if self.vertex_colors is None else torch.from_numpy(np.array(self.vertex_colors)),
            uvs=None if self.uvs is None else torch.from_numpy(np.array(self.uvs)),
            texture=None if self.texture is None else torch.from_numpy(self.texture.astype(np.float32) / 255.0),
        )


@dataclass
class Asset4D:
    """Canonical Gaussians plus per-frame attributes (``None`` = not animated: the canonical value holds).

    Arrays use the storage convention of :class:`GaussianModel` and ``canonical.ply``: ``positions`` (T, N, 3)
    means, ``rotations`` (T, N, 4) quaternions (w, x, y, z), ``scales`` (T, N, 3) LOG-scales, ``opacities``
    (T, N) opacity LOGITS. ``meta`` carries the free-form fields (prompt, seed, settings, timings, times,
    code_version, ...); after :func:`read_asset` it is the whole ``asset.json``.
    """

    canonical: GaussianModel
    positions: np.ndarray
    rotations: np.ndarray | None = None
    scales: np.ndarray | None = None
    opacities: np.ndarray | None = None
    fps: float = 24.0
    meta: dict = field(default_factory=dict)
    mesh: AnimatedMesh | None = None
    start_frame: int = 0
    rig: RigData | None = None  # the skinning decomposition of the motion (pla4d.rig), if the run made one

    def __post_init__(self) -> None:
        if not isinstance(self.canonical, GaussianModel):
            raise TypeError(f"canonical must be a GaussianModel, got {type(self.canonical).__name__}")
        n = self.canonical.num_gaussians
        for name, trailing in ATTRIBUTES.items():
            value = getattr(self, name)
            if value is None:
                if name == "positions":
                    raise ValueError("positions are required")
                continue
            if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
                value = _as_array(value, name).astype(np.float32)
            if value.ndim != 2 + len(trailing) or value.shape[1:] != (n, *trailing) or value.shape[0] < 1:
                raise ValueError(f"{name} must be (T, {n}{''.join(f', {c}' for c in trailing)}), got {value.shape}")
            setattr(self, name, value)
        t = self.num_frames
        for name in self.animated:
            if getattr(self, name).shape[0] != t:
                raise ValueError(f"{name} has {getattr(self, name).shape[0]} frames, positions have {t}")
        if self.mesh is not None and self.mesh.num_frames != t:
            raise ValueError(f"the animated mesh has {self.mesh.num_frames} frames, the Gaussians have {t}")
        if not (math.isfinite(float(self.fps)) and float(self.fps) > 0):
            raise ValueError(f"fps must be positive, got {self.fps}")
        self.fps = float(self.fps)
        self.start_frame = int(self.start_frame)

    @property
    def num_frames(self) -> int:
        return int(self.positions.shape[0])

    @property
    def num_gaussians(self) -> int:
        return self.canonical.num_gaussians

    @property
    def animated(self) -> list[str]:
        """The per-frame attributes present, in the fixed order positions, rotations, scales, opacities."""
        return [name for name in ATTRIBUTES if getattr(self, name) is not None]

    @property
    def times(self) -> list[float]:
        """The deformation-field time of each frame in [0, 1] (``meta["times"]``, else evenly spaced)."""
        times = self.meta.get("times")
        if times is not None:
            return [float(x) for x in times]
        t = self.num_frames
        return [i / (t - 1) if t > 1 else 0.0 for i in range(t)]


def _check_frame(t: int, count: int) -> None:
    if not isinstance(t, (int, np.integer)) or not 0 <= int(t) < count:
        raise IndexError(f"frame {t} out of range: the asset has frames 0..{count - 1}")


def frame_model(asset: Asset4D, t: int) -> GaussianModel:
    """The Gaussians at frame ``t``: the canonical model with the frame's attributes (float32, CPU)."""
    _check_frame(t, asset.num_frames)
    canon = asset.canonical
    values = {}
    for name, param in _PARAM_OF.items():
        arr = getattr(asset, name)
        if arr is None:
            values[param] = getattr(canon, param).detach().cpu().float()
        else:
            values[param] = torch.from_numpy(np.array(arr[int(t)], dtype=np.float32))
    return GaussianModel(
        values["means"],
        values["quats"],
        values["log_scales"],
        values["opacity_logits"],
        canon.sh0.detach().cpu().float(),
        canon.sh_rest.detach().cpu().float(),
    )


def asset_from_models(
    canonical: GaussianModel,
    frames: Sequence[GaussianModel],
    fps: float = 24.0,
    meta: dict | None = None,
    mesh: AnimatedMesh | None = None,
    start_frame: int = 0,
) -> Asset4D:
    """An asset from per-frame models (e.g. the deformed Gaussians at each time). Attributes that equal the
    canonical model's in every frame are left out (not animated); positions are always kept."""
    if not frames:
        raise ValueError("no frames")
    stacked: dict[str, np.ndarray | None] = {}
    for name, param in _PARAM_OF.items():
        ref = getattr(canonical, param).detach().cpu().float()
        per_frame = [getattr(m, param).detach().cpu().float() for m in frames]
        if name != "positions" and all(torch.equal(p, ref) for p in per_frame):
            stacked[name] = None
        else:
            stacked[name] = torch.stack(per_frame).numpy()
    return Asset4D(canonical, fps=fps, meta=dict(meta or {}), mesh=mesh, start_frame=start_frame, **stacked)


# ----------------------------------------------------------------------------------------- writing, reading


def write_asset(path: str | Path, asset: Asset4D, dtype: str = "float32") -> Path:
    """Write ``asset`` as a 4D asset folder at ``path`` (atomically; an earlier asset there is replaced).

    ``dtype`` ("float32" or "float16") applies to the per-frame arrays (Gaussians and mesh positions);
    ``canonical.ply`` is always float32 and mesh colours/UVs are float32. Raises ValueError for non-finite
    values, float16 overflow, or metadata that is not JSON-serialisable.
    """
    meta = dict(asset.meta)
    # The writer's version; callers may add more (e.g. a git commit).
    meta["code_version"] = {**dict(meta.get("code_version") or {}), "pla4d": __version__}
    mesh = None
    if asset.mesh is not None:
        m = asset.mesh
        png = None
        if m.texture is not None:
            from PIL import Image

            buffer = io.BytesIO()
            Image.fromarray(m.texture).save(buffer, format="PNG")
            png = buffer.getvalue()
        mesh = _disk.MeshData(m.faces, m.positions, m.vertex_colors, m.uvs, png)
    arrays = {name: getattr(asset, name) for name in asset.animated}
    return _disk.write_asset(
        path, model_arrays(asset.canonical), arrays, asset.fps, asset.start_frame, meta, mesh, dtype, asset.rig
    )


def read_asset(path: str | Path, mmap: bool = True, verify: bool = True) -> Asset4D:
    """Read the 4D asset folder ``path``.

    With ``mmap`` the per-frame arrays are read-only memory maps (pages load on access); otherwise they are
    read into memory. ``verify`` checks every file's sha256 against ``asset.json``. Raises :class:`AssetError`
    (a ValueError) naming the problem: no folder, no/invalid ``asset.json``, unsupported version, a missing
    file, a sha256 mismatch, a wrong size, shape or dtype.
    """
    path = Path(path)
    disk = _disk.read_asset(path, mmap=mmap, verify=verify)
    mesh = None
    if disk.mesh is not None:
        m = disk.mesh
        texture = None
        if m.texture is not None:
            from PIL import Image

            try:
                with Image.open(m.texture) as im:
                    texture = np.asarray(im.convert("RGB"))
            except OSError as exc:
                raise AssetError(f"{path}: mesh texture is unreadable: {exc}") from exc
        try:
            mesh = AnimatedMesh(m.faces.astype(np.int64), m.positions, m.vertex_colors, m.uvs, texture)
        except ValueError as exc:
            raise AssetError(f"{path}: invalid animated mesh: {exc}") from exc
    try:
        return Asset4D(
            model_from_arrays(disk.canonical),
            fps=float(disk.meta["fps"]),
            meta=disk.meta,
            mesh=mesh,
            start_frame=int(disk.meta.get("start_frame", 0)),
            rig=disk.rig,
            **disk.arrays,
        )
    except ValueError as exc:
        raise AssetError(f"{path}: {exc}") from exc
