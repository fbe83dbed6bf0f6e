"""Playback of rigged splats (issue 23): linear blend skinning of the splats' centres and rotations with numpy,
in the add-on's handlers, from the armature's evaluated pose.

Why not Blender's Armature modifier: a splat's rotation needs its blended bone matrix, which the modifier only gives
for points (three skinned vertices per splat, turned into a rotation by nodes): ~210 ms for the modifier on 300k
vertices and ~220 ms for the nodes at 100k splats. Here the splats are one point each (a PointCloud, like the
cache import), and a frame is one (12 x K) @ (K x N) product of the bones' skinning matrices with the splats'
dense weights, a few passes over N floats for the centres and the Gram-Schmidt rotation, and two ``foreach_set``.

- ``frame_change_post``: after the depsgraph evaluated the armature at the new frame, every rigged splat object is
  skinned and written; Blender evaluates again what a ``frame_change_post`` handler tagged, within the same
  ``frame_set``, so renders and the viewport see this frame's splats.
- ``depsgraph_update_post``: when an armature that drives splats was updated (a bone posed or re-keyed by hand),
  its splats are skinned again. A pose identical to the last one written is skipped, so the handler's own writes
  do not loop.
- Bake (:func:`bake_rig`, called by ``playback.bake``): every frame's skinned centres and rotations become the
  per-frame attributes the ``pla4d Frames`` nodes pick, so the file plays without the add-on.

The splats keep their rig in the .blend: rest centres and rotations (``pla4d_rig_rest_*``), bone indices and
weights (``pla4d_rig_jointK`` / ``pla4d_rig_weightK``, a pair per weight slot) as point attributes, the bone names
and the armature as custom properties of the object.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import bpy
import numpy as np
from bpy.app.handlers import persistent

from . import playback
from .attributes import ATTR_ROTATION, read_attribute, set_attribute

RIG_MARK = playback.RIG_MARK  # object custom property: the armature object that drives these splats
RIG_BONES = "pla4d_rig_bones"  # object custom property: the bone names, in the order of the joint indices
ATTR_REST_POSITION = "pla4d_rig_rest_position"
ATTR_REST_ROTATION = "pla4d_rig_rest_rotation"
# Splats per chunk: the ~40 float32 temporaries of a chunk stay in the cache (half the time of whole 100k arrays).
CHUNK = 16384
_MIN_W = 0.25  # below this |w| of the blended rotation's quaternion, its exact (Shepperd) branch is taken


def attr_joint(k: int) -> str:
    return f"pla4d_rig_joint{k}"  # no "_<digits>" end: Free Bake removes those


def attr_weight(k: int) -> str:
    return f"pla4d_rig_weight{k}"


def bind_splats(obj: Any, armature: Any, names: list[str], joints: np.ndarray, weights: np.ndarray,
                rest_positions: np.ndarray, rest_rotations: np.ndarray) -> None:  # fmt: skip
    """Store the rig of the PointCloud ``obj`` (Blender axes, object space = the armature's space at rest)."""
    data = obj.data
    set_attribute(data, ATTR_REST_POSITION, rest_positions)
    set_attribute(data, ATTR_REST_ROTATION, rest_rotations, "QUATERNION", "value")
    joints = np.asarray(joints, np.int32)
    weights = np.asarray(weights, np.float32)
    for k in range(joints.shape[1]):
        attr = data.attributes.get(attr_joint(k)) or data.attributes.new(attr_joint(k), "INT", "POINT")
        attr.data.foreach_set("value", np.ascontiguousarray(joints[:, k]))
        set_attribute(data, attr_weight(k), weights[:, k], "FLOAT", "value")
    obj[RIG_BONES] = list(names)
    obj[RIG_MARK] = armature
    forget(obj)


# ------------------------------------------------------------------------------------------------ skinning


class _Chunk:
    """A run of splats skinned at once: its arrays (bone-major, (K, n) weights, (3, n) / (4, n) rest) and the rows of
    the object's output buffers it writes."""

    def __init__(self, weights: np.ndarray, rest: np.ndarray, rest_rot: np.ndarray, positions: np.ndarray,
                 rotations: np.ndarray) -> None:  # fmt: skip
        self.weights = np.ascontiguousarray(weights)
        self.rest = np.ascontiguousarray(rest.T)
        self.rest_rot = np.ascontiguousarray(rest_rot.T)
        self.blend = np.empty((12, weights.shape[1]), np.float32)
        self.positions, self.rotations = positions, rotations


class _Skin:
    """One rigged object's rig as numpy arrays (read once from its attributes) and its scratch buffers."""

    def __init__(self, obj: Any, armature: Any) -> None:
        data = obj.data
        n = len(data.points)
        self.n = n
        names = list(obj[RIG_BONES])
        bones = armature.data.bones
        self.index = np.array([bones.find(name) for name in names], np.int64)  # joint -> the armature's bone
        if (self.index < 0).any():
            missing = [name for name, i in zip(names, self.index, strict=True) if i < 0]
            raise KeyError(f"{armature.name} has no bone {missing[0]}")
        local = np.empty(len(bones) * 16, np.float32)
        bones.foreach_get("matrix_local", local)
        # foreach_get lays a matrix out column by column: transpose to rows.
        self.rest_inv = np.linalg.inv(local.reshape(-1, 4, 4).transpose(0, 2, 1).astype(np.float64))[self.index]
        self.bone_count = len(bones)
        k = len(names)
        weights = np.zeros((k, n), np.float32)  # dense: the product below beats a per-influence gather
        points = np.arange(n)
        i = 0
        while (attr := data.attributes.get(attr_joint(i))) is not None:
            j = np.empty(n, np.int32)
            attr.data.foreach_get("value", j)
            w = read_attribute(data, attr_weight(i), "value", 1)
            np.add.at(weights, (j, points), w)
            i += 1
        rest = read_attribute(data, ATTR_REST_POSITION, "vector", 3)
        rest_rot = read_attribute(data, ATTR_REST_ROTATION, "value", 4)
        self.positions = np.empty((n, 3), np.float32)
        self.rotations = np.empty((n, 4), np.float32)
        self.chunks = [_Chunk(weights[:, lo : lo + CHUNK], rest[lo : lo + CHUNK], rest_rot[lo : lo + CHUNK],
                              self.positions[lo : lo + CHUNK], self.rotations[lo : lo + CHUNK])
                       for lo in range(0, n, CHUNK)]  # fmt: skip
        self.pose = np.empty(self.bone_count * 16, np.float32)
        self.last: bytes | None = None


_skins: dict[int, _Skin] = {}  # object session_uid -> its rig as arrays


def forget(obj: Any = None) -> None:
    """Drop the cached rig arrays of ``obj`` (all objects when None): they are read again at the next frame."""
    if obj is None:
        _skins.clear()
    else:
        _skins.pop(obj.session_uid, None)


def _skin_of(obj: Any, armature: Any) -> _Skin:
    skin = _skins.get(obj.session_uid)
    if skin is None or skin.n != len(obj.data.points) or skin.bone_count != len(armature.data.bones):
        skin = _Skin(obj, armature)
        _skins[obj.session_uid] = skin
    return skin


def skin_matrices(skin: _Skin, obj_world: np.ndarray, armature: Any) -> np.ndarray:
    """(K, 12) float32: each bone's skinning matrix in the splats' object space, columns (x, y, z, translation),
    as the Armature modifier applies it: object -> armature space, pose @ rest^-1, back."""
    armature.pose.bones.foreach_get("matrix", skin.pose)
    pose = skin.pose.reshape(-1, 4, 4).transpose(0, 2, 1).astype(np.float64)[skin.index]
    to_arm = np.linalg.inv(np.asarray(armature.matrix_world, np.float64)) @ obj_world
    m = np.linalg.inv(to_arm)[None] @ pose @ skin.rest_inv @ to_arm[None]
    return np.ascontiguousarray(m[:, :3, :].transpose(0, 2, 1).reshape(-1, 12), dtype=np.float32)


def _shepperd(r: np.ndarray) -> np.ndarray:
    """(M, 4) unit quaternions (w, x, y, z) of rotation matrices (M, 3, 3), the stable branch per row."""
    m00, m11, m22 = r[:, 0, 0], r[:, 1, 1], r[:, 2, 2]
    cand = np.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    pick = np.argmax(cand, axis=-1)
    s = np.sqrt(np.maximum(cand[np.arange(len(r)), pick], 1e-12)) * 2.0
    a21, a12, a02, a20, a10, a01 = r[:, 2, 1], r[:, 1, 2], r[:, 0, 2], r[:, 2, 0], r[:, 1, 0], r[:, 0, 1]
    options = [np.stack([0.25 * s, (a21 - a12) / s, (a02 - a20) / s, (a10 - a01) / s], -1),
               np.stack([(a21 - a12) / s, 0.25 * s, (a01 + a10) / s, (a02 + a20) / s], -1),
               np.stack([(a02 - a20) / s, (a01 + a10) / s, 0.25 * s, (a12 + a21) / s], -1),
               np.stack([(a10 - a01) / s, (a02 + a20) / s, (a12 + a21) / s, 0.25 * s], -1)]  # fmt: skip
    return np.choose(pick[:, None], options)


def skin_arrays(skin: _Skin, matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The splats' centres (N, 3) and rotations (N, 4) under the bones' skinning ``matrices`` (K, 12), chunk by
    chunk on two threads (numpy lets go of the GIL in its loops)."""
    chunks = skin.chunks
    if len(chunks) > 1:
        list(_pool().map(lambda chunk: skin_chunk(chunk, matrices), chunks))
    else:
        skin_chunk(chunks[0], matrices)
    return skin.positions, skin.rotations


_executor: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pla4d-rig")
    return _executor


def skin_chunk(skin: _Chunk, matrices: np.ndarray) -> None:
    """One chunk's centres and rotations under the bones' skinning ``matrices`` (K, 12), into its output rows.

    The rotation is pla4d.rig.skinning.blend_rotations in the asset's axes: the blended matrix's x column kept, its
    y column made orthogonal to it. The asset's y axis is Blender's z, so here z is the second column kept and
    y = z cross x; the result turns each splat's rest rotation."""
    blend = np.matmul(matrices.T, skin.weights, out=skin.blend)
    a0, a1, a2, b0, b1, b2, c0, c1, c2, t0, t1, t2 = blend
    rx, ry, rz = skin.rest
    out = skin.positions
    for k, (a, b, c, t) in enumerate(((a0, b0, c0, t0), (a1, b1, c1, t1), (a2, b2, c2, t2))):
        p = a * rx
        p += b * ry
        p += c * rz
        p += t
        out[:, k] = p
    inv = a0 * a0
    inv += a1 * a1
    inv += a2 * a2
    np.sqrt(inv, out=inv)
    np.divide(1.0, inv, out=inv)
    x0, x1, x2 = a0 * inv, a1 * inv, a2 * inv
    d = x0 * c0
    d += x1 * c1
    d += x2 * c2
    z0, z1, z2 = c0 - d * x0, c1 - d * x1, c2 - d * x2
    inv = z0 * z0
    inv += z1 * z1
    inv += z2 * z2
    np.sqrt(inv, out=inv)
    np.divide(1.0, inv, out=inv)
    z0 *= inv
    z1 *= inv
    z2 *= inv
    y0, y1, y2 = z1 * x2 - z2 * x1, z2 * x0 - z0 * x2, z0 * x1 - z1 * x0
    # Quaternion of the columns (x, y, z): the w branch, exact where |w| is not small (rotations from rest under
    # ~150 degrees); the rest take Shepperd's stable branch.
    qw = x0 + y1
    qw += z2
    qw += 1.0
    np.maximum(qw, 0.0, out=qw)
    np.sqrt(qw, out=qw)
    qw *= 0.5
    inv = np.maximum(qw, _MIN_W)
    np.divide(0.25, inv, out=inv)
    qx, qy, qz = (y2 - z1) * inv, (z0 - x2) * inv, (x1 - y0) * inv
    low = np.flatnonzero(qw < _MIN_W)
    if low.size:
        cols = [v[low] for v in (x0, y0, z0, x1, y1, z1, x2, y2, z2)]
        q = _shepperd(np.stack(cols, -1).reshape(-1, 3, 3))
        qw[low], qx[low], qy[low], qz[low] = q.T
    bw, bx, by, bz = skin.rest_rot
    rot = skin.rotations
    rot[:, 0] = qw * bw - qx * bx - qy * by - qz * bz
    rot[:, 1] = qw * bx + qx * bw + qy * bz - qz * by
    rot[:, 2] = qw * by - qx * bz + qy * bw + qz * bx
    rot[:, 3] = qw * bz + qx * by - qy * bx + qz * bw


def skin_object(obj: Any, depsgraph: Any = None, force: bool = False) -> bool:
    """Skin ``obj``'s splats with its armature's current (evaluated) pose and write them; False when nothing was
    written (not rigged, baked, no armature, or the pose is the one written last)."""
    armature = obj.get(RIG_MARK)
    if armature is None or getattr(armature, "type", None) != "ARMATURE" or obj.pla4d.baked:
        return False
    evaluated = armature.evaluated_get(depsgraph) if depsgraph is not None else armature
    try:
        skin = _skin_of(obj, armature)
    except (KeyError, ValueError):
        return False
    world = np.asarray((obj.evaluated_get(depsgraph) if depsgraph is not None else obj).matrix_world, np.float64)
    matrices = skin_matrices(skin, world, evaluated)
    key = matrices.tobytes()
    if not force and key == skin.last:
        return False
    positions, rotations = skin_arrays(skin, matrices)
    data = obj.data
    data.attributes["position"].data.foreach_set("vector", positions.ravel())
    data.attributes[ATTR_ROTATION].data.foreach_set("value", rotations.ravel())
    data.update_tag()
    skin.last = key
    return True


def skin_scene(scene: Any, depsgraph: Any = None, armatures: set[Any] | None = None) -> int:
    """Skin every rigged splat object of ``scene`` (only those driven by ``armatures`` when given)."""
    count = 0
    for obj in scene.objects:
        armature = obj.get(RIG_MARK)
        if armature is not None and (armatures is None or armature in armatures):
            count += skin_object(obj, depsgraph)
    return count


# ------------------------------------------------------------------------------------------------ handlers


@persistent
def _on_frame_change_post(scene: Any, depsgraph: Any = None) -> None:
    skin_scene(scene, depsgraph)


@persistent
def _on_depsgraph_update_post(scene: Any, depsgraph: Any) -> None:
    armatures = set()
    for update in depsgraph.updates:
        ident = update.id
        if isinstance(ident, bpy.types.Object) and ident.type == "ARMATURE":
            armatures.add(ident.original)
    if armatures:
        skin_scene(scene, depsgraph, armatures)


@persistent
def _on_load_post(*_args: Any) -> None:
    forget()


_HANDLERS = (
    (bpy.app.handlers.frame_change_post, _on_frame_change_post),
    (bpy.app.handlers.depsgraph_update_post, _on_depsgraph_update_post),
    (bpy.app.handlers.load_post, _on_load_post),
)


def register() -> None:
    for handlers, fn in _HANDLERS:
        if fn not in handlers:
            handlers.append(fn)


def unregister() -> None:
    for handlers, fn in _HANDLERS:
        if fn in handlers:
            handlers.remove(fn)
    forget()
    global _executor
    if _executor is not None:
        _executor.shutdown(wait=True)
        _executor = None


# ------------------------------------------------------------------------------------------------ bake


def bake_rig(obj: Any) -> int:
    """Store every frame's skinned centres and rotations as the per-frame attributes of the ``pla4d Frames``
    nodes (scales and opacities are held); returns the frame count. Posing the armature no longer moves the baked
    splats; Free Bake hands them back to the armature."""
    from .nodes import add_modifiers

    props = obj.pla4d
    if props.baked:
        return props.frame_count
    if obj.get(RIG_MARK) is None:
        raise ValueError(f"{obj.name} has no armature")
    scene = bpy.context.scene
    current = scene.frame_current
    data = obj.data
    try:
        for t in range(props.frame_count):
            scene.frame_set(props.start_frame + t)
            skin_object(obj, bpy.context.evaluated_depsgraph_get())  # a no-op when the handler skinned it
            skin = _skins[obj.session_uid]
            set_attribute(data, f"pla4d_position_{t}", skin.positions)
            set_attribute(data, f"pla4d_{ATTR_ROTATION}_{t}", skin.rotations, "QUATERNION", "value")
    finally:
        scene.frame_set(current)
    props.baked = True
    obj.modifiers.get("pla4d Frames") or add_modifiers(obj, props.start_frame, props.frame_count, splats=False)
    data.update_tag()
    return props.frame_count
