"""Read pla4d 4D assets (docs/asset-format.md) with numpy only, and convert them to Blender's conventions.

No bpy here, so the reader and the conversions are testable in any Python with numpy. The per-frame arrays are
memory-mapped (``np.memmap``): opening a large asset costs the header parse (plus the optional sha256 pass), and
a frame pages in only when the timeline lands on it. Every problem with a folder raises :class:`AssetReadError`
with a message naming the folder and the problem, which the operators show to the user as is.

Conventions (docs/asset-format.md section 6): the asset is +Y up with the front on +Z; Blender is +Z up, so a
point ``(x, y, z)`` becomes ``(x, -z, y)`` and a quaternion ``(w, x, y, z)`` becomes ``(w, x, -z, y)``. Per-frame
values are stored like ``canonical.ply`` stores them (log-scales, opacity logits, unnormalised quaternions,
SH DC colour); the ``*_to_blender`` helpers activate them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_NAME = "pla4d-asset4d"
SUPPORTED_MAJOR = 1
META_FILE = "asset.json"
CANONICAL_FILE = "canonical.ply"
SH_C0 = 0.28209479177387814  # degree-0 spherical harmonic: colour = 0.5 + SH_C0 * f_dc
ATTRIBUTES: dict[str, int] = {"positions": 3, "rotations": 4, "scales": 3, "opacities": 1}
_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2", "ushort": "u2",
    "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4", "float": "f4", "float32": "f4",
    "double": "f8", "float64": "f8",
}  # fmt: skip
_PLY_REQUIRED = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
                 "rot_0", "rot_1", "rot_2", "rot_3")  # fmt: skip


class AssetReadError(ValueError):
    """A 4D asset (or 3DGS PLY) cannot be read; the message names the path and the problem, for the user."""


@dataclass
class MeshData:
    """The asset's optional animated mesh: constant topology, one vertex-position set per frame (+Y up)."""

    faces: np.ndarray  # (F, 3) uint32
    positions: np.ndarray  # (T, V, 3) memory-mapped, float32 or float16
    vertex_colors: np.ndarray | None  # (V, 3) float32, linear RGB
    uvs: np.ndarray | None  # (V, 2) float32, glTF convention (v down)
    texture: Path | None  # sRGB PNG

    @property
    def num_vertices(self) -> int:
        return int(self.positions.shape[1])


@dataclass
class Asset:
    """An opened asset: canonical Gaussians (storage convention, asset axes) plus memory-mapped frames."""

    path: Path
    meta: dict[str, Any]
    canonical: dict[str, np.ndarray]  # positions (N,3) rotations (N,4) scales (N,3) opacities (N,) sh_dc (N,3)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # animated attributes, (T, N, C) or (T, N)
    mesh: MeshData | None = None

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


# ------------------------------------------------------------------------------------------------ reading


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
    """Open a 4D asset folder (or anything :func:`find_asset` accepts); ``verify`` checks every file's sha256."""
    target = find_asset(path)
    if target.is_file():
        canonical = read_gaussian_ply(target)
        meta = {"format": FORMAT_NAME, "frame_count": 1, "fps": 24.0, "start_frame": 0, "prompt": None,
                "source": str(target)}  # fmt: skip
        return Asset(target, meta, canonical)
    meta_path = target / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AssetReadError(f"{meta_path}: not readable JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise AssetReadError(f"{meta_path}: not a pla4d 4D asset (format {meta.get('format')!r})")
    version = str(meta.get("format_version", ""))
    try:
        major = int(version.split(".")[0])
    except ValueError:
        raise AssetReadError(f"{meta_path}: unreadable format_version {version!r}") from None
    if major != SUPPORTED_MAJOR:
        raise AssetReadError(
            f"{target}: asset format {version} is not supported by this add-on (it reads {SUPPORTED_MAJOR}.x); "
            "update the pla4d add-on"
        )
    for key in ("frame_count", "num_gaussians", "canonical", "arrays"):
        if key not in meta:
            raise AssetReadError(f"{meta_path}: missing key {key!r}")
    frames, count = int(meta["frame_count"]), int(meta["num_gaussians"])
    canonical_entry = meta["canonical"]
    ply = _checked_file(target, canonical_entry, "canonical", verify)
    canonical = read_gaussian_ply(ply)
    if canonical["positions"].shape[0] != count:
        raise AssetReadError(f"{ply} holds {canonical['positions'].shape[0]} Gaussians, asset.json says {count}")
    arrays: dict[str, np.ndarray] = {}
    for name, entry in meta["arrays"].items():
        if name not in ATTRIBUTES:
            raise AssetReadError(f"{meta_path}: unknown array {name!r}")
        width = ATTRIBUTES[name]
        expected = [frames, count] if width == 1 else [frames, count, width]
        arrays[name] = _map(target, entry, name, expected, verify)
    if "positions" not in arrays:
        raise AssetReadError(f"{meta_path}: the asset has no per-frame positions")
    mesh = _open_mesh(target, meta.get("mesh"), frames, verify)
    return Asset(target, meta, canonical, arrays, mesh)


def _checked_file(folder: Path, entry: dict[str, Any], what: str, verify: bool) -> Path:
    name = str(entry.get("file", ""))
    if not name or Path(name).name != name:
        raise AssetReadError(f"{folder}: {what} names an invalid file {name!r}")
    path = folder / name
    if not path.is_file():
        raise AssetReadError(f"{folder}: {what} file {name} is missing")
    size = path.stat().st_size
    expected = entry.get("nbytes")
    if expected is not None and size != int(expected) + int(entry.get("offset", 0)):
        state = "truncated" if size < int(expected) else "has trailing data"
        raise AssetReadError(f"{path} is {state} ({size} bytes, asset.json says {expected})")
    if verify and entry.get("sha256"):
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        if digest.hexdigest() != entry["sha256"]:
            raise AssetReadError(f"{path} is corrupted (sha256 mismatch); download or write the asset again")
    return path


def _map(folder: Path, entry: dict[str, Any], what: str, shape: list[int], verify: bool) -> np.ndarray:
    path = _checked_file(folder, entry, what, verify)
    dtype = str(entry.get("dtype", ""))
    if dtype not in ("<f4", "<f2", "<u4"):
        raise AssetReadError(f"{path}: unsupported dtype {dtype!r}")
    if list(entry.get("shape", [])) != shape:
        raise AssetReadError(f"{path}: shape {entry.get('shape')} does not match the asset (expected {shape})")
    if int(np.prod(shape)) == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=np.dtype(dtype), mode="r", offset=int(entry.get("offset", 0)), shape=tuple(shape))


def _open_mesh(folder: Path, entry: dict[str, Any] | None, frames: int, verify: bool) -> MeshData | None:
    if not entry:
        return None
    verts, nfaces = int(entry["num_vertices"]), int(entry["num_faces"])
    faces = np.asarray(_map(folder, entry["faces"], "mesh faces", [nfaces, 3], verify))
    positions = _map(folder, entry["positions"], "mesh positions", [frames, verts, 3], verify)
    colors = uvs = None
    if entry.get("vertex_colors"):
        colors = np.asarray(_map(folder, entry["vertex_colors"], "mesh colours", [verts, 3], verify), np.float32)
    if entry.get("uvs"):
        uvs = np.asarray(_map(folder, entry["uvs"], "mesh uvs", [verts, 2], verify), np.float32)
    texture = _checked_file(folder, entry["texture"], "mesh texture", verify) if entry.get("texture") else None
    if faces.size and int(faces.max()) >= verts:
        raise AssetReadError(f"{folder}: mesh faces index vertices past {verts}")
    return MeshData(faces, positions, colors, uvs, texture)


def read_gaussian_ply(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """A standard 3DGS PLY (binary) as arrays in the storage convention: positions, rotations (w, x, y, z),
    scales (log), opacities (logit), sh_dc."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 16)
    except OSError as exc:
        raise AssetReadError(f"{path}: {exc.strerror}") from None
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        raise AssetReadError(f"{path} is not a PLY file")
    offset = head.index(b"\n", end) + 1
    order, count, props, element = None, 0, [], None
    for line in head[:end].decode("ascii", "replace").splitlines()[1:]:
        tokens = line.split()
        if not tokens or tokens[0] in ("comment", "obj_info"):
            continue
        if tokens[0] == "format":
            order = {"binary_little_endian": "<", "binary_big_endian": ">"}.get(tokens[1])
            if order is None:
                raise AssetReadError(f"{path}: only binary PLY files are supported (found {tokens[1]})")
        elif tokens[0] == "element":
            element = tokens[1]
            if element == "vertex":
                count = int(tokens[2])
        elif tokens[0] == "property" and element == "vertex":
            if tokens[1] == "list" or tokens[1] not in _PLY_TYPES:
                raise AssetReadError(f"{path}: unsupported vertex property {line!r}")
            props.append((tokens[2], order + _PLY_TYPES[tokens[1]]))
    names = [name for name, _ in props]
    missing = [name for name in _PLY_REQUIRED if name not in names]
    if missing:
        raise AssetReadError(f"{path} is not a 3DGS PLY (missing {', '.join(missing)})")
    dtype = np.dtype(props)
    if path.stat().st_size < offset + count * dtype.itemsize:
        raise AssetReadError(f"{path} is truncated")
    data = np.fromfile(path, dtype=dtype, count=count, offset=offset)

    def cols(*keys: str) -> np.ndarray:
        return np.stack([data[key].astype(np.float32) for key in keys], axis=1)

    return {
        "positions": cols("x", "y", "z"),
        "rotations": cols("rot_0", "rot_1", "rot_2", "rot_3"),
        "scales": cols("scale_0", "scale_1", "scale_2"),
        "opacities": data["opacity"].astype(np.float32),
        "sh_dc": cols("f_dc_0", "f_dc_1", "f_dc_2"),
    }


def write_gaussian_ply(
    path: str | os.PathLike[str],
    positions: np.ndarray,
    rotations: np.ndarray,
    scales: np.ndarray,
    opacities: np.ndarray,
    sh_dc: np.ndarray,
) -> Path:
    """Write one standard 3DGS PLY (the layout pla4d's engine writes), atomically (temp file, then rename).

    Inputs are in the storage convention and asset axes (+Y up), like :func:`read_gaussian_ply` returns."""
    path = Path(path)
    n = int(positions.shape[0])
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
             "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]  # fmt: skip
    flat = np.empty((n, len(names)), dtype="<f4")
    flat[:, 0:3] = positions
    flat[:, 3:6] = 0.0
    flat[:, 6:9] = sh_dc
    flat[:, 9] = np.reshape(opacities, -1)
    flat[:, 10:13] = scales
    flat[:, 13:17] = rotations
    header = "\n".join(["ply", "format binary_little_endian 1.0", f"element vertex {n}",
                        *(f"property float {name}" for name in names), "end_header"]) + "\n"  # fmt: skip
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(header.encode("ascii"))
        handle.write(flat.tobytes())
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------------------------ conversions


def positions_to_blender(src: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(N, 3) asset-axes points -> Blender axes ``(x, -z, y)`` as float32 (into ``out`` when given)."""
    if out is None:
        out = np.empty((src.shape[0], 3), dtype=np.float32)
    out[:, 0] = src[:, 0]
    np.negative(src[:, 2], out=out[:, 1], casting="unsafe")
    out[:, 2] = src[:, 1]
    return out


def positions_from_blender(src: np.ndarray) -> np.ndarray:
    """Inverse of :func:`positions_to_blender`: Blender ``(x, y, z)`` -> asset ``(x, z, -y)``."""
    out = np.empty((src.shape[0], 3), dtype=np.float32)
    out[:, 0] = src[:, 0]
    out[:, 1] = src[:, 2]
    out[:, 2] = -src[:, 1]
    return out


def rotations_to_blender(src: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(N, 4) quaternions (w, x, y, z), asset axes, unnormalised -> normalised Blender-axes ``(w, x, -z, y)``.

    The change of axes is a +90 degree rotation C about X, so a rotation R becomes C R C^-1: the vector part
    transforms like a point and w is unchanged. A zero quaternion becomes the identity."""
    if out is None:
        out = np.empty((src.shape[0], 4), dtype=np.float32)
    out[:, 0] = src[:, 0]
    out[:, 1] = src[:, 1]
    np.negative(src[:, 3], out=out[:, 2], casting="unsafe")
    out[:, 3] = src[:, 2]
    norm = np.sqrt(np.einsum("ij,ij->i", out, out))
    bad = norm < 1e-12
    if bad.any():
        out[bad] = (1.0, 0.0, 0.0, 0.0)
        norm[bad] = 1.0
    out /= norm[:, None]
    return out


def rotations_from_blender(src: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rotations_to_blender` (normalised (w, x, y, z) in asset axes)."""
    out = np.empty((src.shape[0], 4), dtype=np.float32)
    out[:, 0] = src[:, 0]
    out[:, 1] = src[:, 1]
    out[:, 2] = src[:, 3]
    out[:, 3] = -src[:, 2]
    return out


def scales_to_blender(log_scales: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Log-scales -> real per-axis scales (per local axis, so the change of axes leaves them alone)."""
    if out is None:
        out = np.empty(log_scales.shape, dtype=np.float32)
    np.exp(log_scales, out=out, casting="unsafe")
    return out


def opacities_to_blender(logits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Opacity logits -> opacities in [0, 1] (sigmoid)."""
    if out is None:
        out = np.empty(logits.shape, dtype=np.float32)
    np.negative(logits, out=out, casting="unsafe")
    np.exp(out, out=out)
    out += 1.0
    np.reciprocal(out, out=out)
    return out


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> linear (Blender's scene-linear colour)."""
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1 / 2.4) - 0.055).astype(np.float32)


def sh_dc_to_linear_rgb(sh_dc: np.ndarray) -> np.ndarray:
    """Degree-0 SH coefficients -> linear RGB: the engine's Gaussian colours are sRGB-encoded (conventions)."""
    return srgb_to_linear(0.5 + SH_C0 * np.asarray(sh_dc, dtype=np.float32))


def linear_rgb_to_sh_dc(rgb: np.ndarray) -> np.ndarray:
    return ((linear_to_srgb(rgb) - 0.5) / SH_C0).astype(np.float32)
