"""The 4D asset on disk (docs/asset-format.md): a folder the engine writes, the backend streams and the Blender
add-on reads. numpy arrays only; the engine wraps them for torch (``pla4d.asset.format``).

Layout::

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
      rig_*.bin         optional rig (pla4d_formats.rig): per-frame bone transforms, Gaussian / vertex weights

Per-frame values use the same storage convention as the PLY (log-scales, opacity logits, unnormalised
(w, x, y, z) quaternions), so frame t's arrays replace the PLY's columns one for one. Frame t of an attribute is
one contiguous byte range of its file, so a reader maps it with ``np.frombuffer`` / ``np.memmap`` and hands it to
Blender's ``foreach_set`` without copying or looping.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .files import json_default, sha256_of
from .ply import PlyError, read_gaussian_ply, write_gaussian_ply
from .rig import RigData, read_rig, write_rig

__all__ = [
    "ATTRIBUTES",
    "CANONICAL_FILE",
    "DTYPES",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "META_FILE",
    "TEXTURE_FILE",
    "Asset",
    "AssetError",
    "MeshData",
    "frame_byte_range",
    "read_asset",
    "read_meta",
    "sha256_of",
    "write_asset",
]

FORMAT_NAME = "pla4d-asset4d"
# major.minor: readers accept any minor of their major (minor = added optional keys only). 1.1: the rig block.
FORMAT_VERSION = "1.1"
META_FILE = "asset.json"
CANONICAL_FILE = "canonical.ply"
TEXTURE_FILE = "mesh_texture.png"
DTYPES = {"float32": "<f4", "float16": "<f2"}  # setting name -> numpy dtype string on disk
# Per-Gaussian animated attributes and their trailing shape (() for a scalar per Gaussian), in the fixed order.
ATTRIBUTES: dict[str, tuple[int, ...]] = {"positions": (3,), "rotations": (4,), "scales": (3,), "opacities": ()}
_ALLOWED_ON_DISK = {"<f4", "<f2", "<u4"}
_RESERVED = (
    "format", "format_version", "created_utc", "frame_count", "num_gaussians", "fps", "start_frame", "times",
    "up_axis", "forward_axis", "handedness", "units", "dtype", "byte_order", "animated", "conventions",
    "canonical", "arrays", "mesh", "rig",
)  # fmt: skip


class AssetError(ValueError):
    """A 4D asset folder is missing, incomplete, corrupted or of an unsupported version (the message says which)."""


@dataclass
class MeshData:
    """The optional animated mesh: constant topology, one vertex-position set per frame (+Y up).

    ``faces`` (F, 3) vertex indices; ``positions`` (T, V, 3); ``vertex_colors`` (V, 3) LINEAR RGB in [0, 1] (as
    glTF COLOR_0); ``uvs`` (V, 2) in the glTF convention (v down); ``texture`` the sRGB base-colour PNG: its file
    after :func:`read_asset`, its file or its bytes for :func:`write_asset`."""

    faces: np.ndarray
    positions: np.ndarray
    vertex_colors: np.ndarray | None = None
    uvs: np.ndarray | None = None
    texture: Path | bytes | None = None

    @property
    def num_frames(self) -> int:
        return int(self.positions.shape[0])

    @property
    def num_vertices(self) -> int:
        return int(self.positions.shape[1])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])


@dataclass
class Asset:
    """An asset read by :func:`read_asset`: ``canonical`` Gaussians as arrays (``pla4d_formats.ply`` keys) and
    the animated attributes (``arrays``: name -> (T, N, C) or (T, N), memory-mapped by default), both in the
    storage convention and the asset's axes; ``meta`` is the whole ``asset.json``."""

    path: Path | None
    meta: dict[str, Any]
    canonical: dict[str, np.ndarray]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    mesh: MeshData | None = None
    rig: RigData | None = None

    @property
    def frame_count(self) -> int:
        return int(self.meta.get("frame_count", 1))

    @property
    def num_gaussians(self) -> int:
        return int(self.canonical["positions"].shape[0])

    @property
    def fps(self) -> float:
        return float(self.meta.get("fps") or 24.0)

    @property
    def start_frame(self) -> int:
        return int(self.meta.get("start_frame") or 0)

    @property
    def animated(self) -> list[str]:
        return [name for name in ATTRIBUTES if name in self.arrays]

    def frame(self, name: str, t: int) -> np.ndarray:
        """Attribute ``name`` at frame ``t`` (clamped to the asset's frames), storage convention, asset axes."""
        if name in self.arrays:
            return self.arrays[name][min(max(int(t), 0), self.frame_count - 1)]
        return self.canonical[name]


def _write_array(folder: Path, file: str, value: Any, disk_dtype: str, what: str, per_frame: bool = False) -> dict:
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


def _check_shapes(canonical: dict[str, np.ndarray], arrays: dict[str, Any], mesh: MeshData | None) -> tuple[int, int]:
    n = int(np.shape(canonical["positions"])[0])
    if "positions" not in arrays:
        raise ValueError("positions are required")
    t = int(np.shape(arrays["positions"])[0])
    for name, value in arrays.items():
        if name not in ATTRIBUTES:
            raise ValueError(f"unknown per-frame attribute {name!r} (known: {', '.join(ATTRIBUTES)})")
        if tuple(np.shape(value)) != (t, n, *ATTRIBUTES[name]):
            raise ValueError(f"{name} has shape {tuple(np.shape(value))}, expected {(t, n, *ATTRIBUTES[name])}")
    if mesh is not None and mesh.num_frames != t:
        raise ValueError(f"the animated mesh has {mesh.num_frames} frames, the Gaussians have {t}")
    return t, n


def write_asset(
    path: str | os.PathLike[str],
    canonical: dict[str, np.ndarray],
    arrays: dict[str, Any],
    fps: float,
    start_frame: int = 0,
    meta: dict[str, Any] | None = None,
    mesh: MeshData | None = None,
    dtype: str = "float32",
    rig: RigData | None = None,
) -> Path:
    """Write a 4D asset folder at ``path`` (atomically; an earlier asset there is replaced).

    ``canonical``: the Gaussians as arrays (``pla4d_formats.ply`` keys); ``arrays``: the animated attributes
    (positions required). ``meta`` carries the free-form fields (prompt, seed, settings, timings, times,
    code_version, ...); the writer owns the other keys of asset.json. ``dtype`` ("float32" or "float16") applies
    to the per-frame arrays (Gaussians and mesh positions); ``canonical.ply`` is always float32 and mesh
    colours/UVs are float32. Raises ValueError for non-finite values, float16 overflow, inconsistent shapes or
    metadata that is not JSON-serialisable.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    user = dict(meta or {})
    try:
        json.dumps(user, default=json_default)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"asset metadata is not JSON-serialisable: {exc}") from exc
    frame_count, num_gaussians = _check_shapes(canonical, arrays, mesh)
    times = user.get("times")
    if times is None:
        times = [i / (frame_count - 1) if frame_count > 1 else 0.0 for i in range(frame_count)]
    times = [float(x) for x in times]
    if len(times) != frame_count:
        raise ValueError(f"meta['times'] has {len(times)} entries for {frame_count} frames")
    animated = [name for name in ATTRIBUTES if name in arrays]
    disk = DTYPES[dtype]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        write_gaussian_ply(tmp / CANONICAL_FILE, **canonical)
        descriptors = {name: _write_array(tmp, f"{name}.bin", arrays[name], disk, name, True) for name in animated}
        mesh_meta = None if mesh is None else _write_mesh(tmp, mesh, disk)
        vertices = None if mesh is None else mesh.num_vertices
        rig_meta = None if rig is None else write_rig(tmp, rig, frame_count, num_gaussians, vertices, _write_array)
        sh_rest = canonical.get("sh_rest")
        out: dict[str, Any] = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "created_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "code_version": dict(user.get("code_version") or {}),
            "prompt": user.get("prompt"),
            "seed": user.get("seed"),
            "settings": user.get("settings") or {},
            "timings": user.get("timings") or {},
        }
        out.update({k: v for k, v in user.items() if k not in out and k not in _RESERVED})
        out.update(
            {
                "frame_count": frame_count,
                "num_gaussians": num_gaussians,
                "fps": float(fps),
                "start_frame": int(start_frame),
                "times": times,
                "up_axis": "+Y",
                "forward_axis": "+Z",
                "handedness": "right",
                "units": "normalised: the object fits the unit sphere (glTF exports read 1 unit as 1 metre)",
                "dtype": dtype,
                "byte_order": "little",
                "animated": animated,
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
                    "num_gaussians": num_gaussians,
                    "sh_degree": 0 if sh_rest is None else round(math.sqrt(np.shape(sh_rest)[1] + 1)) - 1,
                },
                "arrays": descriptors,
                "mesh": mesh_meta,
                "rig": rig_meta,
            }
        )
        text = json.dumps(out, indent=1, default=json_default) + "\n"
        with open(tmp / META_FILE, "w", encoding="utf-8") as handle:  # last: no asset.json = not a finished asset
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        _fsync_dir(tmp)
        _install(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _write_mesh(folder: Path, mesh: MeshData, disk: str) -> dict:
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
        png = mesh.texture if isinstance(mesh.texture, bytes) else Path(mesh.texture).read_bytes()
        (folder / TEXTURE_FILE).write_bytes(png)
        out["texture"] = {"file": TEXTURE_FILE, "sha256": hashlib.sha256(png).hexdigest(), "nbytes": len(png)}
    return out


# ------------------------------------------------------------------------------------------------- reading


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse and check ``asset.json`` of the asset folder ``path`` (format name, version, required keys)."""
    path = Path(path)
    if not path.is_dir():
        raise AssetError(f"no 4D asset folder at {path}")
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise AssetError(f"{path} has no {META_FILE}: not a pla4d 4D asset, or its write did not finish")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AssetError(f"{meta_path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise AssetError(f"{meta_path} is not a {FORMAT_NAME} file (format: {found!r})")
    version = str(meta.get("format_version", ""))
    major = FORMAT_VERSION.split(".")[0]
    if version.split(".")[0] != major:
        raise AssetError(
            f"{path} has format version {version!r}; this reader reads version {major}.x: update pla4d to read it "
            "(in Blender: update the pla4d add-on)"
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


def _check_file(path: Path, entry: Any, what: str, verify: bool) -> Path:
    """The file an asset.json descriptor names, checked: a plain name, present, its sha256 (with ``verify``)."""
    if not isinstance(entry, dict) or not entry.get("file"):
        raise AssetError(f"{path}: the {what} descriptor names no file")
    name = str(entry["file"])
    if Path(name).name != name:
        raise AssetError(f"{path}: the {what} file name {name!r} must be a plain name inside the folder")
    file = path / name
    if not file.is_file():
        raise AssetError(f"{path}: {what} file {name} is missing")
    if verify and "sha256" in entry and sha256_of(file) != entry["sha256"]:
        raise AssetError(f"{path}: {what} file {name} is corrupted (sha256 mismatch); write or download it again")
    return file


def _check_size(path: Path, file: Path, what: str, expected: int) -> None:
    size = file.stat().st_size
    if size != expected:
        raise AssetError(
            f"{path}: {what} file {file.name} has {size} bytes, expected {expected} "
            f"({'truncated' if size < expected else 'trailing data'})"
        )


def _read_array(path: Path, entry: Any, what: str, shape: tuple[int, ...], mmap: bool, verify: bool) -> np.ndarray:
    file = _check_file(path, entry, what, verify)
    dtype_str = entry.get("dtype")
    if dtype_str not in _ALLOWED_ON_DISK:
        allowed = ", ".join(sorted(_ALLOWED_ON_DISK))
        raise AssetError(f"{path}: {what} has unsupported dtype {dtype_str!r} (expected one of {allowed})")
    if [int(s) for s in entry.get("shape", [])] != list(shape):
        raise AssetError(f"{path}: {what} has shape {entry.get('shape')}, expected {list(shape)}")
    dtype = np.dtype(dtype_str)
    offset = int(entry.get("offset", 0))
    count = math.prod(shape)
    _check_size(path, file, what, offset + count * dtype.itemsize)
    if count == 0:
        return np.zeros(shape, dtype)
    if mmap:
        return np.memmap(file, dtype=dtype, mode="r", offset=offset, shape=shape)
    return np.fromfile(file, dtype=dtype, count=count, offset=offset).reshape(shape)


def read_asset(path: str | os.PathLike[str], mmap: bool = True, verify: bool = True) -> Asset:
    """Read the 4D asset folder ``path``.

    With ``mmap`` the per-frame arrays are read-only memory maps (pages load on access); otherwise they are read
    into memory. ``verify`` checks every file's sha256 against ``asset.json``. Raises :class:`AssetError` (a
    ValueError) naming the problem: no folder, no/invalid ``asset.json``, unsupported version, a missing file, a
    sha256 mismatch, a wrong size, shape or dtype.
    """
    path = Path(path)
    meta = read_meta(path)
    t, n = int(meta["frame_count"]), int(meta["num_gaussians"])
    if t < 1 or n < 0:
        raise AssetError(f"{path}: frame_count {t} / num_gaussians {n} are invalid")
    canon_file = _check_file(path, meta["canonical"], "canonical", verify)
    if "nbytes" in meta["canonical"]:
        _check_size(path, canon_file, "canonical", int(meta["canonical"]["nbytes"]))
    try:
        canonical = read_gaussian_ply(canon_file)
    except PlyError as exc:
        raise AssetError(f"{path}: canonical.ply is unreadable: {exc}") from exc
    count = canonical["positions"].shape[0]
    if count != n:
        raise AssetError(f"{path}: canonical.ply holds {count} Gaussians, asset.json says {n}")
    arrays = {
        name: _read_array(path, entry, name, (t, n, *ATTRIBUTES[name]), mmap, verify)
        for name, entry in meta["arrays"].items()
    }
    mesh = _read_mesh(path, meta["mesh"], t, mmap, verify) if meta.get("mesh") else None
    rig = None
    if meta.get("rig"):
        try:
            rig = read_rig(path, meta["rig"], t, n, None if mesh is None else mesh.num_vertices, _read_array, mmap,
                           verify)  # fmt: skip
        except AssetError:
            raise
        except ValueError as exc:
            raise AssetError(f"{path}: invalid rig: {exc}") from exc
    return Asset(path, meta, canonical, arrays, mesh, rig)


def _read_mesh(path: Path, m: Any, t: int, mmap: bool, verify: bool) -> MeshData:
    try:
        v, f = int(m["num_vertices"]), int(m["num_faces"])
        faces_entry, pos_entry = m["faces"], m["positions"]
    except (KeyError, TypeError, ValueError) as exc:
        raise AssetError(f"{path}: the mesh descriptor is incomplete ({exc})") from exc
    faces = _read_array(path, faces_entry, "mesh faces", (f, 3), False, verify)
    if faces.size and int(faces.max()) >= v:
        raise AssetError(f"{path}: invalid animated mesh: mesh faces index vertices outside [0, {v})")
    positions = _read_array(path, pos_entry, "mesh positions", (t, v, 3), mmap, verify)
    colors = uvs = texture = None
    if m.get("vertex_colors"):
        colors = _read_array(path, m["vertex_colors"], "mesh colours", (v, 3), False, verify).astype(np.float32)
    if m.get("uvs"):
        uvs = _read_array(path, m["uvs"], "mesh uvs", (v, 2), False, verify).astype(np.float32)
    if m.get("texture"):
        texture = _check_file(path, m["texture"], "mesh texture", verify)
    return MeshData(faces, positions, colors, uvs, texture)


# ----------------------------------------------------------------------------------------------- streaming


def frame_byte_range(entry: dict[str, Any], start: int, stop: int | None = None) -> tuple[int, int]:
    """(offset, nbytes) in the array file described by ``entry`` that hold frames ``start`` .. ``stop - 1``
    (``stop`` defaults to ``start + 1``): what a client fetches to get exactly those frames."""
    shape = [int(s) for s in entry["shape"]]
    stop = start + 1 if stop is None else stop
    if not 0 <= start < stop <= shape[0]:
        raise IndexError(f"frames {start}..{stop - 1} out of range 0..{shape[0] - 1}")
    frame = math.prod(shape[1:]) * np.dtype(entry["dtype"]).itemsize
    return int(entry.get("offset", 0)) + start * frame, (stop - start) * frame
