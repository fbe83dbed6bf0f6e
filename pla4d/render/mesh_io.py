"""Reading mesh files (GLB/glTF/OBJ; PLY/STL/OFF too) into one world-frame :class:`~pla4d.render.mesh_data.Mesh`.

trimesh parses the files; scene graphs are flattened with their node transforms. Colour factors are taken
from the file itself where trimesh would round them to 8 bits. The loader folds the factor of untextured
parts into the (linear) vertex colours, so the common multi-part, flat-coloured scene becomes a
single-material vertex-coloured mesh; only differently textured parts need material slots.

Texture wrap is REPEAT (the glTF default); other sampler modes, alpha modes and texture transforms are
not supported (surfaces render opaque).
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pla4d.colour import srgb_to_linear
from pla4d.render.mesh_data import Material, Mesh

__all__ = ["MESH_SUFFIXES", "load_mesh"]

MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".stl", ".off")


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
