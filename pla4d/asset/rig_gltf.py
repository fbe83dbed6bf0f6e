"""The rigged mesh as glTF 2.0 binary (``exports/rigged.glb``): the animated mesh at rest (frame 0) skinned to the
rig's joints, one node per bone in the rig's tree, and one animation with every bone's translation and rotation at
every frame. Blender's glTF importer turns it into an Armature with an Action; trimesh and pygltflib read it.

Axes are the project's, which are glTF's (+Y up, front +Z, 1 unit = 1 m). Bones have no rest rotation (a frame at
the joint with the world's axes), so the inverse bind matrices are pure translations, and a bone's local pose at
frame t is ``pose(parent)^-1 pose(bone)`` with ``pose = transforms[t] @ rest``: rigid, so it is exactly a
translation and a rotation. Written with pygltflib, atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pygltflib

from pla4d import __version__
from pla4d.formats.files import atomic_write_bytes
from pla4d.formats.rig import RigData
from pla4d.rig.skinning import matrix_to_quaternion

__all__ = ["rigged_glb_bytes", "write_rigged_glb"]

_COMPONENT = {np.dtype("<f4"): pygltflib.FLOAT, np.dtype("<u4"): pygltflib.UNSIGNED_INT,
              np.dtype("<u2"): pygltflib.UNSIGNED_SHORT, np.dtype("u1"): pygltflib.UNSIGNED_BYTE}  # fmt: skip


class _Bin:
    def __init__(self, gltf: pygltflib.GLTF2) -> None:
        self.gltf, self.data = gltf, bytearray()

    def add(self, array: np.ndarray, kind: str, target: int | None = None, minmax: bool = False) -> int:
        self.data.extend(b"\0" * (-len(self.data) % 4))
        raw = np.ascontiguousarray(array).tobytes()
        self.gltf.bufferViews.append(pygltflib.BufferView(buffer=0, byteOffset=len(self.data), byteLength=len(raw),
                                                          target=target))  # fmt: skip
        self.data.extend(raw)
        count = int(array.shape[0])
        acc = pygltflib.Accessor(bufferView=len(self.gltf.bufferViews) - 1, componentType=_COMPONENT[array.dtype],
                                 count=count, type=kind)  # fmt: skip
        if minmax:
            flat = array.reshape(count, -1)
            acc.min, acc.max = flat.min(0).tolist(), flat.max(0).tolist()
        self.gltf.accessors.append(acc)
        return len(self.gltf.accessors) - 1


def _normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = vertices.astype(np.float64)[faces]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    out = np.zeros(vertices.shape)
    for k in range(3):
        np.add.at(out, faces[:, k], face_n)
    length = np.linalg.norm(out, axis=1, keepdims=True)
    return np.where(length > 1e-12, out / np.maximum(length, 1e-12), [0.0, 1.0, 0.0]).astype("<f4")


def rigged_glb_bytes(rig: RigData, faces: np.ndarray, rest_vertices: np.ndarray, fps: float,
                     vertex_colors: np.ndarray | None = None, name: str = "pla4d") -> bytes:  # fmt: skip
    """The GLB of the mesh (``faces``, frame-0 ``rest_vertices``) skinned by ``rig`` (its mesh weights)."""
    if rig.mesh_joints is None or rig.mesh_weights is None:
        raise ValueError("the rig has no mesh weights: rig a run that has an animated mesh")
    gltf = pygltflib.GLTF2(asset=pygltflib.Asset(generator=f"pla4d {__version__}"))
    buf = _Bin(gltf)
    verts = np.asarray(rest_vertices, "<f4")
    faces = np.asarray(faces, np.int64)
    joint_dtype = np.dtype("u1") if rig.num_bones <= 256 else np.dtype("<u2")
    influences = rig.influences
    pad = (-influences) % 4  # JOINTS_n / WEIGHTS_n hold four each
    joints = np.pad(np.asarray(rig.mesh_joints), ((0, 0), (0, pad))).astype(joint_dtype)
    weights = np.pad(np.asarray(rig.mesh_weights, np.float64), ((0, 0), (0, pad)))
    weights = (weights / weights.sum(1, keepdims=True)).astype("<f4")
    attributes = pygltflib.Attributes(
        POSITION=buf.add(verts, pygltflib.VEC3, pygltflib.ARRAY_BUFFER, minmax=True),
        NORMAL=buf.add(_normals(verts, faces), pygltflib.VEC3, pygltflib.ARRAY_BUFFER),
        JOINTS_0=buf.add(joints[:, :4], pygltflib.VEC4, pygltflib.ARRAY_BUFFER),
        WEIGHTS_0=buf.add(weights[:, :4], pygltflib.VEC4, pygltflib.ARRAY_BUFFER),
    )
    if influences > 4:
        attributes.JOINTS_1 = buf.add(joints[:, 4:8], pygltflib.VEC4, pygltflib.ARRAY_BUFFER)
        attributes.WEIGHTS_1 = buf.add(weights[:, 4:8], pygltflib.VEC4, pygltflib.ARRAY_BUFFER)
    if vertex_colors is not None:
        attributes.COLOR_0 = buf.add(np.asarray(vertex_colors, "<f4")[:, :3], pygltflib.VEC3, pygltflib.ARRAY_BUFFER)
    indices = buf.add(faces.reshape(-1).astype("<u4"), pygltflib.SCALAR, pygltflib.ELEMENT_ARRAY_BUFFER)
    pbr = pygltflib.PbrMetallicRoughness(metallicFactor=0.0, roughnessFactor=1.0)
    gltf.materials.append(pygltflib.Material(name="pla4d", doubleSided=True, pbrMetallicRoughness=pbr))
    primitive = pygltflib.Primitive(attributes=attributes, indices=indices, material=0)
    gltf.meshes.append(pygltflib.Mesh(name=name, primitives=[primitive]))
    # Nodes: 0 the scene root, 1 the mesh, 2.. the bones in tree order (parents first).
    b = rig.num_bones
    local = rig.local_poses()  # (T, B, 4, 4)
    gltf.nodes.append(pygltflib.Node(name=name, children=[1] + [2 + j for j in range(b) if rig.parents[j] < 0]))
    gltf.nodes.append(pygltflib.Node(name=f"{name}_mesh", mesh=0, skin=0))
    for j in range(b):
        kids = [2 + c for c in range(b) if rig.parents[c] == j]
        rest_local = local[0, j]
        gltf.nodes.append(pygltflib.Node(name=rig.names[j], children=kids, translation=rest_local[:3, 3].tolist(),
                                         rotation=_xyzw(rest_local[:3, :3]).tolist()))  # fmt: skip
    ibm = np.linalg.inv(np.asarray(rig.rest, np.float64))
    # glTF matrices are column-major: the transpose of each row-major matrix, flattened.
    ibm_acc = buf.add(np.ascontiguousarray(ibm.transpose(0, 2, 1)).reshape(b, 16).astype("<f4"), pygltflib.MAT4)
    gltf.skins.append(pygltflib.Skin(name=f"{name}_rig", joints=[2 + j for j in range(b)], skeleton=2,
                                     inverseBindMatrices=ibm_acc))  # fmt: skip
    frames = local.shape[0]
    times = buf.add((np.arange(frames) / float(fps)).astype("<f4"), pygltflib.SCALAR, minmax=True)
    samplers, channels = [], []
    for j in range(b):
        trans = buf.add(local[:, j, :3, 3].astype("<f4"), pygltflib.VEC3)
        rot = buf.add(_continuous(_xyzw(local[:, j, :3, :3])).astype("<f4"), pygltflib.VEC4)
        for path, output in (("translation", trans), ("rotation", rot)):
            samplers.append(pygltflib.AnimationSampler(input=times, output=output, interpolation="LINEAR"))
            target = pygltflib.AnimationChannelTarget(node=2 + j, path=path)
            channels.append(pygltflib.AnimationChannel(sampler=len(samplers) - 1, target=target))
    gltf.animations.append(pygltflib.Animation(name=f"{name}_motion", samplers=samplers, channels=channels))
    gltf.scenes.append(pygltflib.Scene(nodes=[0]))
    gltf.scene = 0
    gltf.extras = {"pla4d": {"fps": float(fps), "frames": frames, "bones": rig.names, "fit": rig.info}}
    gltf.buffers.append(pygltflib.Buffer(byteLength=len(buf.data)))
    gltf.set_binary_blob(bytes(buf.data))
    return b"".join(gltf.save_to_bytes())


def _xyzw(r: np.ndarray) -> np.ndarray:
    q = matrix_to_quaternion(r)
    return np.concatenate([q[..., 1:], q[..., :1]], axis=-1)


def _continuous(q: np.ndarray) -> np.ndarray:
    """Flip signs so neighbouring keyframes lie in one hemisphere (linear interpolation takes the short way)."""
    q = q.copy()
    for t in range(1, q.shape[0]):
        if float(q[t] @ q[t - 1]) < 0:
            q[t] = -q[t]
    return q


def write_rigged_glb(asset: object, path: str | Path) -> Path | None:
    """``path`` <- the rigged mesh of a 4D asset that carries a rig and a mesh (else nothing is written: None)."""
    rig, mesh = getattr(asset, "rig", None), getattr(asset, "mesh", None)
    if rig is None or mesh is None or rig.mesh_joints is None:
        return None
    data = rigged_glb_bytes(rig, mesh.faces, np.asarray(mesh.positions[0]), float(asset.fps), mesh.vertex_colors)
    return atomic_write_bytes(path, data)
