"""Gaussian splats as glTF 2.0 with the ``KHR_gaussian_splatting`` extension: written as GLB, read from GLB or
.gltf. numpy, json and struct only (the Blender add-on vendors this package, so no glTF library here; the tests
read the files back with ``pygltflib`` and check them against the extension's JSON schema).

One mesh primitive in ``POINTS`` mode (the extension's ``ellipse`` kernel) with the attributes the extension
defines, all float32:

=========================================== ====== ===================================================
attribute                                   type   value (from our storage convention, docs/asset-format.md)
=========================================== ====== ===================================================
``POSITION``                                VEC3   the centre, unchanged (+Y up, front +Z: glTF's own frame)
``KHR_gaussian_splatting:ROTATION``         VEC4   the quaternion normalised and reordered (w,x,y,z) -> (x,y,z,w)
``KHR_gaussian_splatting:SCALE``            VEC3   ``exp`` of the log-scales (linear, as the extension asks)
``KHR_gaussian_splatting:OPACITY``          SCALAR ``sigmoid`` of the logit, in [0, 1]
``KHR_gaussian_splatting:SH_DEGREE_0_COEF_0`` VEC3 the SH DC coefficients, unchanged
``KHR_gaussian_splatting:SH_DEGREE_l_COEF_n`` VEC3 higher SH degrees (3DGS's coefficient order is the same)
``COLOR_0``                                 VEC4   the fallback colour the extension recommends (linear RGB, opacity)
=========================================== ====== ===================================================

``colorSpace`` is ``srgb_rec709_display``: our SH DC encodes sRGB display colours (``0.5 + SH_C0 * dc``).

Motion: the base primitive holds the canonical (rest) Gaussians, and one morph target per frame holds that
frame's ``POSITION`` offsets from them, with one ``weights`` animation that puts weight 1 on target k at time k / fps
(glTF's core morphing). Only ``POSITION`` is morphed: the core specification lists which semantics a morph
target may hold (POSITION, NORMAL, TANGENT, TEXCOORD_n, COLOR_n) and the extension defines no morphing of its
own attributes, so rotations, scales and opacities stay canonical in that file. The per-frame GLB sequence
(one static file per frame) carries every attribute of every frame.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from .axes import opacities_from_blender, opacities_to_blender, scales_from_blender, scales_to_blender
from .colour import SH_C0, linear_to_srgb, srgb_to_linear
from .files import atomic_write_bytes

__all__ = [
    "EXTENSION",
    "KhrError",
    "SplatFrames",
    "khr_glb_bytes",
    "read_khr_gltf",
    "write_khr_glb",
]

EXTENSION = "KHR_gaussian_splatting"
ROTATION, SCALE, OPACITY = f"{EXTENSION}:ROTATION", f"{EXTENSION}:SCALE", f"{EXTENSION}:OPACITY"
_FLOAT, _POINTS, _ARRAY_BUFFER = 5126, 0, 34962
_COMPONENTS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}
# componentType -> (numpy dtype, divisor of a normalised integer per glTF 2.0 section 3.11; signed ones clamp at -1)
_COMPONENT_TYPES = {5120: ("<i1", 127.0), 5121: ("<u1", 255.0), 5122: ("<i2", 32767.0), 5123: ("<u2", 65535.0),
                    5125: ("<u4", None), 5126: ("<f4", None)}  # fmt: skip
_GLB_MAGIC, _JSON_CHUNK, _BIN_CHUNK = 0x46546C67, 0x4E4F534A, 0x004E4942


class KhrError(ValueError):
    """A file is not a readable KHR_gaussian_splatting glTF; the message names the path and the problem."""


def sh_semantic(degree: int, coef: int) -> str:
    return f"{EXTENSION}:SH_DEGREE_{degree}_COEF_{coef}"


def _rest_semantics(num_rest: int) -> list[str]:
    """The attribute names of 3DGS's f_rest coefficients 0..num_rest-1 (degree 1 m=-1..1, degree 2 m=-2..2, ...)."""
    names = [sh_semantic(degree, coef) for degree in (1, 2, 3) for coef in range(2 * degree + 1)]
    return names[:num_rest]


# ------------------------------------------------------------------------------------------------ writing


class _Builder:
    """The glTF JSON and its one binary buffer (4-byte aligned views, one per accessor)."""

    def __init__(self) -> None:
        self.gltf: dict[str, Any] = {"bufferViews": [], "accessors": []}
        self.data = bytearray()

    def accessor(self, array: np.ndarray, kind: str, vertex: bool = False, minmax: bool = False) -> int:
        array = np.ascontiguousarray(array, dtype="<f4")
        self.data.extend(b"\0" * (-len(self.data) % 4))
        view: dict[str, Any] = {"buffer": 0, "byteOffset": len(self.data), "byteLength": array.nbytes}
        if vertex:
            view["target"] = _ARRAY_BUFFER
        self.gltf["bufferViews"].append(view)
        self.data.extend(array.tobytes())
        width = _COMPONENTS[kind]
        count = array.size // width
        acc: dict[str, Any] = {"bufferView": len(self.gltf["bufferViews"]) - 1, "componentType": _FLOAT,
                               "count": int(count), "type": kind}  # fmt: skip
        if minmax:
            flat = array.reshape(count, width).astype(np.float64)
            acc["min"] = [float(x) for x in flat.min(axis=0)]
            acc["max"] = [float(x) for x in flat.max(axis=0)]
        self.gltf["accessors"].append(acc)
        return len(self.gltf["accessors"]) - 1

    def glb(self) -> bytes:
        self.data.extend(b"\0" * (-len(self.data) % 4))
        self.gltf["buffers"] = [{"byteLength": len(self.data)}]
        text = json.dumps(self.gltf, separators=(",", ":"), allow_nan=False).encode()
        text += b" " * (-len(text) % 4)
        total = 12 + 8 + len(text) + 8 + len(self.data)
        return b"".join([struct.pack("<III", _GLB_MAGIC, 2, total), struct.pack("<II", len(text), _JSON_CHUNK), text,
                         struct.pack("<II", len(self.data), _BIN_CHUNK), bytes(self.data)])  # fmt: skip


def _unit_xyzw(rotations_wxyz: np.ndarray) -> np.ndarray:
    q = np.asarray(rotations_wxyz, np.float64)
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    q = np.where(norm > 1e-12, q / np.maximum(norm, 1e-30), np.array([1.0, 0.0, 0.0, 0.0]))
    return np.roll(q, -1, axis=1).astype(np.float32)


def _check(name: str, value: np.ndarray, n: int, width: int) -> np.ndarray:
    value = np.asarray(value, np.float32).reshape(n, width) if width > 1 else np.asarray(value, np.float32).reshape(n)
    if not np.isfinite(value).all():
        raise ValueError(f"{name} has non-finite values; glTF accessors must be finite")
    return value


def khr_glb_bytes(
    gaussians: dict[str, np.ndarray],
    positions: np.ndarray | None = None,
    fps: float = 24.0,
    name: str = "pla4d_splats",
    extras: dict[str, Any] | None = None,
    generator: str = "pla4d",
) -> bytes:
    """A GLB of ``gaussians`` (storage convention, ``pla4d_formats.ply`` keys). With ``positions`` (T, N, 3), the
    motion: one POSITION morph target per frame (frame t's offsets from the base) and a weights animation at
    ``fps`` that plays them in order (module docstring); the base stays the given Gaussians."""
    g = gaussians
    n = int(np.shape(g["positions"])[0])
    if n == 0:
        raise ValueError("there are no Gaussians to write; glTF accessors cannot be empty")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    base = _check("positions", g["positions"], n, 3)
    motion = None if positions is None else np.asarray(positions, np.float32)
    if motion is not None and (motion.ndim != 3 or motion.shape[1:] != (n, 3) or motion.shape[0] == 0):
        raise ValueError(f"positions must be (T, {n}, 3), got {motion.shape}")
    if motion is not None and not np.isfinite(motion).all():
        raise ValueError("the per-frame positions have non-finite values; glTF accessors must be finite")
    b = _Builder()
    rest = np.asarray(g.get("sh_rest", np.zeros((n, 0, 3))), np.float32).reshape(n, -1, 3)
    sh_dc = _check("sh_dc", g["sh_dc"], n, 3)
    opacity = opacities_to_blender(_check("opacities", g["opacities"], n, 1))
    colour = np.empty((n, 4), np.float32)
    colour[:, :3] = srgb_to_linear(np.clip(0.5 + SH_C0 * sh_dc, 0.0, 1.0))
    colour[:, 3] = opacity
    attributes = {
        "POSITION": b.accessor(base, "VEC3", vertex=True, minmax=True),
        "COLOR_0": b.accessor(colour, "VEC4", vertex=True),
        ROTATION: b.accessor(_unit_xyzw(_check("rotations", g["rotations"], n, 4)), "VEC4", vertex=True),
        SCALE: b.accessor(scales_to_blender(_check("scales", g["scales"], n, 3)), "VEC3", vertex=True),
        OPACITY: b.accessor(opacity, "SCALAR", vertex=True),
        sh_semantic(0, 0): b.accessor(sh_dc, "VEC3", vertex=True),
    }
    if rest.shape[1] not in (0, 3, 8, 15):
        raise ValueError(f"{rest.shape[1]} SH coefficients per channel past DC do not make a whole degree (1..3)")
    for k, semantic in enumerate(_rest_semantics(rest.shape[1])):
        attributes[semantic] = b.accessor(rest[:, k], "VEC3", vertex=True)
    primitive: dict[str, Any] = {"attributes": attributes, "mode": _POINTS,
                                 "extensions": {EXTENSION: {"kernel": "ellipse", "colorSpace": "srgb_rec709_display",
                                                            "projection": "perspective",
                                                            "sortingMethod": "cameraDistance"}}}  # fmt: skip
    mesh: dict[str, Any] = {"name": name, "primitives": [primitive]}
    count = 0 if motion is None else motion.shape[0]
    if count:
        primitive["targets"] = [{"POSITION": b.accessor(p - base, "VEC3", vertex=True, minmax=True)}
                                for p in motion]  # fmt: skip
        mesh["weights"] = [0.0] * count
        width = max(3, len(str(count - 1)))
        mesh["extras"] = {"targetNames": [f"frame_{t:0{width}d}" for t in range(count)]}
        times = np.arange(count, dtype=np.float32) / np.float32(fps)
        weights = np.eye(count, dtype=np.float32)  # keyframe k: weight 1 on target k
        sampler = {"input": b.accessor(times, "SCALAR", minmax=True), "output": b.accessor(weights, "SCALAR"),
                   "interpolation": "LINEAR"}  # fmt: skip
        b.gltf["animations"] = [{"name": f"{name}_motion", "samplers": [sampler],
                                 "channels": [{"sampler": 0, "target": {"node": 0, "path": "weights"}}]}]  # fmt: skip
    b.gltf.update({
        "asset": {"version": "2.0", "generator": generator},
        "extensionsUsed": [EXTENSION],
        "scene": 0,
        "scenes": [{"name": name, "nodes": [0]}],
        "nodes": [{"name": name, "mesh": 0}],
        "meshes": [mesh],
        "extras": {"pla4d": {"fps": float(fps), "frame_count": max(count, 1), **(extras or {})}},
    })  # fmt: skip
    return b.glb()


def write_khr_glb(
    path: str | os.PathLike[str],
    gaussians: dict[str, np.ndarray],
    positions: np.ndarray | None = None,
    fps: float = 24.0,
    name: str = "pla4d_splats",
    extras: dict[str, Any] | None = None,
    generator: str = "pla4d",
) -> Path:
    """Write :func:`khr_glb_bytes` to ``path`` atomically."""
    return atomic_write_bytes(path, khr_glb_bytes(gaussians, positions, fps, name, extras, generator))


# ------------------------------------------------------------------------------------------------ reading


class SplatFrames:
    """Gaussians read from a foreign file: ``canonical`` (storage convention, ``pla4d_formats.ply`` keys) and the
    per-frame arrays that change (``arrays``: name -> (T, N, C)), plus the frame rate when the file has one."""

    def __init__(self, canonical: dict[str, np.ndarray], arrays: dict[str, np.ndarray], fps: float | None) -> None:
        self.canonical = canonical
        self.arrays = arrays
        self.fps = fps

    @property
    def frame_count(self) -> int:
        return int(self.arrays["positions"].shape[0]) if "positions" in self.arrays else 1


def _load(path: Path) -> tuple[dict[str, Any], bytes | None]:
    data = path.read_bytes()
    if data[:4] != b"glTF":
        try:
            return json.loads(data.decode("utf-8")), None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise KhrError(f"{path} is neither a GLB nor glTF JSON ({exc})") from None
    if len(data) < 20:
        raise KhrError(f"{path}: the GLB is truncated")
    _magic, version, length = struct.unpack_from("<III", data, 0)
    if version != 2 or length > len(data):
        raise KhrError(f"{path}: GLB version {version} or length {length} is not readable (file {len(data)} bytes)")
    offset, gltf, binary = 12, None, None
    while offset + 8 <= length:
        size, kind = struct.unpack_from("<II", data, offset)
        chunk = data[offset + 8 : offset + 8 + size]
        if kind == _JSON_CHUNK:
            gltf = json.loads(chunk.decode("utf-8"))
        elif kind == _BIN_CHUNK and binary is None:
            binary = chunk
        offset += 8 + size + (-size % 4)
    if gltf is None:
        raise KhrError(f"{path}: the GLB has no JSON chunk")
    return gltf, binary


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.gltf, self.binary = _load(path)
        self.buffers: dict[int, bytes] = {}

    def buffer(self, index: int) -> bytes:
        if index not in self.buffers:
            entry = self.gltf["buffers"][index]
            uri = entry.get("uri")
            if uri is None:
                if self.binary is None:
                    raise KhrError(f"{self.path}: buffer {index} has no uri and the file has no binary chunk")
                self.buffers[index] = self.binary
            elif uri.startswith("data:"):
                self.buffers[index] = base64.b64decode(uri.split(",", 1)[1])
            else:
                target = (self.path.parent / uri).resolve()
                self.buffers[index] = target.read_bytes()
        return self.buffers[index]

    def accessor(self, index: int) -> np.ndarray:
        """Accessor ``index`` as float32 (N, C) or (N,), normalised integers divided out (glTF 2.0 section 3.11)."""
        acc = self.gltf["accessors"][index]
        if "sparse" in acc:
            raise KhrError(f"{self.path}: sparse accessors are not supported (accessor {index})")
        dtype, divisor = _COMPONENT_TYPES[acc["componentType"]]
        width, count = _COMPONENTS[acc["type"]], int(acc["count"])
        if "bufferView" not in acc:
            out = np.zeros((count, width), np.float32)
        else:
            view = self.gltf["bufferViews"][acc["bufferView"]]
            data = self.buffer(view["buffer"])
            start = int(view.get("byteOffset", 0)) + int(acc.get("byteOffset", 0))
            item = np.dtype(dtype).itemsize
            stride = int(view.get("byteStride", 0)) or width * item
            need = start + (count - 1) * stride + width * item if count else start
            if need > len(data):
                raise KhrError(f"{self.path}: accessor {index} runs past the end of its buffer")
            rows = np.ndarray((count, width), np.dtype(dtype), data, start, (stride, item))
            out = rows.astype(np.float32)
            if acc.get("normalized") and divisor is not None:
                out = np.maximum(out / divisor, -1.0)
        return out[:, 0] if width == 1 else out


def _node_for_mesh(gltf: dict[str, Any], mesh: int) -> int | None:
    for i, node in enumerate(gltf.get("nodes", [])):
        if node.get("mesh") == mesh:
            return i
    return None


def _check_node_identity(path: Path, gltf: dict[str, Any], node: int | None) -> None:
    """Only nodes without a transform are read (a transformed splat field would need its covariances rotated)."""
    parents = {c: i for i, n in enumerate(gltf.get("nodes", [])) for c in n.get("children", [])}
    while node is not None:
        entry = gltf["nodes"][node]
        moved = any(key in entry for key in ("matrix", "translation", "rotation", "scale"))
        identity = (np.allclose(entry.get("matrix", np.eye(4).ravel()), np.eye(4).ravel())
                    and np.allclose(entry.get("translation", [0, 0, 0]), 0)
                    and np.allclose(entry.get("rotation", [0, 0, 0, 1]), [0, 0, 0, 1])
                    and np.allclose(entry.get("scale", [1, 1, 1]), 1))  # fmt: skip
        if moved and not identity:
            raise KhrError(f"{path}: node {node} carries a transform; apply it in the authoring tool before import")
        node = parents.get(node)


def _weights_keyframes(reader: _Reader, node: int | None, targets: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(times (K,), weights (K, targets)) of the first weights animation of ``node``, if any."""
    for anim in reader.gltf.get("animations", []):
        for channel in anim.get("channels", []):
            target = channel.get("target", {})
            if target.get("path") == "weights" and target.get("node") == node:
                sampler = anim["samplers"][channel["sampler"]]
                times = reader.accessor(sampler["input"]).reshape(-1)
                values = reader.accessor(sampler["output"]).reshape(-1)
                per = 3 if sampler.get("interpolation") == "CUBICSPLINE" else 1
                weights = values.reshape(len(times), per, targets)[:, per // 2]  # CUBICSPLINE: the value, not tangents
                return times, weights
    return None


def read_khr_gltf(path: str | os.PathLike[str]) -> SplatFrames:
    """The first ``KHR_gaussian_splatting`` primitive of a .glb / .gltf, in our storage convention (log-scales,
    opacity logits, (w, x, y, z) quaternions, SH DC of sRGB colours). POSITION morph targets driven by a weights
    animation become frames (one per keyframe: base + the keyframe's weighted targets); without an animation
    the file is one frame. Raises :class:`KhrError` for what it cannot read, OSError when it cannot open it."""
    path = Path(path)
    reader = _Reader(path)
    gltf = reader.gltf
    found = None
    for m, mesh in enumerate(gltf.get("meshes", [])):
        for prim in mesh.get("primitives", []):
            if EXTENSION in prim.get("extensions", {}):
                found = (m, mesh, prim)
                break
        if found:
            break
    if found is None:
        raise KhrError(f"{path} holds no {EXTENSION} primitive")
    m, mesh, prim = found
    attrs = prim["attributes"]
    missing = [a for a in ("POSITION", ROTATION, SCALE, OPACITY, sh_semantic(0, 0)) if a not in attrs]
    if missing:
        raise KhrError(f"{path}: the splat primitive lacks {', '.join(missing)}")
    node = _node_for_mesh(gltf, m)
    _check_node_identity(path, gltf, node)
    positions = reader.accessor(attrs["POSITION"])
    xyzw = reader.accessor(attrs[ROTATION])
    sh_dc = reader.accessor(attrs[sh_semantic(0, 0)])
    rest = [reader.accessor(attrs[s]) for s in _rest_semantics(15) if s in attrs]
    if prim["extensions"][EXTENSION].get("colorSpace") == "lin_rec709_display":
        # Our SH DC encodes sRGB display colours: re-encode the linear DC colour (higher degrees are kept as they are).
        srgb = linear_to_srgb(np.clip(0.5 + SH_C0 * sh_dc, 0.0, 1.0))
        sh_dc = ((srgb - 0.5) / SH_C0).astype(np.float32)
    canonical = {
        "positions": positions,
        "rotations": np.ascontiguousarray(np.roll(xyzw, 1, axis=1)),
        "scales": scales_from_blender(np.maximum(reader.accessor(attrs[SCALE]), 0.0)),
        "opacities": opacities_from_blender(np.clip(reader.accessor(attrs[OPACITY]), 0.0, 1.0)),
        "sh_dc": sh_dc,
        "sh_rest": np.stack(rest, axis=1) if rest else np.zeros((len(positions), 0, 3), np.float32),
    }
    arrays: dict[str, np.ndarray] = {}
    fps = (gltf.get("extras") or {}).get("pla4d", {}).get("fps")
    targets = prim.get("targets", [])
    keys = _weights_keyframes(reader, node, len(targets)) if targets else None
    if keys is not None:
        times, weights = keys
        offsets = [reader.accessor(t["POSITION"]) if "POSITION" in t else None for t in targets]
        frames = np.repeat(positions[None], len(times), axis=0)
        for k, offset in enumerate(offsets):
            if offset is not None:
                frames += weights[:, k, None, None] * offset[None]
        arrays["positions"] = frames
        if fps is None and len(times) > 1 and times[-1] > times[0]:
            fps = float((len(times) - 1) / (times[-1] - times[0]))
    return SplatFrames(canonical, arrays, float(fps) if fps else None)
