"""Exports of a 4D asset: a PLY sequence, the splats as ``KHR_gaussian_splatting`` GLB (canonical + morph-target
motion, or one GLB per frame), SPZ (canonical, or one per frame), the animated mesh as glTF 2.0 binary (.glb), a
preview video and a contact sheet. Every file is written atomically (a temporary file beside it, renamed when
complete). :data:`EXPORT_FORMATS` names the file exports for ``pla4d export`` and the exports stage.

The glTF export keeps the project's frame (+Y up, object facing +Z, which is glTF's own convention: no axis
change) and reads 1 unit as 1 metre. The animation is one morph target per frame (target t holds frame t's
vertex offsets from frame 0, the base) and one ``weights`` channel whose keyframe t puts weight 1 on target t
and 0 on the others, so importers (Blender's included) play the frames in sequence. The GLB is assembled by
``pygltflib`` (container, JSON, padding); the PLY files are written by ``pla4d.formats.ply``, the writer the
Blender add-on's PLY export uses too.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pygltflib
import torch

from pla4d import __version__
from pla4d.asset.format import AnimatedMesh, Asset4D, frame_model
from pla4d.cameras import orbit_cameras
from pla4d.formats.exports import EXPORT_FORMATS
from pla4d.formats.khr_gltf import write_khr_glb
from pla4d.formats.ply import sequence_frames as _frames
from pla4d.formats.ply import write_ply_sequence
from pla4d.formats.sequences import write_sequence
from pla4d.formats.spz import write_spz
from pla4d.gaussians.ply import model_arrays
from pla4d.runfolder import atomic_write_bytes

__all__ = [
    "EXPORT_FORMATS",
    "export_format",
    "export_glb",
    "export_khr_glb",
    "export_khr_glb_sequence",
    "export_ply_sequence",
    "export_run",
    "export_splat_formats",
    "export_spz",
    "export_spz_sequence",
    "glb_bytes",
    "render_frames",
    "write_contact_sheet",
    "write_preview_video",
]


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


def _gaussians_at(asset: Asset4D) -> Callable[[int], dict[str, np.ndarray]]:
    """Frame t's Gaussians as arrays: its animated attributes replace the canonical columns one for one (what
    ``frame_model`` does with tensors)."""
    canonical = model_arrays(asset.canonical)

    def gaussians_at(t: int) -> dict[str, np.ndarray]:
        return {**canonical, **{name: np.asarray(getattr(asset, name)[t], np.float32) for name in asset.animated}}

    return gaussians_at


def export_ply_sequence(
    asset: Asset4D, out_dir: str | Path, frames: Sequence[int] | None = None, prefix: str = "frame_"
) -> list[Path]:
    """One standard 3DGS PLY per frame (``frame_000.ply``, ...; at least three digits, more for > 1000 frames)
    into ``out_dir``. Returns the paths in frame order."""
    return write_ply_sequence(out_dir, asset.num_frames, _gaussians_at(asset), frames, prefix)


# ------------------------------------------------------------------------------------ splat formats (KHR, SPZ)


def export_khr_glb(asset: Asset4D, path: str | Path, frames: Sequence[int] | None = None) -> Path:
    """The splats as one ``KHR_gaussian_splatting`` GLB (pla4d.formats.khr_gltf): the canonical Gaussians as the
    base primitive, each chosen frame's positions as a morph target, and a weights animation at the asset's fps.
    Rotations, scales and opacities stay canonical (glTF morphs POSITION only); the GLB sequence has them all."""
    chosen = _frames(asset.num_frames, frames)
    positions = np.stack([np.asarray(asset.positions[t], np.float32) for t in chosen])
    extras = {"frames": chosen, "start_frame": asset.start_frame, "prompt": asset.meta.get("prompt")}
    return write_khr_glb(path, model_arrays(asset.canonical), positions, asset.fps, extras=extras,
                         generator=f"pla4d {__version__}")  # fmt: skip


def export_khr_glb_sequence(
    asset: Asset4D, out_dir: str | Path, frames: Sequence[int] | None = None, prefix: str = "frame_"
) -> list[Path]:
    """One static ``KHR_gaussian_splatting`` GLB per frame (``frame_000.glb``, ...) with every attribute of that
    frame, for tools that read static splats only."""

    def write_one(path: Path, **gaussians: np.ndarray) -> Path:
        return write_khr_glb(path, gaussians, fps=asset.fps, generator=f"pla4d {__version__}")

    return write_sequence(out_dir, asset.num_frames, _gaussians_at(asset), write_one, ".glb", frames, prefix)


def export_spz(asset: Asset4D, path: str | Path) -> Path:
    """The canonical Gaussians as one SPZ file (Niantic's compressed format, through gsply; pla4d.formats.spz)."""
    return write_spz(path, **model_arrays(asset.canonical))


def export_spz_sequence(
    asset: Asset4D, out_dir: str | Path, frames: Sequence[int] | None = None, prefix: str = "frame_"
) -> list[Path]:
    """One SPZ file per frame (``frame_000.spz``, ...)."""
    return write_sequence(out_dir, asset.num_frames, _gaussians_at(asset), write_spz, ".spz", frames, prefix)


def export_format(asset: Asset4D, name: str, out: str | Path, frames: Sequence[int] | None = None) -> list[Path]:
    """Write export ``name`` (a key of :data:`EXPORT_FORMATS`) to ``out`` (a file, or a folder for a sequence);
    returns the paths written."""
    if name not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {name!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    writers: dict[str, Callable[[], Path | list[Path]]] = {
        "ply-sequence": lambda: export_ply_sequence(asset, out, frames),
        "khr-glb": lambda: export_khr_glb(asset, out, frames),
        "khr-glb-sequence": lambda: export_khr_glb_sequence(asset, out, frames),
        "spz": lambda: export_spz(asset, out),
        "spz-sequence": lambda: export_spz_sequence(asset, out, frames),
        "mesh-glb": lambda: export_glb(asset, out, frames=frames),
    }
    written = writers[name]()
    return written if isinstance(written, list) else [written]


# --------------------------------------------------------------------------------------------------- glTF


class _Buffer:
    """The GLB's one binary buffer: 4-byte aligned buffer views and their accessors, added to ``gltf``."""

    def __init__(self, gltf: pygltflib.GLTF2) -> None:
        self.gltf = gltf
        self.data = bytearray()

    def view(self, data: bytes, target: int | None = None) -> int:
        self.data.extend(b"\0" * (-len(self.data) % 4))
        self.gltf.bufferViews.append(
            pygltflib.BufferView(buffer=0, byteOffset=len(self.data), byteLength=len(data), target=target)
        )
        self.data.extend(data)
        return len(self.gltf.bufferViews) - 1

    def accessor(self, array: np.ndarray, kind: str, target: int | None = None, minmax: bool = False) -> int:
        uint = array.dtype == np.uint32
        array = np.ascontiguousarray(array, dtype="<u4" if uint else "<f4")
        count = array.shape[0] if kind != pygltflib.SCALAR or array.ndim == 1 else array.size
        acc = pygltflib.Accessor(
            bufferView=self.view(array.tobytes(), target),
            componentType=pygltflib.UNSIGNED_INT if uint else pygltflib.FLOAT,
            count=int(count),
            type=kind,
        )
        if minmax:
            flat = array.reshape(count, -1)
            acc.min = [float(x) for x in flat.min(axis=0)] if count else [0.0] * flat.shape[1]
            acc.max = [float(x) for x in flat.max(axis=0)] if count else [0.0] * flat.shape[1]
        self.gltf.accessors.append(acc)
        return len(self.gltf.accessors) - 1


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
    gltf = pygltflib.GLTF2(asset=pygltflib.Asset(version="2.0", generator=f"pla4d {__version__}"))
    b = _Buffer(gltf)
    vec3, vertex_data = pygltflib.VEC3, pygltflib.ARRAY_BUFFER
    attributes = pygltflib.Attributes(
        POSITION=b.accessor(base, vec3, vertex_data, minmax=True),
        NORMAL=b.accessor(_vertex_normals(base, mesh.faces), vec3, vertex_data),
    )
    if mesh.vertex_colors is not None:
        attributes.COLOR_0 = b.accessor(np.clip(mesh.vertex_colors, 0.0, 1.0), vec3, vertex_data)
    if mesh.uvs is not None:
        attributes.TEXCOORD_0 = b.accessor(mesh.uvs, pygltflib.VEC2, vertex_data)
    indices = b.accessor(
        mesh.faces.astype(np.uint32).reshape(-1), pygltflib.SCALAR, pygltflib.ELEMENT_ARRAY_BUFFER, minmax=True
    )
    targets = [
        pygltflib.Attributes(POSITION=b.accessor(positions[i] - base, vec3, vertex_data, minmax=True))
        for i in range(count)
    ]
    width = max(3, len(str(max(chosen))))
    gltf.scene = 0
    gltf.scenes = [pygltflib.Scene(name=name, nodes=[0])]
    gltf.nodes = [pygltflib.Node(name=name, mesh=0)]
    gltf.meshes = [
        pygltflib.Mesh(
            name=name,
            primitives=[
                pygltflib.Primitive(attributes=attributes, indices=indices, material=0, mode=4, targets=targets)
            ],
            weights=[0.0] * count,
            extras={"targetNames": [f"frame_{t:0{width}d}" for t in chosen]},
        )
    ]
    pbr = pygltflib.PbrMetallicRoughness(baseColorFactor=[1.0, 1.0, 1.0, 1.0], metallicFactor=0.0, roughnessFactor=1.0)
    gltf.materials = [pygltflib.Material(name=f"{name}_material", pbrMetallicRoughness=pbr, doubleSided=True)]
    if mesh.texture is not None:
        from PIL import Image

        png = io.BytesIO()
        Image.fromarray(mesh.texture).save(png, format="PNG")
        gltf.images = [pygltflib.Image(bufferView=b.view(png.getvalue()), mimeType="image/png")]
        gltf.samplers = [pygltflib.Sampler(magFilter=9729, minFilter=9987, wrapS=10497, wrapT=10497)]
        gltf.textures = [pygltflib.Texture(sampler=0, source=0)]
        pbr.baseColorTexture = pygltflib.TextureInfo(index=0, texCoord=0)
    if count > 1:
        times = np.arange(count, dtype=np.float32) / np.float32(fps)
        weights = np.eye(count, dtype=np.float32).reshape(-1)  # keyframe k: weight 1 on target k
        sampler = pygltflib.AnimationSampler(
            input=b.accessor(times, pygltflib.SCALAR, minmax=True),
            output=b.accessor(weights, pygltflib.SCALAR),
            interpolation=interpolation,
        )
        channel = pygltflib.AnimationChannel(sampler=0, target=pygltflib.AnimationChannelTarget(node=0, path="weights"))
        gltf.animations = [pygltflib.Animation(name=f"{name}_motion", samplers=[sampler], channels=[channel])]
    gltf.extras = {"pla4d": {"fps": float(fps), "frames": chosen, **(extras or {})}}
    b.data.extend(b"\0" * (-len(b.data) % 4))
    gltf.buffers = [pygltflib.Buffer(byteLength=len(b.data))]
    gltf.set_binary_blob(bytes(b.data))
    return b"".join(gltf.save_to_bytes())


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


def export_splat_formats(asset: Asset4D, folder: str | Path, names: Sequence[str]) -> list[Path]:
    """The exports stage's extra exports: each of ``names`` under its :data:`EXPORT_FORMATS` name in ``folder``
    (``mesh-glb`` is skipped: the stage always writes it)."""
    written: list[Path] = []
    for name in names:
        if name != "mesh-glb":
            written += export_format(asset, name, Path(folder) / EXPORT_FORMATS[name][1])
    return written


def export_run(
    run: str | Path, name: str, out: str | Path | None = None, frames: Sequence[int] | None = None
) -> list[Path]:
    """``pla4d export``: export ``name`` of the 4D asset in run folder ``run`` (or of the asset folder ``run``)
    to ``out`` (default: the run's ``exports/`` folder, under :data:`EXPORT_FORMATS`' file name). ValueError
    (one line, for the user) when there is no asset or the format is unknown."""
    from pla4d.asset.format import read_asset
    from pla4d.formats.asset import META_FILE

    run = Path(run).expanduser()
    if name not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {name!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    folder = run if (run / META_FILE).is_file() else run / "asset"
    if not (folder / META_FILE).is_file():
        raise ValueError(f"{run} holds no 4D asset (no {META_FILE} there or in {run / 'asset'}); run `pla4d run` first")
    asset = read_asset(folder)
    if out is None:
        out = (run.parent if folder == run else run) / "exports" / EXPORT_FORMATS[name][1]
    return export_format(asset, name, out, frames)


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
