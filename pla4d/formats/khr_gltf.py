"""Gaussian splats as glTF 2.0 with the ``KHR_gaussian_splatting`` extension: written as GLB, read from GLB or
.gltf (embedded data URI or external buffers). The container (GLB chunks, JSON, buffers, buffer views, accessors,
alignment) is ``pygltflib``'s; this module holds the extension's semantics only: which attributes, in which
convention, how they map to ours, how the motion is carried, and what we refuse to read. The Blender add-on vendors
this package and bundles pygltflib's wheels (build_addon.py).

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

import os
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pygltflib as gl

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
_COMPONENTS = {gl.SCALAR: 1, gl.VEC2: 2, gl.VEC3: 3, gl.VEC4: 4}
# componentType -> (numpy dtype, divisor of a normalised integer per glTF 2.0 section 3.11; signed ones clamp at -1).
# pygltflib stops at the JSON and the bytes: turning an accessor into numbers is left to its callers.
_COMPONENT_TYPES = {gl.BYTE: ("<i1", 127.0), gl.UNSIGNED_BYTE: ("<u1", 255.0), gl.SHORT: ("<i2", 32767.0),
                    gl.UNSIGNED_SHORT: ("<u2", 65535.0), gl.UNSIGNED_INT: ("<u4", None),
                    gl.FLOAT: ("<f4", None)}  # fmt: skip
# What a malformed file makes pygltflib (struct, json, dataclasses-json) or our accessor lookups raise.
_MALFORMED = (ValueError, TypeError, KeyError, IndexError, AttributeError, struct.error)


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
    """A pygltflib document and its one binary blob: one buffer view and float32 accessor per array."""

    def __init__(self) -> None:
        self.gltf = gl.GLTF2()
        self.chunks: list[bytes] = []
        self.size = 0

    def accessor(self, array: np.ndarray, kind: str, vertex: bool = False, minmax: bool = False) -> int:
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()  # float32: every view stays 4-byte aligned
        self.gltf.bufferViews.append(gl.BufferView(buffer=0, byteOffset=self.size, byteLength=len(data),
                                                   target=gl.ARRAY_BUFFER if vertex else None))  # fmt: skip
        self.chunks.append(data)
        self.size += len(data)
        width = _COMPONENTS[kind]
        count = np.size(array) // width
        acc = gl.Accessor(bufferView=len(self.gltf.bufferViews) - 1, byteOffset=None, componentType=gl.FLOAT,
                          normalized=None, count=int(count), type=kind)  # fmt: skip
        if minmax:
            flat = np.asarray(array, np.float32).reshape(count, width).astype(np.float64)
            acc.min = [float(x) for x in flat.min(axis=0)]
            acc.max = [float(x) for x in flat.max(axis=0)]
        self.gltf.accessors.append(acc)
        return len(self.gltf.accessors) - 1

    def glb(self) -> bytes:
        self.gltf.buffers = [gl.Buffer(byteLength=self.size)]
        self.gltf.set_binary_blob(b"".join(self.chunks))
        return b"".join(self.gltf.save_to_bytes())


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
    ``fps`` that plays them in order (module docstring); the base stays the given Gaussians. pygltflib leaves out
    keys whose value is None or empty, in ``extras`` too."""
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
        "POSITION": b.accessor(base, gl.VEC3, vertex=True, minmax=True),
        "COLOR_0": b.accessor(colour, gl.VEC4, vertex=True),
        ROTATION: b.accessor(_unit_xyzw(_check("rotations", g["rotations"], n, 4)), gl.VEC4, vertex=True),
        SCALE: b.accessor(scales_to_blender(_check("scales", g["scales"], n, 3)), gl.VEC3, vertex=True),
        OPACITY: b.accessor(opacity, gl.SCALAR, vertex=True),
        sh_semantic(0, 0): b.accessor(sh_dc, gl.VEC3, vertex=True),
    }
    if rest.shape[1] not in (0, 3, 8, 15):
        raise ValueError(f"{rest.shape[1]} SH coefficients per channel past DC do not make a whole degree (1..3)")
    for k, semantic in enumerate(_rest_semantics(rest.shape[1])):
        attributes[semantic] = b.accessor(rest[:, k], gl.VEC3, vertex=True)
    splat = {"kernel": "ellipse", "colorSpace": "srgb_rec709_display", "projection": "perspective",
             "sortingMethod": "cameraDistance"}  # fmt: skip
    primitive = gl.Primitive(attributes=gl.Attributes(**attributes), mode=gl.POINTS, extensions={EXTENSION: splat})
    mesh = gl.Mesh(name=name, primitives=[primitive])
    count = 0 if motion is None else motion.shape[0]
    gltf = b.gltf
    if count:
        primitive.targets = [gl.Attributes(POSITION=b.accessor(p - base, gl.VEC3, vertex=True, minmax=True))
                             for p in motion]  # fmt: skip
        mesh.weights = [0.0] * count
        width = max(3, len(str(count - 1)))
        mesh.extras = {"targetNames": [f"frame_{t:0{width}d}" for t in range(count)]}
        times = np.arange(count, dtype=np.float32) / np.float32(fps)
        weights = np.eye(count, dtype=np.float32)  # keyframe k: weight 1 on target k
        sampler = gl.AnimationSampler(input=b.accessor(times, gl.SCALAR, minmax=True),
                                      output=b.accessor(weights, gl.SCALAR), interpolation=gl.ANIM_LINEAR)  # fmt: skip
        channel = gl.AnimationChannel(sampler=0, target=gl.AnimationChannelTarget(node=0, path=gl.WEIGHTS))
        gltf.animations = [gl.Animation(name=f"{name}_motion", samplers=[sampler], channels=[channel])]
    gltf.asset = gl.Asset(version="2.0", generator=generator)
    gltf.extensionsUsed = [EXTENSION]
    gltf.scene = 0
    gltf.scenes = [gl.Scene(name=name, nodes=[0])]
    gltf.nodes = [gl.Node(name=name, mesh=0)]
    gltf.meshes = [mesh]
    gltf.extras = {"pla4d": {"fps": float(fps), "frame_count": max(count, 1), **(extras or {})}}
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


def _load(path: Path) -> gl.GLTF2:
    """The document by its content (a GLB named .gltf, or the reverse, still loads)."""
    data = path.read_bytes()
    if data[:4] == gl.MAGIC:
        try:
            gltf = gl.GLTF2.load_from_bytes(data)
        except struct.error:  # a header or chunk header cut short
            raise KhrError(f"{path}: the GLB is truncated") from None
        except _MALFORMED as exc:
            raise KhrError(f"{path}: not a readable GLB ({exc!r})") from None
        if gltf is None:
            raise KhrError(f"{path}: the GLB has no JSON chunk")
    else:
        try:
            gltf = gl.GLTF2.gltf_from_json(data.decode("utf-8"))
        except (UnicodeDecodeError, *_MALFORMED) as exc:
            raise KhrError(f"{path} is neither a GLB nor glTF JSON ({exc!r})") from None
    gltf._path = path.parent  # where pygltflib looks for external buffers
    return gltf


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.gltf = _load(path)
        self.buffers: dict[int, bytes] = {}

    def buffer(self, index: int) -> bytes:
        if index not in self.buffers:
            uri = self.gltf.buffers[index].uri
            if uri is not None and uri.startswith("data:") and not uri.startswith(gl.DATA_URI_HEADER):
                # pygltflib decodes the octet-stream media type only; glTF also allows application/gltf-buffer.
                uri = gl.DATA_URI_HEADER + uri.partition(",")[2]
            with warnings.catch_warnings():  # pygltflib warns and returns None for a lost file: our error says which
                warnings.simplefilter("ignore")
                data = self.gltf.get_data_from_buffer_uri(uri)
            if data is None:
                where = "the file has no binary chunk" if uri is None else f"{uri[:60]} cannot be found"
                raise KhrError(f"{self.path}: buffer {index} cannot be read ({where})")
            self.buffers[index] = data
        return self.buffers[index]

    def accessor(self, index: int) -> np.ndarray:
        """Accessor ``index`` as float32 (N, C) or (N,), normalised integers divided out (glTF 2.0 section 3.11)."""
        acc = self.gltf.accessors[index]
        if acc.sparse is not None:
            raise KhrError(f"{self.path}: sparse accessors are not supported (accessor {index})")
        dtype, divisor = _COMPONENT_TYPES[acc.componentType]
        width, count = _COMPONENTS[acc.type], int(acc.count)
        if acc.bufferView is None:
            out = np.zeros((count, width), np.float32)
        else:
            view = self.gltf.bufferViews[acc.bufferView]
            data = self.buffer(view.buffer)
            start = int(view.byteOffset or 0) + int(acc.byteOffset or 0)
            item = np.dtype(dtype).itemsize
            stride = int(view.byteStride or 0) or width * item
            need = start + (count - 1) * stride + width * item if count else start
            if need > len(data):
                raise KhrError(f"{self.path}: accessor {index} runs past the end of its buffer")
            rows = np.ndarray((count, width), np.dtype(dtype), data, start, (stride, item))
            out = rows.astype(np.float32)
            if acc.normalized and divisor is not None:
                out = np.maximum(out / divisor, -1.0)
        return out[:, 0] if width == 1 else out


def _node_for_mesh(gltf: gl.GLTF2, mesh: int) -> int | None:
    for i, node in enumerate(gltf.nodes):
        if node.mesh == mesh:
            return i
    return None


def _check_node_identity(path: Path, gltf: gl.GLTF2, node: int | None) -> None:
    """Only nodes without a transform are read (a transformed splat field would need its covariances rotated)."""
    parents = {c: i for i, n in enumerate(gltf.nodes) for c in n.children or []}
    identity = {"matrix": np.eye(4).ravel(), "translation": [0, 0, 0], "rotation": [0, 0, 0, 1], "scale": [1, 1, 1]}
    while node is not None:
        entry = gltf.nodes[node]
        for key, value in identity.items():
            given = getattr(entry, key)
            if given is not None and not np.allclose(given, value):
                raise KhrError(f"{path}: node {node} carries a transform; apply it in the authoring tool before import")
        node = parents.get(node)


def _weights_keyframes(reader: _Reader, node: int | None, targets: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(times (K,), weights (K, targets)) of the first weights animation of ``node``, if any."""
    for anim in reader.gltf.animations:
        for channel in anim.channels:
            if channel.target is not None and channel.target.path == gl.WEIGHTS and channel.target.node == node:
                sampler = anim.samplers[channel.sampler]
                times = reader.accessor(sampler.input).reshape(-1)
                values = reader.accessor(sampler.output).reshape(-1)
                per = 3 if sampler.interpolation == gl.ANIM_CUBICSPLINE else 1
                weights = values.reshape(len(times), per, targets)[:, per // 2]  # CUBICSPLINE: the value, not tangents
                return times, weights
    return None


def _splat_primitive(gltf: gl.GLTF2) -> tuple[int, gl.Primitive] | None:
    for m, mesh in enumerate(gltf.meshes):
        for prim in mesh.primitives:
            if EXTENSION in (prim.extensions or {}):
                return m, prim
    return None


def read_khr_gltf(path: str | os.PathLike[str]) -> SplatFrames:
    """The first ``KHR_gaussian_splatting`` primitive of a .glb / .gltf, in our storage convention (log-scales,
    opacity logits, (w, x, y, z) quaternions, SH DC of sRGB colours). POSITION morph targets driven by a weights
    animation become frames (one per keyframe: base + the keyframe's weighted targets); without an animation
    the file is one frame. Raises :class:`KhrError` for what it cannot read, OSError when it cannot open it."""
    path = Path(path)
    reader = _Reader(path)
    try:
        return _read(path, reader)
    except _MALFORMED as exc:
        if isinstance(exc, KhrError):
            raise
        raise KhrError(f"{path}: malformed glTF ({exc!r})") from None


def _read(path: Path, reader: _Reader) -> SplatFrames:
    gltf = reader.gltf
    found = _splat_primitive(gltf)
    if found is None:
        raise KhrError(f"{path} holds no {EXTENSION} primitive")
    m, prim = found
    attrs = {k: v for k, v in vars(prim.attributes).items() if v is not None}
    missing = [a for a in ("POSITION", ROTATION, SCALE, OPACITY, sh_semantic(0, 0)) if a not in attrs]
    if missing:
        raise KhrError(f"{path}: the splat primitive lacks {', '.join(missing)}")
    node = _node_for_mesh(gltf, m)
    _check_node_identity(path, gltf, node)
    positions = reader.accessor(attrs["POSITION"])
    xyzw = reader.accessor(attrs[ROTATION])
    sh_dc = reader.accessor(attrs[sh_semantic(0, 0)])
    rest = [reader.accessor(attrs[s]) for s in _rest_semantics(15) if s in attrs]
    if prim.extensions[EXTENSION].get("colorSpace") == "lin_rec709_display":
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
    fps = (gltf.extras or {}).get("pla4d", {}).get("fps")
    # pygltflib turns a primitive's attributes into an Attributes object and leaves its targets as JSON dicts.
    targets = [t if isinstance(t, dict) else vars(t) for t in prim.targets or []]
    keys = _weights_keyframes(reader, node, len(targets)) if targets else None
    if keys is not None:
        times, weights = keys
        offsets = [reader.accessor(t["POSITION"]) if t.get("POSITION") is not None else None for t in targets]
        frames = np.repeat(positions[None], len(times), axis=0)
        for k, offset in enumerate(offsets):
            if offset is not None:
                frames += weights[:, k, None, None] * offset[None]
        arrays["positions"] = frames
        if fps is None and len(times) > 1 and times[-1] > times[0]:
            fps = float((len(times) - 1) / (times[-1] - times[0]))
    return SplatFrames(canonical, arrays, float(fps) if fps else None)
