"""Exports of a 4D asset: a PLY sequence, the animated mesh as glTF 2.0 binary (.glb), a preview video and a
contact sheet. Every file is written atomically (a temporary file beside it, renamed when complete).

The glTF export keeps the project's frame (+Y up, object facing +Z, which is glTF's own convention: no axis
change) and reads 1 unit as 1 metre. The animation is one morph target per frame (target t holds frame t's
vertex offsets from frame 0, the base) and one ``weights`` channel whose keyframe t puts weight 1 on target t
and 0 on the others, so importers (Blender's included) play the frames in sequence.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pla4d import __version__
from pla4d.asset.format import AnimatedMesh, Asset4D, frame_model
from pla4d.cameras import orbit_cameras
from pla4d.gaussians.ply import save_ply
from pla4d.runfolder import atomic_write_bytes

__all__ = [
    "export_glb",
    "export_ply_sequence",
    "glb_accessor",
    "glb_bytes",
    "read_glb",
    "render_frames",
    "write_contact_sheet",
    "write_preview_video",
]

_GLB_MAGIC = 0x46546C67  # "glTF"
_CHUNK_JSON = 0x4E4F534A
_CHUNK_BIN = 0x004E4942
_FLOAT, _UINT = 5126, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963


def _frames(asset_frames: int, frames: Sequence[int] | None) -> list[int]:
    chosen = list(range(asset_frames)) if frames is None else [int(t) for t in frames]
    if not chosen:
        raise ValueError("no frames chosen")
    bad = [t for t in chosen if not 0 <= t < asset_frames]
    if bad:
        raise IndexError(f"frames {bad} out of range: the asset has frames 0..{asset_frames - 1}")
    return chosen


@contextlib.contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix) that replaces ``path`` when the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -------------------------------------------------------------------------------------------- PLY sequence


def export_ply_sequence(
    asset: Asset4D, out_dir: str | Path, frames: Sequence[int] | None = None, prefix: str = "frame_"
) -> list[Path]:
    """One standard 3DGS PLY per frame (``frame_000.ply``, ...; at least three digits, more for > 1000 frames)
    into ``out_dir``. Returns the paths in frame order."""
    out_dir = Path(out_dir)
    chosen = _frames(asset.num_frames, frames)
    width = max(3, len(str(asset.num_frames - 1)))
    return [save_ply(frame_model(asset, t), out_dir / f"{prefix}{t:0{width}d}.ply") for t in chosen]


# --------------------------------------------------------------------------------------------------- glTF


class _GlbBuilder:
    def __init__(self) -> None:
        self.bin = bytearray()
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def view(self, data: bytes, target: int | None = None) -> int:
        self.bin.extend(b"\0" * (-len(self.bin) % 4))
        view: dict[str, Any] = {"buffer": 0, "byteOffset": len(self.bin), "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        self.bin.extend(data)
        self.views.append(view)
        return len(self.views) - 1

    def accessor(self, array: np.ndarray, kind: str, target: int | None = None, minmax: bool = False) -> int:
        component = _UINT if array.dtype == np.uint32 else _FLOAT
        array = np.ascontiguousarray(array, dtype="<u4" if component == _UINT else "<f4")
        count = array.shape[0] if kind != "SCALAR" or array.ndim == 1 else array.size
        acc: dict[str, Any] = {
            "bufferView": self.view(array.tobytes(), target),
            "componentType": component,
            "count": int(count),
            "type": kind,
        }
        if minmax:
            flat = array.reshape(count, -1)
            acc["min"] = [float(x) for x in flat.min(axis=0)] if count else [0.0] * flat.shape[1]
            acc["max"] = [float(x) for x in flat.max(axis=0)] if count else [0.0] * flat.shape[1]
        self.accessors.append(acc)
        return len(self.accessors) - 1


def _vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (+Y for vertices no face uses)."""
    v = vertices.astype(np.float64)
    tri = v[faces]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals = np.zeros_like(v)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_n)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.where(length > 1e-20, normals / np.maximum(length, 1e-30), np.array([0.0, 1.0, 0.0]))
    return normals.astype(np.float32)


def glb_bytes(
    mesh: AnimatedMesh,
    fps: float,
    frames: Sequence[int] | None = None,
    interpolation: str = "LINEAR",
    name: str = "pla4d_asset",
    extras: dict | None = None,
) -> bytes:
    """The animated mesh as a GLB (see :func:`export_glb`)."""
    if interpolation not in ("LINEAR", "STEP"):
        raise ValueError(f"interpolation must be LINEAR or STEP, got {interpolation!r}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if mesh.num_vertices == 0 or mesh.num_faces == 0:
        raise ValueError("the animated mesh has no vertices or no faces; glTF accessors cannot be empty")
    chosen = _frames(mesh.num_frames, frames)
    positions = np.stack([np.asarray(mesh.positions[t], dtype=np.float32) for t in chosen])
    if not np.isfinite(positions).all():
        raise ValueError("the animated mesh has non-finite vertex positions")
    count = len(chosen)
    base = positions[0]
    b = _GlbBuilder()
    attributes = {
        "POSITION": b.accessor(base, "VEC3", _ARRAY_BUFFER, minmax=True),
        "NORMAL": b.accessor(_vertex_normals(base, mesh.faces), "VEC3", _ARRAY_BUFFER),
    }
    if mesh.vertex_colors is not None:
        attributes["COLOR_0"] = b.accessor(np.clip(mesh.vertex_colors, 0.0, 1.0), "VEC3", _ARRAY_BUFFER)
    if mesh.uvs is not None:
        attributes["TEXCOORD_0"] = b.accessor(mesh.uvs, "VEC2", _ARRAY_BUFFER)
    indices = b.accessor(mesh.faces.astype(np.uint32).reshape(-1), "SCALAR", _ELEMENT_ARRAY_BUFFER, minmax=True)
    targets = [{"POSITION": b.accessor(positions[i] - base, "VEC3", _ARRAY_BUFFER, minmax=True)} for i in range(count)]
    width = max(3, len(str(max(chosen))))
    primitive: dict[str, Any] = {
        "attributes": attributes,
        "indices": indices,
        "material": 0,
        "mode": 4,
        "targets": targets,
    }
    pbr: dict[str, Any] = {"baseColorFactor": [1.0, 1.0, 1.0, 1.0], "metallicFactor": 0.0, "roughnessFactor": 1.0}
    doc: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": f"pla4d {__version__}"},
        "scene": 0,
        "scenes": [{"name": name, "nodes": [0]}],
        "nodes": [{"name": name, "mesh": 0}],
        "meshes": [
            {
                "name": name,
                "primitives": [primitive],
                "weights": [0.0] * count,
                "extras": {"targetNames": [f"frame_{t:0{width}d}" for t in chosen]},
            }
        ],
        "materials": [{"name": f"{name}_material", "pbrMetallicRoughness": pbr, "doubleSided": True}],
    }
    if mesh.texture is not None:
        from PIL import Image

        png = io.BytesIO()
        Image.fromarray(mesh.texture).save(png, format="PNG")
        image_view = b.view(png.getvalue())
        doc["images"] = [{"bufferView": image_view, "mimeType": "image/png"}]
        doc["samplers"] = [{"magFilter": 9729, "minFilter": 9987, "wrapS": 10497, "wrapT": 10497}]
        doc["textures"] = [{"sampler": 0, "source": 0}]
        pbr["baseColorTexture"] = {"index": 0, "texCoord": 0}
    if count > 1:
        times = np.arange(count, dtype=np.float32) / np.float32(fps)
        weights = np.eye(count, dtype=np.float32).reshape(-1)  # keyframe k: weight 1 on target k
        doc["animations"] = [
            {
                "name": f"{name}_motion",
                "samplers": [
                    {
                        "input": b.accessor(times, "SCALAR", minmax=True),
                        "output": b.accessor(weights, "SCALAR"),
                        "interpolation": interpolation,
                    }
                ],
                "channels": [{"sampler": 0, "target": {"node": 0, "path": "weights"}}],
            }
        ]
    doc["extras"] = {"pla4d": {"fps": float(fps), "frames": chosen, **(extras or {})}}
    b.bin.extend(b"\0" * (-len(b.bin) % 4))
    doc["buffers"] = [{"byteLength": len(b.bin)}]
    doc["bufferViews"] = b.views
    doc["accessors"] = b.accessors
    text = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)
    total = 12 + 8 + len(text) + 8 + len(b.bin)
    return b"".join(
        [
            struct.pack("<III", _GLB_MAGIC, 2, total),
            struct.pack("<II", len(text), _CHUNK_JSON),
            text,
            struct.pack("<II", len(b.bin), _CHUNK_BIN),
            bytes(b.bin),
        ]
    )


def export_glb(
    asset: Asset4D | AnimatedMesh,
    path: str | Path,
    fps: float | None = None,
    frames: Sequence[int] | None = None,
    interpolation: str = "LINEAR",
    name: str = "pla4d_asset",
) -> Path:
    """Write the animated mesh (of an asset, or given directly) as a glTF 2.0 binary with one morph target per
    frame and a ``weights`` animation that plays them in sequence at ``fps`` (default: the asset's).

    The base mesh (POSITION, NORMAL) is the first chosen frame; target k holds the offsets of chosen frame k from
    it (target 0 is zero), with the min/max bounds the spec requires. ``LINEAR`` interpolation blends
    neighbouring frames linearly between keyframes, ``STEP`` holds each frame. Vertex colours go to COLOR_0
    (linear, as glTF defines it), UVs and texture to TEXCOORD_0 and the base-colour texture.
    """
    if isinstance(asset, Asset4D):
        if asset.mesh is None:
            raise ValueError("this asset has no animated mesh to export")
        mesh, fps = asset.mesh, asset.fps if fps is None else fps
        extras = {"start_frame": asset.start_frame, "prompt": asset.meta.get("prompt")}
    else:
        if fps is None:
            raise ValueError("give fps when exporting an AnimatedMesh")
        mesh, extras = asset, {}
    data = glb_bytes(mesh, float(fps), frames, interpolation, name, extras)
    return atomic_write_bytes(path, data)


def read_glb(path: str | Path) -> tuple[dict, bytes]:
    """Parse a GLB file into (the glTF JSON document, the BIN chunk); ValueError for a malformed container."""
    raw = Path(path).read_bytes()
    if len(raw) < 20:
        raise ValueError(f"{path}: too short for a GLB file")
    magic, version, length = struct.unpack_from("<III", raw, 0)
    if magic != _GLB_MAGIC or version != 2 or length != len(raw):
        raise ValueError(f"{path}: not a glTF 2.0 binary (magic/version/length mismatch)")
    json_len, json_type = struct.unpack_from("<II", raw, 12)
    if json_type != _CHUNK_JSON:
        raise ValueError(f"{path}: the first GLB chunk is not JSON")
    doc = json.loads(raw[20 : 20 + json_len].decode("utf-8"))
    offset = 20 + json_len
    binary = b""
    if offset < len(raw):
        bin_len, bin_type = struct.unpack_from("<II", raw, offset)
        if bin_type != _CHUNK_BIN:
            raise ValueError(f"{path}: the second GLB chunk is not BIN")
        binary = raw[offset + 8 : offset + 8 + bin_len]
    return doc, binary


def glb_accessor(doc: dict, binary: bytes, index: int) -> np.ndarray:
    """The data of accessor ``index`` (float32 or uint32, tightly packed, as :func:`glb_bytes` writes them)."""
    acc = doc["accessors"][index]
    view = doc["bufferViews"][acc["bufferView"]]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[acc["type"]]
    dtype = {_FLOAT: "<f4", _UINT: "<u4"}[acc["componentType"]]
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    data = np.frombuffer(binary, dtype=dtype, count=acc["count"] * width, offset=start)
    return data.reshape(acc["count"], width) if width > 1 else data


# ---------------------------------------------------------------------------------------- preview renders


def _background(background: Sequence[float]) -> torch.Tensor:
    bg = torch.as_tensor(background, dtype=torch.float32)
    if bg.shape != (3,):
        raise ValueError(f"background must be an RGB triple, got {tuple(bg.shape)}")
    return bg


@torch.no_grad()
def render_frames(
    asset: Asset4D,
    frames: Sequence[int],
    azimuths_deg: Sequence[float],
    elevation_deg: float = 15.0,
    size: int = 256,
    radius: float = 3.0,
    fov_deg: float = 49.1,
    background: Sequence[float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """Render frame ``frames[k]`` from the orbit camera at ``azimuths_deg[k]`` for each k: (K, H, W, 3) sRGB in
    [0, 1]. Consecutive equal frames share one model (so a view grid of one frame renders in one call)."""
    if len(frames) != len(azimuths_deg):
        raise ValueError("give one azimuth per frame")
    chosen = _frames(asset.num_frames, frames)
    bg = _background(background)
    out: list[np.ndarray] = []
    k = 0
    while k < len(chosen):
        stop = k
        while stop < len(chosen) and chosen[stop] == chosen[k]:
            stop += 1
        cams = orbit_cameras(list(azimuths_deg[k:stop]), elevation_deg, radius, fov_deg, size)
        render = frame_model(asset, chosen[k]).render(cams, background=bg)
        out.extend(render.rgb.clamp(0.0, 1.0).cpu().numpy())
        k = stop
    return np.stack(out)


def write_preview_video(
    asset: Asset4D,
    path: str | Path,
    frames: Sequence[int] | None = None,
    loops: int = 2,
    orbit_deg: float = 360.0,
    start_azimuth_deg: float = 0.0,
    elevation_deg: float = 15.0,
    size: int = 256,
    fps: float | None = None,
    radius: float = 3.0,
    fov_deg: float = 49.1,
    background: Sequence[float] = (1.0, 1.0, 1.0),
) -> Path:
    """A turntable MP4: the asset plays ``frames`` (default all) ``loops`` times while the camera orbits
    ``orbit_deg`` degrees around it (from the front view, azimuth 0, towards +X), at ``fps`` (default the
    asset's). Rendered with the Gaussian rasterizer at ``size`` x ``size`` pixels."""
    if loops < 1:
        raise ValueError(f"loops must be >= 1, got {loops}")
    if size % 2:
        raise ValueError(f"the video size must be even (H.264), got {size}")
    from pla4d.media import write_video

    chosen = _frames(asset.num_frames, frames) * loops
    total = len(chosen)
    azimuths = [start_azimuth_deg + orbit_deg * k / total for k in range(total)]
    images = render_frames(asset, chosen, azimuths, elevation_deg, size, radius, fov_deg, background)
    path = Path(path)
    with _atomic_path(path) as tmp:
        write_video(tmp, list(images), asset.fps if fps is None else fps)
    return path


def write_contact_sheet(
    asset: Asset4D,
    path: str | Path,
    frames: Sequence[int] | int = 6,
    azimuths_deg: Sequence[float] = (0.0, 90.0, 180.0, 270.0),
    elevation_deg: float = 15.0,
    size: int = 128,
    radius: float = 3.0,
    fov_deg: float = 49.1,
    background: Sequence[float] = (1.0, 1.0, 1.0),
) -> Path:
    """A PNG grid: one row per azimuth, one column per frame (``frames``: a list, or a count spread evenly
    over the asset from the first to the last frame)."""
    from PIL import Image

    from pla4d.media import contact_sheet, to_uint8

    if isinstance(frames, int):
        count = max(1, min(frames, asset.num_frames))
        chosen = sorted({round(i * (asset.num_frames - 1) / max(count - 1, 1)) for i in range(count)})
    else:
        chosen = _frames(asset.num_frames, frames)
    azimuths = list(azimuths_deg)
    columns = [
        render_frames(asset, [t] * len(azimuths), azimuths, elevation_deg, size, radius, fov_deg, background)
        for t in chosen
    ]
    rows = [[columns[j][i] for j in range(len(chosen))] for i in range(len(azimuths))]
    sheet = contact_sheet(rows, background=float(np.mean(background)))
    png = io.BytesIO()
    Image.fromarray(to_uint8(sheet)).save(png, format="PNG")
    return atomic_write_bytes(path, png.getvalue())
