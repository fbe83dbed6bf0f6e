"""Triangle meshes with unlit colours: the ``Mesh`` and ``Material`` types, and meshes built from arrays.

Files are read by :mod:`pla4d.render.mesh_io` and rendered by :mod:`pla4d.render.mesh`.

Colour conventions (see also ``pla4d.colour``):

- ``Mesh.vertex_colors`` and every base-colour factor are LINEAR (as glTF stores COLOR_0 and
  ``baseColorFactor``); textures are kept as stored in the image file, i.e. sRGB-encoded.
- A surface sample's linear albedo is ``factor * vertex_colour * srgb_to_linear(texture(uv))``.

Materials: the mesh's own ``texture``/``base_color`` are material 0. Meshes with several materials list
the others in ``materials`` and give each face its index in ``face_material`` (``i >= 1`` means
``materials[i - 1]``).

UVs use the glTF convention: (0, 0) is the top-left corner of the texture image, v grows downwards.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from pla4d.colour import srgb_to_linear

__all__ = ["Material", "Mesh", "mesh_from_arrays"]


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
