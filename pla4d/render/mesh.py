"""Triangle meshes: loading (GLB/glTF/OBJ/...), building from arrays, and unlit rendering.

Colour conventions (see also ``pla4d.colour``):

- ``Mesh.vertex_colors`` and every base-colour factor are LINEAR (as glTF stores COLOR_0 and
  ``baseColorFactor``); textures are kept as stored in the image file, i.e. sRGB-encoded.
- A surface sample's linear albedo is ``factor * vertex_colour * srgb_to_linear(texture(uv))``.
- Anti-aliasing: the image is rendered at ``supersample`` times the resolution and the samples are averaged
  in linear, premultiplied space; the result is encoded to sRGB and composited over the background:
  ``rgb = srgb(sum(c * a) / sum(a)) * alpha + (1 - alpha) * background`` (background in sRGB display values).

Materials: the mesh's own ``texture``/``base_color`` are material 0. Meshes with several materials list
the others in ``materials`` and give each face its index in ``face_material`` (``i >= 1`` means
``materials[i - 1]``). The loader folds the factor of untextured parts into the (linear) vertex colours,
so the common multi-part, flat-coloured scene becomes a single-material vertex-coloured mesh; only
differently textured parts need material slots.

UVs use the glTF convention: (0, 0) is the top-left corner of the texture image, v grows downwards.
Texture wrap is REPEAT (the glTF default); other sampler modes, alpha modes and texture transforms are
not supported (surfaces render opaque).
"""

from __future__ import annotations

import dataclasses
import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pla4d.cameras import Cameras
from pla4d.colour import linear_to_srgb, srgb_to_linear

MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".stl", ".off")
BACKENDS = ("auto", "cpu", "nvdiffrast")


@dataclass(frozen=True, eq=False)
class Material:
    """An unlit material: a linear colour factor times an optional sRGB texture."""

    base_color: Tensor  # (3,) linear
    texture: Tensor | None = None  # (Ht, Wt, 3) sRGB-encoded values in [0, 1]

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_color", _as_color(self.base_color, "base_color"))
        if self.texture is not None:
            object.__setattr__(self, "texture", _as_texture(self.texture))


@dataclass(frozen=True, eq=False)
class Mesh:
    """A triangle mesh in the world frame with unlit colours (see the module docstring)."""

    vertices: Tensor  # (V, 3) float32
    faces: Tensor  # (F, 3) int64
    vertex_colors: Tensor | None = None  # (V, 3) linear RGB in [0, 1]
    uvs: Tensor | None = None  # (V, 2), glTF convention
    texture: Tensor | None = None  # (Ht, Wt, 3) sRGB-encoded values in [0, 1]
    base_color: Tensor | None = None  # (3,) linear factor; None means ones (always a tensor once built)
    face_material: Tensor | None = None  # (F,) int64; None means every face uses material 0
    materials: tuple[Material, ...] = ()  # materials 1.. (index i -> materials[i - 1])
    # Linear-decoded, packed textures for the CPU renderer, keyed by the textures' storage and version.
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        vertices = torch.as_tensor(self.vertices)
        if vertices.ndim != 2 or vertices.shape[1] != 3:
            raise ValueError(f"vertices must be (V, 3), got {tuple(vertices.shape)}")
        vertices = vertices.float()
        device = vertices.device
        faces = torch.as_tensor(self.faces, device=device)
        if faces.ndim != 2 or faces.shape[1] != 3:
            raise ValueError(f"faces must be (F, 3), got {tuple(faces.shape)}")
        if faces.is_floating_point():
            raise ValueError("faces must hold integer vertex indices")
        faces = faces.long()
        n_verts = vertices.shape[0]
        if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= n_verts):
            raise ValueError(f"faces index vertices outside [0, {n_verts})")
        set_ = object.__setattr__
        set_(self, "vertices", vertices)
        set_(self, "faces", faces)
        if self.vertex_colors is not None:
            vc = torch.as_tensor(self.vertex_colors, device=device)
            vc = vc.float() / 255.0 if vc.dtype == torch.uint8 else vc.float()
            if vc.ndim != 2 or vc.shape[0] != n_verts or vc.shape[1] not in (3, 4):
                raise ValueError(f"vertex_colors must be (V, 3) with V={n_verts}, got {tuple(vc.shape)}")
            set_(self, "vertex_colors", vc[:, :3].contiguous())
        if self.uvs is not None:
            uvs = torch.as_tensor(self.uvs, device=device).float()
            if uvs.ndim != 2 or uvs.shape != (n_verts, 2):
                raise ValueError(f"uvs must be (V, 2) with V={n_verts}, got {tuple(uvs.shape)}")
            set_(self, "uvs", uvs)
        if self.texture is not None:
            set_(self, "texture", _as_texture(self.texture).to(device))
        base = torch.ones(3) if self.base_color is None else self.base_color
        set_(self, "base_color", _as_color(base, "base_color").to(device))
        materials = tuple(self.materials)
        for m in materials:
            if not isinstance(m, Material):
                raise TypeError(f"materials must be Material instances, got {type(m).__name__}")
        set_(self, "materials", materials)
        if self.face_material is not None:
            fm = torch.as_tensor(self.face_material, device=device)
            if fm.shape != (faces.shape[0],) or fm.is_floating_point():
                raise ValueError(f"face_material must be (F,) integers with F={faces.shape[0]}")
            fm = fm.long()
            if fm.numel() and (int(fm.min()) < 0 or int(fm.max()) > len(materials)):
                raise ValueError(f"face_material indices must lie in [0, {len(materials)}]")
            set_(self, "face_material", fm)
        textured = self.texture is not None or any(m.texture is not None for m in materials)
        if textured and self.uvs is None:
            raise ValueError("a textured mesh needs uvs")

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    @property
    def device(self) -> torch.device:
        return self.vertices.device

    def all_materials(self) -> list[Material]:
        """Material 0 (the mesh's own texture and base colour) followed by ``materials``."""
        return [Material(self.base_color, self.texture), *self.materials]

    def with_vertices(self, vertices: Tensor) -> Mesh:
        """The same mesh (topology, colours, UVs, materials) with new vertex positions, e.g. an animation frame."""
        vertices = torch.as_tensor(vertices)
        if tuple(vertices.shape) != tuple(self.vertices.shape):
            raise ValueError(
                f"new vertices must have the shape of the old ones {tuple(self.vertices.shape)}, "
                f"got {tuple(vertices.shape)}"
            )
        new = dataclasses.replace(self, vertices=vertices.to(self.device))
        new._cache.update(self._cache)  # textures are shared, so their decoded copies stay valid
        return new

    def transformed(self, matrix: Tensor | np.ndarray) -> Mesh:
        """The mesh with an affine 4x4 (or 3x4) world transform applied to its vertices."""
        m = torch.as_tensor(matrix, dtype=torch.float64, device=self.device)
        if m.shape not in ((4, 4), (3, 4)):
            raise ValueError(f"transform must be 4x4 or 3x4, got {tuple(m.shape)}")
        v = self.vertices.double() @ m[:3, :3].T + m[:3, 3]
        return self.with_vertices(v.float())

    def to(self, device: torch.device | str) -> Mesh:
        return Mesh(
            self.vertices.to(device),
            self.faces.to(device),
            None if self.vertex_colors is None else self.vertex_colors.to(device),
            None if self.uvs is None else self.uvs.to(device),
            None if self.texture is None else self.texture.to(device),
            self.base_color.to(device),
            None if self.face_material is None else self.face_material.to(device),
            tuple(
                Material(m.base_color.to(device), None if m.texture is None else m.texture.to(device))
                for m in self.materials
            ),
        )

    def bounds(self) -> Tensor:
        """(2, 3): the minimum and maximum corner of the axis-aligned bounding box."""
        return torch.stack([self.vertices.min(0).values, self.vertices.max(0).values])

    @staticmethod
    def cat(meshes: list[Mesh]) -> Mesh:
        """One mesh holding all the given meshes (e.g. the parts of a creature)."""
        if not meshes:
            raise ValueError("no meshes to concatenate")
        if len(meshes) == 1:
            return meshes[0]
        device = meshes[0].device
        any_vc = any(m.vertex_colors is not None for m in meshes)
        any_uv = any(m.uvs is not None for m in meshes)
        vertices, faces, vcs, uvs, fms = [], [], [], [], []
        materials: list[Material] = []
        offset = 0
        for m in meshes:
            vertices.append(m.vertices.to(device))
            faces.append(m.faces.to(device) + offset)
            offset += m.num_vertices
            if any_vc:
                vc = m.vertex_colors if m.vertex_colors is not None else torch.ones(m.num_vertices, 3)
                vcs.append(vc.to(device))
            if any_uv:
                uv = m.uvs if m.uvs is not None else torch.zeros(m.num_vertices, 2)
                uvs.append(uv.to(device))
            fm = m.face_material if m.face_material is not None else torch.zeros(m.num_faces, dtype=torch.long)
            fms.append(fm.to(device) + len(materials))
            materials.extend(m.all_materials())
        return Mesh(
            torch.cat(vertices),
            torch.cat(faces),
            torch.cat(vcs) if any_vc else None,
            torch.cat(uvs) if any_uv else None,
            materials[0].texture,
            materials[0].base_color,
            torch.cat(fms),
            tuple(materials[1:]),
        )


@dataclass
class MeshRender:
    """Output of ``render_mesh`` for C cameras."""

    rgb: Tensor  # (C, H, W, 3) sRGB display colours composited over the background
    alpha: Tensor  # (C, H, W, 1) coverage
    depth: Tensor  # (C, H, W, 1) camera-space z of the nearest covered sample, 0 where empty


def mesh_from_arrays(
    vertices: Tensor | np.ndarray,
    faces: Tensor | np.ndarray,
    vertex_colors: Tensor | np.ndarray | None = None,
    uvs: Tensor | np.ndarray | None = None,
    texture: Tensor | np.ndarray | None = None,
    base_color: Tensor | np.ndarray | tuple[float, float, float] | None = None,
    color_space: str = "linear",
) -> Mesh:
    """A mesh built in code. ``vertex_colors``/``base_color`` are linear unless ``color_space="srgb"``.

    Colours and textures may be floats in [0, 1] or uint8; textures are always sRGB-encoded, as in files.
    """
    if color_space not in ("linear", "srgb"):
        raise ValueError(f"color_space must be 'linear' or 'srgb', got {color_space!r}")
    vertices = torch.as_tensor(np.asarray(vertices) if not isinstance(vertices, Tensor) else vertices)
    faces = torch.as_tensor(np.asarray(faces) if not isinstance(faces, Tensor) else faces)
    vc = None
    if vertex_colors is not None:
        vc = torch.as_tensor(np.asarray(vertex_colors) if not isinstance(vertex_colors, Tensor) else vertex_colors)
        vc = vc.float() / 255.0 if vc.dtype == torch.uint8 else vc.float()
        vc = vc[:, :3] if vc.ndim == 2 else vc
        if color_space == "srgb":
            vc = srgb_to_linear(vc)
    base = None
    if base_color is not None:
        base = _as_color(base_color, "base_color")
        if color_space == "srgb":
            base = srgb_to_linear(base)
    return Mesh(
        vertices,
        faces,
        vertex_colors=vc,
        uvs=None if uvs is None else torch.as_tensor(np.asarray(uvs) if not isinstance(uvs, Tensor) else uvs),
        texture=None if texture is None else _as_texture(texture),
        base_color=base,
    )


# --------------------------------------------------------------------------------------------- loading


def load_mesh(path: str | Path) -> Mesh:
    """Load a mesh file (GLB/glTF/OBJ; PLY/STL/OFF too) into one world-frame ``Mesh``.

    Scene graphs are flattened with their node transforms. glTF factors and COLOR_0 are read as linear;
    OBJ ``Kd`` as linear (what Blender writes); vertex colours of other formats as sRGB (the de-facto
    convention of PLY and friends).
    """
    import trimesh

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"mesh file not found: {path}")
    if not path.is_file():
        raise ValueError(f"not a mesh file (a directory?): {path}")
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise ValueError(f"unsupported mesh format {suffix!r} for {path}; expected one of {', '.join(MESH_SUFFIXES)}")
    try:
        scene = trimesh.load(str(path), force="scene", process=False)
    except Exception as exc:  # trimesh raises many kinds of errors for corrupt files
        raise ValueError(f"could not read mesh file {path}: {exc}") from exc
    gltf = suffix in (".glb", ".gltf")
    exact = _gltf_base_color_factors(path) if gltf else _mtl_diffuse(path) if suffix == ".obj" else {}

    parts = []
    for node in scene.graph.nodes_geometry:
        transform, geom_name = scene.graph[node]
        geom = scene.geometry.get(geom_name)
        if not isinstance(geom, trimesh.Trimesh) or len(geom.faces) == 0:
            continue
        parts.append(_part_from_trimesh(geom, np.asarray(transform, np.float64), gltf, exact, suffix == ".obj"))
    if not parts:
        raise ValueError(f"mesh file {path} holds no triangles")
    return _merge_parts(parts)


@dataclass
class _Part:
    vertices: np.ndarray
    faces: np.ndarray
    vertex_colors: np.ndarray | None  # linear
    uvs: np.ndarray | None  # glTF convention
    texture_key: int | None  # identity of the source image, to share one texture between parts
    texture: np.ndarray | None  # sRGB float
    factor: np.ndarray  # linear (3,)


def _part_from_trimesh(geom, transform: np.ndarray, gltf: bool, exact: dict, obj: bool) -> _Part:
    from trimesh.visual.material import PBRMaterial, SimpleMaterial

    vertices = np.asarray(geom.vertices, np.float64)
    vertices = vertices @ transform[:3, :3].T + transform[:3, 3]
    faces = np.asarray(geom.faces, np.int64)
    visual = geom.visual
    vc = None
    uvs = None
    image = None
    factor = np.ones(3)
    kind = getattr(visual, "kind", None)
    if visual is not None and type(visual).__name__ == "TextureVisuals":
        material = getattr(visual, "material", None)
        raw_uv = getattr(visual, "uv", None)
        if isinstance(material, PBRMaterial):
            image = material.baseColorTexture
            if material.baseColorFactor is not None:
                factor = np.asarray(material.baseColorFactor[:3], np.float64) / 255.0
                factor = _exact_factor(exact, material.name, factor, image is not None)
        elif isinstance(material, SimpleMaterial):
            image = material.image
            factor = np.asarray(material.diffuse[:3], np.float64) / 255.0
            factor = _exact_factor(exact, material.name, factor, image is not None)
        if image is not None and raw_uv is not None and len(raw_uv) == len(vertices):
            # trimesh stores UVs with v up (OBJ style); the Mesh keeps glTF's v down.
            uvs = np.column_stack([raw_uv[:, 0], 1.0 - raw_uv[:, 1]]).astype(np.float32)
        else:
            image = None
        colors = getattr(visual, "vertex_attributes", {}).get("color")
        if colors is not None and len(colors) == len(vertices):
            vc = _vertex_colors_to_linear(np.asarray(colors), gltf)
    elif kind == "vertex":
        vc = _vertex_colors_to_linear(np.asarray(visual.vertex_colors), gltf)
    elif kind == "face":
        # Flat face colours: give every face its own three vertices so vertex colours can carry them.
        fc = _vertex_colors_to_linear(np.asarray(visual.face_colors), gltf)
        vertices = vertices[faces].reshape(-1, 3)
        faces = np.arange(len(vertices), dtype=np.int64).reshape(-1, 3)
        vc = np.repeat(fc, 3, axis=0)
    texture = None
    if image is not None:
        texture = np.asarray(image.convert("RGB"), np.float32) / 255.0
    return _Part(
        vertices.astype(np.float32),
        faces,
        vc,
        uvs,
        None if image is None else id(image),
        texture,
        factor,
    )


def _vertex_colors_to_linear(colors: np.ndarray, linear: bool) -> np.ndarray:
    c = colors[:, :3].astype(np.float32)
    if colors.dtype == np.uint8 or c.max(initial=0.0) > 1.0:
        c = c / 255.0
    return c if linear else srgb_to_linear(c)


def _exact_factor(exact: dict, name: str | None, quantised: np.ndarray, textured: bool) -> np.ndarray:
    """trimesh rounds colour factors to 8 bits (costly for dark linear colours): take the file's floats."""
    entry = exact.get(name)
    if entry is None:
        return quantised
    if entry == "absent":  # OBJ material with a texture and no Kd: the texture alone is the colour
        return np.ones(3) if textured else quantised
    precise = np.asarray(entry, np.float64)
    if np.all(np.abs(precise * 255.0 - quantised * 255.0) <= 1.01):
        return precise
    return quantised


def _gltf_base_color_factors(path: Path) -> dict:
    """Material name -> baseColorFactor (linear RGB floats) from a .glb/.gltf file's JSON."""
    try:
        data = path.read_bytes()
        if data[:4] == b"glTF":
            length = struct.unpack_from("<I", data, 12)[0]
            doc = json.loads(data[20 : 20 + length])
        else:
            doc = json.loads(data)
    except (OSError, ValueError, struct.error):
        return {}
    out: dict = {}
    names = [m.get("name") for m in doc.get("materials", [])]
    for m in doc.get("materials", []):
        name = m.get("name")
        factor = m.get("pbrMetallicRoughness", {}).get("baseColorFactor")
        if name is None or factor is None or names.count(name) > 1:
            continue
        out[name] = [float(x) for x in factor[:3]]
    return out


def _mtl_diffuse(obj_path: Path) -> dict:
    """Material name -> Kd floats (or "absent") from the MTL files an OBJ references."""
    out: dict = {}
    try:
        text = obj_path.read_text(errors="replace")
    except OSError:
        return out
    for lib in re.findall(r"^\s*mtllib\s+(.+?)\s*$", text, flags=re.MULTILINE):
        try:
            mtl = (obj_path.parent / lib).read_text(errors="replace")
        except OSError:
            continue
        name = None
        for line in mtl.splitlines():
            tokens = line.split()
            if not tokens:
                continue
            if tokens[0] == "newmtl" and len(tokens) > 1:
                name = " ".join(tokens[1:])
                out.setdefault(name, "absent")
            elif tokens[0] == "Kd" and name is not None and len(tokens) >= 4:
                try:
                    out[name] = [float(t) for t in tokens[1:4]]
                except ValueError:
                    pass
    return out


def _merge_parts(parts: list[_Part]) -> Mesh:
    keys = {(p.texture_key, tuple(np.round(p.factor, 7))) for p in parts}
    vertices = np.concatenate([p.vertices for p in parts])
    faces_list, offset = [], 0
    for p in parts:
        faces_list.append(p.faces + offset)
        offset += len(p.vertices)
    faces = np.concatenate(faces_list)
    any_tex = any(p.texture is not None for p in parts)
    uvs = None
    if any_tex:
        uvs = np.concatenate(
            [p.uvs if p.uvs is not None else np.zeros((len(p.vertices), 2), np.float32) for p in parts]
        )

    if len(keys) == 1:
        p0 = parts[0]
        vc = None
        if any(p.vertex_colors is not None for p in parts):
            vc = np.concatenate([_or_ones(p) for p in parts])
        return Mesh(
            torch.from_numpy(vertices),
            torch.from_numpy(faces),
            None if vc is None else torch.from_numpy(vc),
            None if uvs is None else torch.from_numpy(uvs),
            None if p0.texture is None else torch.from_numpy(p0.texture),
            torch.from_numpy(p0.factor.astype(np.float32)),
        )

    # Several materials: untextured parts carry their factor in the vertex colours; each distinct
    # (texture, factor) pair gets a material slot.
    vc = np.concatenate([_or_ones(p) * (p.factor if p.texture is None else 1.0) for p in parts]).astype(np.float32)
    slots: dict = {}
    materials: list[Material] = []
    untextured = any(p.texture is None for p in parts)
    if untextured:
        materials.append(Material(torch.ones(3), None))
    face_material = []
    for p in parts:
        if p.texture is None:
            face_material.append(np.zeros(len(p.faces), np.int64))
            continue
        key = (p.texture_key, tuple(np.round(p.factor, 7)))
        if key not in slots:
            slots[key] = len(materials)
            materials.append(Material(torch.from_numpy(p.factor.astype(np.float32)), torch.from_numpy(p.texture)))
        face_material.append(np.full(len(p.faces), slots[key], np.int64))
    needs_slots = len(materials) > 1
    return Mesh(
        torch.from_numpy(vertices),
        torch.from_numpy(faces),
        torch.from_numpy(vc),
        None if uvs is None else torch.from_numpy(uvs),
        materials[0].texture,
        materials[0].base_color,
        torch.from_numpy(np.concatenate(face_material)) if needs_slots else None,
        tuple(materials[1:]),
    )


def _or_ones(p: _Part) -> np.ndarray:
    return p.vertex_colors if p.vertex_colors is not None else np.ones((len(p.vertices), 3), np.float32)


def _as_color(value, what: str) -> Tensor:
    t = torch.as_tensor(np.asarray(value) if not isinstance(value, Tensor) else value)
    t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
    if t.shape not in ((3,), (4,)):
        raise ValueError(f"{what} must be an RGB triple, got shape {tuple(t.shape)}")
    return t[:3].contiguous()


def _as_texture(value) -> Tensor:
    t = torch.as_tensor(np.asarray(value) if not isinstance(value, Tensor) else value)
    t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
    if t.ndim == 2:
        t = t[..., None].expand(-1, -1, 3)
    if t.ndim != 3 or t.shape[2] not in (1, 3, 4) or t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"texture must be (Ht, Wt, 3), got {tuple(t.shape)}")
    if t.shape[2] == 1:
        t = t.expand(-1, -1, 3)
    if t.shape[2] == 3 and t.is_contiguous():
        return t  # no copy: the CPU renderer caches decoded textures by storage
    return t[..., :3].contiguous()


# --------------------------------------------------------------------------------------------- rendering


def render_mesh(
    mesh: Mesh,
    cameras: Cameras,
    background: Tensor | None = None,
    supersample: int = 3,
    backend: str = "auto",
    near: float = 1e-2,
) -> MeshRender:
    """Unlit render of ``mesh`` from every camera in ``cameras`` (one batch, one call).

    ``background``: sRGB display colour(s) behind the mesh: (3,), (H, W, 3) or (C, H, W, 3); None is black,
    i.e. ``rgb`` is then premultiplied by ``alpha``. ``supersample``: anti-aliasing factor per axis.
    ``backend``: "cpu" (numba rasterizer), "nvdiffrast" (CUDA), or "auto" (nvdiffrast when the mesh is on
    CUDA and nvdiffrast imports, else cpu). Geometry closer than ``near`` to a camera is clipped away.
    """
    if not isinstance(supersample, int) or supersample < 1:
        raise ValueError(f"supersample must be a positive integer, got {supersample!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not near > 0:
        raise ValueError(f"near must be positive, got {near}")
    if backend == "auto":
        backend = "nvdiffrast" if mesh.device.type == "cuda" and _nvdiffrast_available() else "cpu"
    elif backend == "nvdiffrast":
        if not _nvdiffrast_available():
            raise RuntimeError(
                "backend='nvdiffrast' needs nvdiffrast (built from source on a CUDA machine: "
                "https://github.com/NVlabs/nvdiffrast); use backend='cpu' or 'auto' without it"
            )
        if mesh.device.type != "cuda":
            raise RuntimeError("backend='nvdiffrast' needs the mesh on a CUDA device (mesh.to('cuda'))")
    device = mesh.device
    n, height, width = len(cameras), cameras.height, cameras.width
    work_device = device if backend == "nvdiffrast" else torch.device("cpu")
    bg = _background(background, n, height, width, work_device)
    if n == 0:
        empty = torch.zeros(0, height, width, 1, device=device)
        return MeshRender(torch.zeros(0, height, width, 3, device=device), empty, empty.clone())
    big = cameras.scaled(supersample) if supersample > 1 else cameras
    if backend == "nvdiffrast":
        from pla4d.render import _mesh_nvdiffrast

        premult, cov, z = _mesh_nvdiffrast.render_samples(mesh, big.to(device), near)
        return _resolve(premult, cov, z, supersample, bg)

    rgbs, alphas, depths = [], [], []
    packed = _pack_for_cpu(mesh)
    for c in range(len(cameras)):
        premult, cov, z = _cpu_samples(mesh, packed, big[c], near)
        out = _resolve(premult, cov, z, supersample, bg[c : c + 1])
        rgbs.append(out.rgb)
        alphas.append(out.alpha)
        depths.append(out.depth)
    return MeshRender(torch.cat(rgbs).to(device), torch.cat(alphas).to(device), torch.cat(depths).to(device))


def _nvdiffrast_available() -> bool:
    try:
        import nvdiffrast.torch  # noqa: F401
    except Exception:  # ImportError, or a broken CUDA/GL build that fails at import time
        return False
    return True


def _background(background: Tensor | None, n: int, height: int, width: int, device: torch.device) -> Tensor:
    if background is None:
        return torch.zeros(n, 1, 1, 3, device=device)
    bg = torch.as_tensor(background, dtype=torch.float32, device=device)
    if bg.ndim == 1 and bg.shape[0] == 3:
        return bg.view(1, 1, 1, 3).expand(n, 1, 1, 3)
    if bg.ndim == 3 and bg.shape == (height, width, 3):
        return bg.unsqueeze(0).expand(n, -1, -1, -1)
    if bg.ndim == 4 and bg.shape == (n, height, width, 3):
        return bg
    raise ValueError(
        f"background must be (3,), ({height}, {width}, 3) or ({n}, {height}, {width}, 3), got {tuple(bg.shape)}"
    )


def _resolve(premult: Tensor, cov: Tensor, z: Tensor, s: int, bg: Tensor) -> MeshRender:
    """Average s x s samples (linear, premultiplied), encode to sRGB, composite; nearest depth per pixel.

    premult: (C, Hs, Ws, 3) linear colour times coverage; cov: (C, Hs, Ws) in [0, 1]; z: (C, Hs, Ws), inf
    where empty.
    """
    n, hs, ws = cov.shape
    h, w = hs // s, ws // s
    premult = premult.reshape(n, h, s, w, s, 3).mean(dim=(2, 4))
    alpha = cov.reshape(n, h, s, w, s).mean(dim=(2, 4)).unsqueeze(-1)
    colour = premult / alpha.clamp_min(1e-12)
    display = torch.where(alpha > 0, linear_to_srgb(colour), torch.zeros_like(colour))
    rgb = display * alpha + (1.0 - alpha) * bg
    depth = z.reshape(n, h, s, w, s).amin(dim=(2, 4)).unsqueeze(-1)
    depth = torch.where(torch.isfinite(depth), depth, torch.zeros_like(depth))
    return MeshRender(rgb, alpha, depth)


def _pack_for_cpu(mesh: Mesh) -> dict:
    """numpy arrays for the numba kernels; the linear-decoded texture buffer is cached on the mesh."""
    materials = mesh.all_materials()
    key = tuple(
        (m.texture.data_ptr(), tuple(m.texture.shape), m.texture._version) if m.texture is not None else None
        for m in materials
    )
    cached = mesh._cache.get("cpu_textures")
    if cached is None or cached[0] != key:
        offsets, heights, widths, chunks, total = [], [], [], [], 0
        for m in materials:
            if m.texture is None:
                offsets.append(0)
                heights.append(0)
                widths.append(0)
                continue
            lin = srgb_to_linear(m.texture.detach().cpu().float()).reshape(-1, 3).numpy()
            offsets.append(total)
            heights.append(m.texture.shape[0])
            widths.append(m.texture.shape[1])
            chunks.append(lin)
            total += lin.shape[0]
        tex_buf = np.concatenate(chunks) if chunks else np.zeros((1, 3), np.float32)
        cached = (
            key,
            np.asarray(offsets, np.int64),
            np.asarray(heights, np.int64),
            np.asarray(widths, np.int64),
            np.ascontiguousarray(tex_buf, np.float32),
        )
        mesh._cache["cpu_textures"] = cached
    _, offsets, heights, widths, tex_buf = cached
    n_faces = mesh.num_faces
    fm = mesh.face_material
    return {
        "faces": np.ascontiguousarray(mesh.faces.detach().cpu().numpy(), np.int64),
        "vertex_colors": (
            np.zeros((0, 3), np.float32)
            if mesh.vertex_colors is None
            else np.ascontiguousarray(mesh.vertex_colors.detach().cpu().numpy(), np.float32)
        ),
        "uvs": (
            np.zeros((0, 2), np.float32)
            if mesh.uvs is None
            else np.ascontiguousarray(mesh.uvs.detach().cpu().numpy(), np.float32)
        ),
        "face_material": (
            np.zeros(n_faces, np.int32) if fm is None else np.ascontiguousarray(fm.detach().cpu().numpy(), np.int32)
        ),
        "mat_factor": np.stack([m.base_color.detach().cpu().numpy() for m in materials]).astype(np.float32),
        "mat_tex_offset": offsets,
        "mat_tex_h": heights,
        "mat_tex_w": widths,
        "tex_buf": tex_buf,
    }


def _cpu_samples(mesh: Mesh, packed: dict, camera: Cameras, near: float) -> tuple[Tensor, Tensor, Tensor]:
    from pla4d.render import _mesh_cpu

    viewmat = camera.viewmats[0].detach().cpu().double().numpy()
    K = camera.Ks[0].detach().cpu().double().numpy()
    verts = mesh.vertices.detach().cpu().double().numpy()
    cam_verts = np.ascontiguousarray(verts @ viewmat[:3, :3].T + viewmat[:3, 3])
    rgb, covered, zbuf = _mesh_cpu.render_view(
        cam_verts,
        packed["faces"],
        K,
        camera.width,
        camera.height,
        near,
        packed["vertex_colors"],
        packed["uvs"],
        packed["face_material"],
        packed["mat_factor"],
        packed["mat_tex_offset"],
        packed["mat_tex_h"],
        packed["mat_tex_w"],
        packed["tex_buf"],
    )
    return (
        torch.from_numpy(rgb).unsqueeze(0),
        torch.from_numpy(covered).float().unsqueeze(0),
        torch.from_numpy(zbuf).unsqueeze(0),
    )
