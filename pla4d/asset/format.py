"""The 4D asset on disk: a folder the engine writes, the backend streams and the Blender add-on reads.

Layout (see ``docs/asset-format.md`` for the full contract)::

    ASSET/
      asset.json        metadata, written last: format + version, frames, fps, axes, array descriptors + sha256
      canonical.ply     the static Gaussians, standard 3DGS PLY (any 3DGS viewer opens it)
      positions.bin     (T, N, 3) means, raw little-endian float32 or float16, frame-major (C order)
      rotations.bin     (T, N, 4) quaternions (w, x, y, z)   -- only if the deformation changes them
      scales.bin        (T, N, 3) log-scales                 -- only if the deformation changes them
      opacities.bin     (T, N)    opacity logits             -- only if the deformation changes them
      mesh_faces.bin    (F, 3) uint32                        -- optional animated mesh
      mesh_positions.bin (T, V, 3)
      mesh_colors.bin   (V, 3) float32 linear RGB (glTF COLOR_0 convention)
      mesh_uvs.bin      (V, 2) float32, glTF UV convention
      mesh_texture.png  sRGB texture

Per-frame values use the same storage convention as the PLY (log-scales, opacity logits, unnormalised
(w, x, y, z) quaternions), so frame t's arrays replace the PLY's columns one for one. Frame t of an
attribute is one contiguous byte range of its file, so a reader maps it with ``np.frombuffer`` / ``np.memmap``
and hands it to Blender's ``foreach_set`` without copying or looping.

Writes are atomic: everything goes into a temporary folder beside the target (``asset.json`` last) that is
renamed into place only when complete, so a crash never leaves a half-written asset under the target name.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pla4d import __version__
from pla4d.gaussians.model import GaussianModel
from pla4d.gaussians.ply import load_ply, save_ply
from pla4d.runfolder import _json_default, sha256_of, write_json

__all__ = [
    "ATTRIBUTES",
    "CANONICAL_FILE",
    "DTYPES",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "META_FILE",
    "AnimatedMesh",
    "Asset4D",
    "AssetError",
    "asset_from_models",
    "frame_byte_range",
    "frame_model",
    "read_asset",
    "read_meta",
    "stream_plan",
    "write_asset",
]

FORMAT_NAME = "pla4d-asset4d"
FORMAT_VERSION = "1.0"  # major.minor: readers accept any minor of their major (minor = added optional keys only)
META_FILE = "asset.json"
CANONICAL_FILE = "canonical.ply"
TEXTURE_FILE = "mesh_texture.png"
DTYPES = {"float32": "<f4", "float16": "<f2"}  # setting name -> numpy dtype string on disk
# Per-Gaussian animated attributes and their trailing shape (() for a scalar per Gaussian).
ATTRIBUTES: dict[str, tuple[int, ...]] = {"positions": (3,), "rotations": (4,), "scales": (3,), "opacities": ()}
# GaussianModel parameter each attribute replaces (same storage convention as canonical.ply).
_PARAM_OF = {"positions": "means", "rotations": "quats", "scales": "log_scales", "opacities": "opacity_logits"}
_ALLOWED_ON_DISK = {"<f4", "<f2", "<u4"}
_RESERVED = (
    "format", "format_version", "created_utc", "frame_count", "num_gaussians", "fps", "start_frame", "times",
    "up_axis", "forward_axis", "handedness", "units", "dtype", "byte_order", "animated", "conventions",
    "canonical", "arrays", "mesh",
)  # fmt: skip


class AssetError(ValueError):
    """A 4D asset folder is missing, incomplete, corrupted or of an unsupported version (the message says which)."""


# ----------------------------------------------------------------------------------------------- data classes


def _as_array(value: Any, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    return arr


@dataclass
class AnimatedMesh:
    """A mesh with constant topology and one vertex-position set per frame.

    ``faces`` (F, 3) vertex indices; ``positions`` (T, V, 3) in the world frame (+Y up); ``vertex_colors``
    (V, 3) LINEAR RGB in [0, 1] (as glTF COLOR_0); ``uvs`` (V, 2) in the glTF convention with ``texture``
    (H, W, 3) uint8 sRGB. Colours and UVs do not change over time.
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

    @property
    def num_frames(self) -> int:
        return int(self.positions.shape[0])

    @property
    def num_vertices(self) -> int:
        return int(self.positions.shape[1])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

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


# ------------------------------------------------------------------------------------------------- writing


def _write_array(
    folder: Path, file: str, value: np.ndarray, disk_dtype: str, what: str, per_frame: bool = False
) -> dict:
    """Write ``value`` as raw C-order bytes of ``disk_dtype``; return its descriptor for asset.json."""
    value = np.asarray(value)
    if disk_dtype != "<u4" and not np.isfinite(value).all():
        raise ValueError(f"{what} holds non-finite values; not writing the asset")
    with np.errstate(over="ignore"):  # float16 overflow is reported below, with the attribute's name
        cast = np.ascontiguousarray(value, dtype=np.dtype(disk_dtype))
    if disk_dtype == "<f2" and not np.isfinite(cast).all():
        peak = float(np.abs(value).max())
        raise ValueError(f"{what} overflows float16 (largest magnitude {peak:g} > 65504); write it as float32")
    raw = memoryview(cast).cast("B")
    with open(folder / file, "wb") as handle:
        handle.write(raw)
        handle.flush()
        os.fsync(handle.fileno())
    shape = list(cast.shape)
    entry = {
        "file": file,
        "dtype": disk_dtype,
        "shape": shape,
        "offset": 0,
        "nbytes": int(cast.nbytes),
        "sha256": hashlib.sha256(raw).hexdigest(),
    }
    if per_frame:
        entry["frame_nbytes"] = int(cast.nbytes // shape[0]) if shape[0] else 0
    return entry


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _install(tmp: Path, path: Path) -> None:
    """Move the finished folder ``tmp`` to ``path``, replacing an earlier asset there (never anything else)."""
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise ValueError(f"{path} exists and is not a folder; not replacing it with a 4D asset")
        if any(path.iterdir()) and not (path / META_FILE).is_file():
            raise ValueError(f"{path} is a non-empty folder that is not a pla4d 4D asset; not replacing it")
        old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)
    _fsync_dir(path.parent)


def write_asset(path: str | Path, asset: Asset4D, dtype: str = "float32") -> Path:
    """Write ``asset`` as a 4D asset folder at ``path`` (atomically; an earlier asset there is replaced).

    ``dtype`` ("float32" or "float16") applies to the per-frame arrays (Gaussians and mesh positions);
    ``canonical.ply`` is always float32 and mesh colours/UVs are float32. Raises ValueError for non-finite
    values, float16 overflow, or metadata that is not JSON-serialisable.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    try:
        json.dumps(asset.meta, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"asset metadata is not JSON-serialisable: {exc}") from exc
    times = asset.times
    if len(times) != asset.num_frames:
        raise ValueError(f"meta['times'] has {len(times)} entries for {asset.num_frames} frames")
    disk = DTYPES[dtype]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        save_ply(asset.canonical, tmp / CANONICAL_FILE)
        arrays = {
            name: _write_array(tmp, f"{name}.bin", getattr(asset, name), disk, name, True) for name in asset.animated
        }
        mesh_meta = None
        if asset.mesh is not None:
            mesh_meta = _write_mesh(tmp, asset.mesh, disk)
        user = dict(asset.meta)
        code_version = dict(user.get("code_version") or {})
        code_version["pla4d"] = __version__  # the writer's version; callers may add more (e.g. a git commit)
        meta: dict[str, Any] = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "created_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "code_version": code_version,
            "prompt": user.get("prompt"),
            "seed": user.get("seed"),
            "settings": user.get("settings") or {},
            "timings": user.get("timings") or {},
        }
        meta.update({k: v for k, v in user.items() if k not in meta and k not in _RESERVED})
        meta.update(
            {
                "frame_count": asset.num_frames,
                "num_gaussians": asset.num_gaussians,
                "fps": asset.fps,
                "start_frame": asset.start_frame,
                "times": times,
                "up_axis": "+Y",
                "forward_axis": "+Z",
                "handedness": "right",
                "units": "normalised: the object fits the unit sphere (glTF exports read 1 unit as 1 metre)",
                "dtype": dtype,
                "byte_order": "little",
                "animated": asset.animated,
                "conventions": {
                    "positions": "Gaussian centres (x, y, z), world frame",
                    "rotations": "quaternion (w, x, y, z), not necessarily normalised",
                    "scales": "natural log of the per-axis standard deviations",
                    "opacities": "logit of the opacity (opacity = 1 / (1 + exp(-v)))",
                    "layout": "raw C-order arrays (T, N, C): frame t is bytes [t * frame_nbytes, (t+1) * frame_nbytes)",
                },
                "canonical": {
                    "file": CANONICAL_FILE,
                    "sha256": sha256_of(tmp / CANONICAL_FILE),
                    "nbytes": (tmp / CANONICAL_FILE).stat().st_size,
                    "num_gaussians": asset.num_gaussians,
                    "sh_degree": asset.canonical.sh_degree,
                },
                "arrays": arrays,
                "mesh": mesh_meta,
            }
        )
        write_json(tmp / META_FILE, meta)  # last: a folder without asset.json is never a finished asset
        _fsync_dir(tmp)
        _install(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _write_mesh(folder: Path, mesh: AnimatedMesh, disk: str) -> dict:
    from PIL import Image

    out: dict[str, Any] = {
        "num_vertices": mesh.num_vertices,
        "num_faces": mesh.num_faces,
        "faces": _write_array(folder, "mesh_faces.bin", mesh.faces, "<u4", "mesh faces"),
        "positions": _write_array(folder, "mesh_positions.bin", mesh.positions, disk, "mesh positions", True),
        "vertex_colors": None,
        "uvs": None,
        "texture": None,
        "color_space": "vertex colours linear (glTF COLOR_0); texture sRGB",
    }
    if mesh.vertex_colors is not None:
        out["vertex_colors"] = _write_array(folder, "mesh_colors.bin", mesh.vertex_colors, "<f4", "mesh colours")
    if mesh.uvs is not None:
        out["uvs"] = _write_array(folder, "mesh_uvs.bin", mesh.uvs, "<f4", "mesh uvs")
    if mesh.texture is not None:
        Image.fromarray(mesh.texture).save(folder / TEXTURE_FILE)
        out["texture"] = {
            "file": TEXTURE_FILE,
            "sha256": sha256_of(folder / TEXTURE_FILE),
            "nbytes": (folder / TEXTURE_FILE).stat().st_size,
        }
    return out


# ------------------------------------------------------------------------------------------------- reading


def read_meta(path: str | Path) -> dict:
    """Parse and check ``asset.json`` of the asset folder ``path`` (format name, version, required keys)."""
    path = Path(path)
    if not path.is_dir():
        raise AssetError(f"no 4D asset folder at {path}")
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise AssetError(f"{path} has no {META_FILE}: not a pla4d 4D asset, or its write did not finish")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AssetError(f"{meta_path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise AssetError(f"{meta_path} is not a {FORMAT_NAME} file (format: {found!r})")
    version = str(meta.get("format_version", ""))
    if version.split(".")[0] != FORMAT_VERSION.split(".")[0]:
        raise AssetError(
            f"{path} has format version {version!r}; this pla4d ({__version__}) reads version "
            f"{FORMAT_VERSION.split('.')[0]}.x: update pla4d to read it"
        )
    missing = [key for key in ("frame_count", "num_gaussians", "fps", "canonical", "arrays") if key not in meta]
    if missing:
        raise AssetError(f"{meta_path} lacks {', '.join(missing)}")
    if "positions" not in meta["arrays"]:
        raise AssetError(f"{meta_path} describes no positions array")
    unknown = [name for name in meta["arrays"] if name not in ATTRIBUTES]
    if unknown:
        raise AssetError(f"{meta_path} describes unknown arrays {', '.join(unknown)}")
    return meta


def _check_file(path: Path, entry: dict, what: str, verify: bool) -> Path:
    try:
        file = path / entry["file"]
    except (KeyError, TypeError) as exc:
        raise AssetError(f"{path}: the {what} descriptor names no file") from exc
    if Path(entry["file"]).name != entry["file"]:
        raise AssetError(f"{path}: the {what} file name {entry['file']!r} must be a plain name inside the folder")
    if not file.is_file():
        raise AssetError(f"{path}: {what} file {entry['file']} is missing")
    if verify and "sha256" in entry and sha256_of(file) != entry["sha256"]:
        raise AssetError(f"{path}: {what} file {entry['file']} is corrupted (sha256 mismatch)")
    return file


def _read_array(path: Path, entry: dict, what: str, shape: tuple[int, ...], mmap: bool, verify: bool) -> np.ndarray:
    file = _check_file(path, entry, what, verify)
    dtype_str = entry.get("dtype")
    if dtype_str not in _ALLOWED_ON_DISK:
        raise AssetError(f"{path}: {what} has unsupported dtype {dtype_str!r} (expected one of {_ALLOWED_ON_DISK})")
    if [int(s) for s in entry.get("shape", [])] != list(shape):
        raise AssetError(f"{path}: {what} has shape {entry.get('shape')}, expected {list(shape)}")
    dtype = np.dtype(dtype_str)
    offset = int(entry.get("offset", 0))
    nbytes = math.prod(shape) * dtype.itemsize
    size = file.stat().st_size
    if size != offset + nbytes:
        raise AssetError(
            f"{path}: {what} file {entry['file']} has {size} bytes, expected {offset + nbytes} "
            f"({'truncated' if size < offset + nbytes else 'trailing data'})"
        )
    if nbytes == 0:
        return np.zeros(shape, dtype)
    if mmap:
        return np.memmap(file, dtype=dtype, mode="r", offset=offset, shape=shape)
    return np.fromfile(file, dtype=dtype, count=math.prod(shape), offset=offset).reshape(shape)


def read_asset(path: str | Path, mmap: bool = True, verify: bool = True) -> Asset4D:
    """Read the 4D asset folder ``path``.

    With ``mmap`` the per-frame arrays are read-only memory maps (pages load on access); otherwise they are
    read into memory. ``verify`` checks every file's sha256 against ``asset.json``. Raises :class:`AssetError`
    (a ValueError) naming the problem: no folder, no/invalid ``asset.json``, unsupported version, a missing
    file, a sha256 mismatch, a wrong size, shape or dtype.
    """
    path = Path(path)
    meta = read_meta(path)
    t, n = int(meta["frame_count"]), int(meta["num_gaussians"])
    if t < 1 or n < 0:
        raise AssetError(f"{path}: frame_count {t} / num_gaussians {n} are invalid")
    canon_file = _check_file(path, meta["canonical"], "canonical", verify)
    try:
        canonical = load_ply(canon_file)
    except ValueError as exc:
        raise AssetError(f"{path}: canonical.ply is unreadable: {exc}") from exc
    if canonical.num_gaussians != n:
        raise AssetError(f"{path}: canonical.ply holds {canonical.num_gaussians} Gaussians, asset.json says {n}")
    arrays: dict[str, np.ndarray] = {}
    for name, entry in meta["arrays"].items():
        arrays[name] = _read_array(path, entry, name, (t, n, *ATTRIBUTES[name]), mmap, verify)
    mesh = None
    if meta.get("mesh"):
        mesh = _read_mesh(path, meta["mesh"], t, mmap, verify)
    try:
        return Asset4D(
            canonical,
            fps=float(meta["fps"]),
            meta=meta,
            mesh=mesh,
            start_frame=int(meta.get("start_frame", 0)),
            **arrays,
        )
    except ValueError as exc:
        raise AssetError(f"{path}: {exc}") from exc


def _read_mesh(path: Path, m: dict, t: int, mmap: bool, verify: bool) -> AnimatedMesh:
    from PIL import Image

    try:
        v, f = int(m["num_vertices"]), int(m["num_faces"])
        faces_entry, pos_entry = m["faces"], m["positions"]
    except (KeyError, TypeError, ValueError) as exc:
        raise AssetError(f"{path}: the mesh descriptor is incomplete ({exc})") from exc
    faces = _read_array(path, faces_entry, "mesh faces", (f, 3), False, verify)
    positions = _read_array(path, pos_entry, "mesh positions", (t, v, 3), mmap, verify)
    colors = uvs = texture = None
    if m.get("vertex_colors"):
        colors = _read_array(path, m["vertex_colors"], "mesh colours", (v, 3), False, verify)
    if m.get("uvs"):
        uvs = _read_array(path, m["uvs"], "mesh uvs", (v, 2), False, verify)
    if m.get("texture"):
        tex_file = _check_file(path, m["texture"], "mesh texture", verify)
        try:
            with Image.open(tex_file) as im:
                texture = np.asarray(im.convert("RGB"))
        except OSError as exc:
            raise AssetError(f"{path}: mesh texture is unreadable: {exc}") from exc
    try:
        return AnimatedMesh(faces.astype(np.int64), positions, colors, uvs, texture)
    except ValueError as exc:
        raise AssetError(f"{path}: invalid animated mesh: {exc}") from exc


# ----------------------------------------------------------------------------------------------- streaming


def frame_byte_range(entry: dict, start: int, stop: int | None = None) -> tuple[int, int]:
    """(offset, nbytes) in the array file described by ``entry`` that hold frames ``start`` .. ``stop - 1``
    (``stop`` defaults to ``start + 1``): what a client fetches to get exactly those frames."""
    shape = [int(s) for s in entry["shape"]]
    stop = start + 1 if stop is None else stop
    if not 0 <= start < stop <= shape[0]:
        raise IndexError(f"frames {start}..{stop - 1} out of range 0..{shape[0] - 1}")
    frame = math.prod(shape[1:]) * np.dtype(entry["dtype"]).itemsize
    return int(entry.get("offset", 0)) + start * frame, (stop - start) * frame


def stream_plan(meta: dict, frames_per_chunk: int = 1) -> list[tuple[str, int, int]]:
    """The asset's files as ``(file, offset, nbytes)`` chunks in a playable order: ``canonical.ply`` and the
    static mesh files whole, then the per-frame arrays frame-major (all attributes of frames 0..k-1, then
    k..2k-1, ...), so a client can show frame t as soon as its chunks have arrived. ``asset.json`` itself is
    sent first, outside this plan."""
    if frames_per_chunk < 1:
        raise ValueError("frames_per_chunk must be >= 1")
    canon = meta["canonical"]
    plan = [(canon["file"], 0, int(canon["nbytes"]))]
    per_frame = [meta["arrays"][name] for name in ATTRIBUTES if name in meta["arrays"]]
    mesh = meta.get("mesh")
    if mesh:
        for key in ("faces", "vertex_colors", "uvs"):
            if mesh.get(key):
                plan.append((mesh[key]["file"], int(mesh[key].get("offset", 0)), int(mesh[key]["nbytes"])))
        if mesh.get("texture"):
            plan.append((mesh["texture"]["file"], 0, int(mesh["texture"]["nbytes"])))
        per_frame.append(mesh["positions"])
    count = int(meta["frame_count"])
    for start in range(0, count, frames_per_chunk):
        stop = min(count, start + frames_per_chunk)
        for entry in per_frame:
            plan.append((entry["file"], *frame_byte_range(entry, start, stop)))
    return plan
