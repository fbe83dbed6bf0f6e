"""Playback of rigged splats (issue 23): linear blend skinning of the splats' centres and rotations with numpy,
in the add-on's handlers, from the armature's evaluated pose.

Why not Blender's Armature modifier: a splat's rotation needs its blended bone transform, which the modifier only
gives for points (three skinned vertices per splat, turned into a rotation by nodes): ~210 ms for the modifier on
300k vertices and ~220 ms for the nodes at 100k splats. Here the splats are one point each (a PointCloud, like the
cache import), and a frame is one (16 x K) @ (K x N) product of the bones' skinning matrices and quaternions with
the splats' dense weights, a few passes over N floats for the centres and the blended quaternion times the rest
one, and two ``foreach_set``.

- ``frame_change_post``: after the depsgraph evaluated the armature at the new frame, every rigged splat object
  (a per-scene registry, not a walk over every object) is skinned and written; Blender evaluates again what a
  ``frame_change_post`` handler tagged, within the same ``frame_set``, so renders and the viewport see this
  frame's splats. Each frame's skinned splats are kept (:data:`RIG_CACHE_BYTES`) with the pose they were skinned
  with, so a timeline played again only writes them, as the cache path does; a changed pose skins again.
- ``depsgraph_update_post``: when an armature that drives splats was updated (a bone posed or re-keyed by hand),
  its splats are skinned again. A pose identical to the last one written is skipped, so the handler's own writes
  do not loop.
- Bake (:func:`bake_rig`, called by ``playback.bake``) and the exporters (:func:`posed_values`, through
  ``playback.frame_values``): every frame as the armature poses it, so an edited Action is what is baked or
  written.

The splats keep their rig in the .blend: rest centres and rotations (``pla4d_rig_rest_*``), bone indices and
weights (``pla4d_rig_jointK`` / ``pla4d_rig_weightK``, a pair per weight slot) as point attributes, the bone names
and the armature as custom properties of the object.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import bpy
import numpy as np
from bpy.app.handlers import persistent

from . import playback
from .attributes import ATTR_ROTATION, BLENDER_ATTR, read_attribute, set_attribute

RIG_MARK = playback.RIG_MARK  # object custom property: the armature object that drives these splats
RIG_BONES = "pla4d_rig_bones"  # object custom property: the bone names, in the order of the joint indices
ATTR_REST_POSITION = "pla4d_rig_rest_position"
ATTR_REST_ROTATION = "pla4d_rig_rest_rotation"
# Splats per chunk: the ~40 float32 temporaries of a chunk stay in the cache (half the time of whole 100k arrays).
CHUNK = 16384


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
    """A run of splats skinned at once: its arrays (bone-major (K, n) weights, (3, n) / (4, n) rest) and the rows of
    the object's output buffers it writes."""

    def __init__(self, weights: np.ndarray, joints: np.ndarray, slot_weights: np.ndarray, rest: np.ndarray,
                 rest_rot: np.ndarray, positions: np.ndarray, rotations: np.ndarray) -> None:  # fmt: skip
        self.weights = np.ascontiguousarray(weights)
        self.joints = np.ascontiguousarray(joints)  # (I, n): the slots' bones (slot 0: the splat's first bone)
        self.slot_weights = np.ascontiguousarray(slot_weights)  # (I, n)
        self.rest = np.ascontiguousarray(rest.T)
        self.rest_rot = np.ascontiguousarray(rest_rot.T)
        self.blend = np.empty((16, weights.shape[1]), np.float32)
        self.scratch = np.empty((2, weights.shape[1]), np.float32)
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
        weights = np.zeros((k, n), np.float32)  # dense: one BLAS product beats per-influence gathers (3x here)
        points = np.arange(n)
        joints, slot_weights = [], []
        while (attr := data.attributes.get(attr_joint(len(joints)))) is not None:
            j = np.empty(n, np.int32)
            attr.data.foreach_get("value", j)
            w = read_attribute(data, attr_weight(len(joints)), "value", 1)
            np.add.at(weights, (j, points), w)
            joints.append(j)
            slot_weights.append(w)
        joints_a, slot_w = np.array(joints, np.int32), np.array(slot_weights, np.float32)
        # The bone pairs (first bone, other bone) that some splat blends: their quaternions' hemispheres are checked
        # each frame (the dense product adds the bones' quaternions as they come).
        pairs = joints_a[0][None] * k + np.where(slot_w[1:] > 0, joints_a[1:], joints_a[0][None])
        self.pairs = np.unique(pairs)
        rest = read_attribute(data, ATTR_REST_POSITION, "vector", 3)
        rest_rot = read_attribute(data, ATTR_REST_ROTATION, "value", 4)
        self.positions = np.empty((n, 3), np.float32)
        self.rotations = np.empty((n, 4), np.float32)
        self.chunks = [_Chunk(weights[:, lo : lo + CHUNK], joints_a[:, lo : lo + CHUNK], slot_w[:, lo : lo + CHUNK],
                              rest[lo : lo + CHUNK], rest_rot[lo : lo + CHUNK], self.positions[lo : lo + CHUNK],
                              self.rotations[lo : lo + CHUNK])
                       for lo in range(0, n, CHUNK)]  # fmt: skip
        self.pose = np.empty(self.bone_count * 16, np.float32)
        self.arm_world = np.eye(4)
        self.last: bytes | None = None
        self.written = (self.positions, self.rotations)  # the centres and rotations written last


_skins: dict[int, _Skin] = {}  # object session_uid -> its rig as arrays
# Skinned frames kept for playback, as the cache path keeps converted frames: (object session_uid, scene frame) ->
# (the pose's key, centres, rotations). A frame is used only while its pose is the one it was skinned with, so
# re-keying or posing a bone is seen at once (that frame is skinned again, in place). New frames stop being kept
# once RIG_CACHE_BYTES are held, all objects together.
RIG_CACHE_BYTES = 512 * 2**20
_frames: dict[tuple[int, int], tuple[bytes, np.ndarray, np.ndarray]] = {}
_frames_bytes = 0
# Per scene (session_uid): its object count and the names of its rigged splat objects, which the handlers visit
# instead of every object of the scene; scanned again when the count changed or a name no longer holds one.
_registry: dict[int, tuple[int, list[str]]] = {}


def forget(obj: Any = None) -> None:
    """Drop the cached rig arrays and skinned frames of ``obj`` (all objects when None): read again at the next
    frame."""
    global _frames_bytes
    _registry.clear()
    if obj is None:
        _skins.clear()
        _frames.clear()
        _frames_bytes = 0
        return
    uid = obj.session_uid
    _skins.pop(uid, None)
    for key in [k for k in _frames if k[0] == uid]:
        _, pos, rot = _frames.pop(key)
        _frames_bytes -= pos.nbytes + rot.nbytes


def _skin_of(obj: Any, armature: Any) -> _Skin:
    skin = _skins.get(obj.session_uid)
    if skin is None or skin.n != len(obj.data.points) or skin.bone_count != len(armature.data.bones):
        skin = _Skin(obj, armature)
        _skins[obj.session_uid] = skin
    return skin


def _quaternions(r: np.ndarray) -> np.ndarray:
    """(M, 4) unit quaternions (w, x, y, z), w >= 0, of rotation matrices (M, 3, 3) (Shepperd's stable branch): as
    pla4d.rig.skinning.matrix_to_quaternion."""
    m00, m11, m22 = r[:, 0, 0], r[:, 1, 1], r[:, 2, 2]
    cand = np.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    pick = np.argmax(cand, axis=-1)
    s = np.sqrt(np.maximum(cand[np.arange(len(r)), pick], 1e-12)) * 2.0
    a21, a12, a02, a20, a10, a01 = r[:, 2, 1], r[:, 1, 2], r[:, 0, 2], r[:, 2, 0], r[:, 1, 0], r[:, 0, 1]
    options = [np.stack([0.25 * s, (a21 - a12) / s, (a02 - a20) / s, (a10 - a01) / s], -1),
               np.stack([(a21 - a12) / s, 0.25 * s, (a01 + a10) / s, (a02 + a20) / s], -1),
               np.stack([(a02 - a20) / s, (a01 + a10) / s, 0.25 * s, (a12 + a21) / s], -1),
               np.stack([(a10 - a01) / s, (a02 + a20) / s, (a12 + a21) / s, 0.25 * s], -1)]  # fmt: skip
    q = np.choose(pick[:, None], options)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return np.where(q[:, :1] < 0, -q, q)


def pose_key(skin: _Skin, obj_world: np.ndarray, armature: Any) -> bytes:
    """Read the armature's pose into ``skin`` and return what the splats' skinning depends on, as bytes: every bone's
    pose matrix and both objects' world matrices (equal bytes, equal skinned splats)."""
    armature.pose.bones.foreach_get("matrix", skin.pose)
    skin.arm_world = np.asarray(armature.matrix_world, np.float64)
    return skin.pose.tobytes() + skin.arm_world.tobytes() + obj_world.tobytes()


def skin_matrices(skin: _Skin, obj_world: np.ndarray) -> np.ndarray:
    """(K, 16) float32: each bone's skinning matrix in the splats' object space, columns (x, y, z, translation), as
    the Armature modifier applies it (object -> armature space, pose @ rest^-1, back), then the quaternion of its
    rotation (w >= 0); from the pose :func:`pose_key` read."""
    pose = skin.pose.reshape(-1, 4, 4).transpose(0, 2, 1).astype(np.float64)[skin.index]
    to_arm = np.linalg.inv(skin.arm_world) @ obj_world
    m = np.linalg.inv(to_arm)[None] @ pose @ skin.rest_inv @ to_arm[None]
    table = np.empty((len(m), 16), np.float32)
    table[:, :12] = m[:, :3, :].transpose(0, 2, 1).reshape(-1, 12)
    table[:, 12:] = _quaternions(m[:, :3, :3])
    return table


def skin_arrays(skin: _Skin, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The splats' centres (N, 3) and rotations (N, 4) under the bones' skinning ``table`` (K, 16), chunk by chunk;
    on two threads where the machine has more than two cores (numpy lets go of the GIL in its loops). On two cores
    the threads gave no wall time back and cost up to 1.7x the CPU time (100k splats, Blender 5.0.1, load 2.8:
    6.4 ms serial, 7.0 to 12.0 ms on two threads), so there the chunks run one after the other."""
    q = table[:, 12:]
    k = len(q)
    # Splats whose bones' quaternions lie in opposite hemispheres (bones turned far apart) need each quaternion
    # flipped to their first bone's side, which the dense product cannot do: only then, those splats are redone.
    opposite = ((q.astype(np.float64) @ q.T.astype(np.float64)) < 0).ravel()
    flip = opposite if opposite[skin.pairs].any() else None
    chunks = skin.chunks
    if len(chunks) > 1 and THREADED:
        list(_pool().map(lambda chunk: skin_chunk(chunk, table, flip, k), chunks))
    else:
        for chunk in chunks:
            skin_chunk(chunk, table, flip, k)
    return skin.positions, skin.rotations


THREADED = (os.cpu_count() or 1) > 2
_executor: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pla4d-rig")
    return _executor


def skin_chunk(skin: _Chunk, table: np.ndarray, flip: np.ndarray | None = None, k: int = 0) -> None:
    """One chunk's centres and rotations under the bones' skinning ``table`` (K, 16), into its output rows.

    The rotation is pla4d.rig.skinning.blend_rotations: the weighted sum of the bones' quaternions, each in the
    hemisphere of the splat's first bone's (``flip``: the (K * K) bone pairs in opposite hemispheres, or None when
    no splat has such a pair), normalised, times the splat's rest quaternion."""
    blend = np.matmul(table.T, skin.weights, out=skin.blend)
    a0, a1, a2, b0, b1, b2, c0, c1, c2, t0, t1, t2, qw, qx, qy, qz = blend
    if flip is not None:
        first = skin.joints[0]
        rows = np.flatnonzero(flip[first[None] * k + skin.joints[1:]].any(0))
        if rows.size:
            j, w = skin.joints[:, rows], skin.slot_weights[:, rows]
            q = table[:, 12:][j]  # (I, m, 4)
            side = np.where((q * q[:1]).sum(-1) < 0, -w, w)
            blend[12:, rows] = (side[..., None] * q).sum(0).T
    rx, ry, rz = skin.rest
    out = skin.positions
    p = skin.scratch[0]
    for i, (a, b, c, t) in enumerate(((a0, b0, c0, t0), (a1, b1, c1, t1), (a2, b2, c2, t2))):
        np.multiply(a, rx, out=p)
        p += b * ry
        p += c * rz
        p += t
        out[:, i] = p
    inv = skin.scratch[1]
    np.multiply(qw, qw, out=inv)
    inv += qx * qx
    inv += qy * qy
    inv += qz * qz
    np.sqrt(inv, out=inv)
    np.divide(1.0, inv, out=inv)
    bw, bx, by, bz = skin.rest_rot
    rot = skin.rotations
    rot[:, 0] = (qw * bw - qx * bx - qy * by - qz * bz) * inv
    rot[:, 1] = (qw * bx + qx * bw + qy * bz - qz * by) * inv
    rot[:, 2] = (qw * by - qx * bz + qy * bw + qz * bx) * inv
    rot[:, 3] = (qw * bz + qx * by - qy * bx + qz * bw) * inv


def _cached(uid: int, frame: int, key: bytes, skin: _Skin | None) -> tuple[np.ndarray, np.ndarray] | None:
    """The kept frame ``frame`` of object ``uid`` if it was skinned with this pose; with ``skin``, keep (or refresh)
    its freshly skinned arrays as that frame instead."""
    global _frames_bytes
    entry = _frames.get((uid, frame))
    if skin is None:
        return entry[1:] if entry is not None and entry[0] == key else None
    if entry is not None:
        np.copyto(entry[1], skin.positions)
        np.copyto(entry[2], skin.rotations)
        _frames[(uid, frame)] = (key, entry[1], entry[2])
    elif _frames_bytes + skin.positions.nbytes + skin.rotations.nbytes <= RIG_CACHE_BYTES:
        _frames[(uid, frame)] = (key, skin.positions.copy(), skin.rotations.copy())
        _frames_bytes += skin.positions.nbytes + skin.rotations.nbytes
    return None


def skin_object(obj: Any, depsgraph: Any = None, force: bool = False, frame: int | None = None) -> bool:
    """Skin ``obj``'s splats with its armature's current (evaluated) pose and write them; False when nothing was
    written (not rigged, baked, no armature, or the pose is the one written last). ``frame``: the scene frame this
    pose is at (a frame change), whose skinned splats are kept and reused while its pose stays the same; ``force``
    skins and writes even an unchanged pose, without the kept frames."""
    armature = obj.get(RIG_MARK)
    if armature is None or getattr(armature, "type", None) != "ARMATURE" or obj.pla4d.baked:
        return False
    evaluated = armature.evaluated_get(depsgraph) if depsgraph is not None else armature
    try:
        skin = _skin_of(obj, armature)
    except (KeyError, ValueError):
        return False
    world = np.asarray((obj.evaluated_get(depsgraph) if depsgraph is not None else obj).matrix_world, np.float64)
    key = pose_key(skin, world, evaluated)
    if not force and key == skin.last:
        return False
    kept = None if force or frame is None else _cached(obj.session_uid, frame, key, None)
    if kept is None:
        positions, rotations = skin_arrays(skin, skin_matrices(skin, world))
        if frame is not None:
            _cached(obj.session_uid, frame, key, skin)
    else:
        positions, rotations = kept
    data = obj.data
    data.attributes["position"].data.foreach_set("vector", positions.ravel())
    data.attributes[ATTR_ROTATION].data.foreach_set("value", rotations.ravel())
    data.update_tag()
    skin.last, skin.written = key, (positions, rotations)
    return True


def rigged_objects(scene: Any) -> list[Any]:
    """The scene's rigged splat objects, from the registry (a scan of the scene's objects when it is stale)."""
    objects = scene.objects
    count = len(objects)
    entry = _registry.get(scene.session_uid)
    if entry is not None and entry[0] == count:
        found = [objects.get(name) for name in entry[1]]
        if all(o is not None and o.get(RIG_MARK) is not None for o in found):
            return found
    found = [o for o in objects if o.get(RIG_MARK) is not None]
    _registry[scene.session_uid] = (count, [o.name for o in found])
    return found


def skin_scene(scene: Any, depsgraph: Any = None, armatures: set[Any] | None = None, frame: int | None = None) -> int:
    """Skin every rigged splat object of ``scene`` (only those driven by ``armatures`` when given)."""
    count = 0
    for obj in rigged_objects(scene):
        if armatures is None or obj.get(RIG_MARK) in armatures:
            count += skin_object(obj, depsgraph, frame=frame)
    return count


# ------------------------------------------------------------------------------------------------ handlers


def write_kept(scene: Any) -> int:
    """Write the kept frame of the scene's current frame to every rigged splat object that has one, before the
    depsgraph evaluates the frame; returns how many were written. Which pose it belongs to is not known yet (the
    armature is evaluated after this): ``frame_change_post`` checks it and skins again if the pose changed since.
    Written here, the splats are evaluated once in the frame change, not a second time for a write after it."""
    frame = scene.frame_current
    count = 0
    for obj in rigged_objects(scene):
        entry = _frames.get((obj.session_uid, frame))
        skin = _skins.get(obj.session_uid)
        if entry is None or skin is None or obj.pla4d.baked or skin.last == entry[0]:
            continue
        data = obj.data
        data.attributes["position"].data.foreach_set("vector", entry[1].ravel())
        data.attributes[ATTR_ROTATION].data.foreach_set("value", entry[2].ravel())
        data.update_tag()
        skin.last, skin.written = entry[0], (entry[1], entry[2])
        count += 1
    return count


@persistent
def _on_frame_change_pre(scene: Any, *_args: Any) -> None:
    write_kept(scene)


@persistent
def _on_frame_change_post(scene: Any, depsgraph: Any = None) -> None:
    skin_scene(scene, depsgraph, frame=scene.frame_current)


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
    (bpy.app.handlers.frame_change_pre, _on_frame_change_pre),
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


def posed_frame(obj: Any, t: int) -> tuple[np.ndarray, np.ndarray]:
    """The splats' centres (N, 3) and rotations (N, 4) in Blender's values as the armature poses them at asset
    frame ``t`` (scene frame start + t: its Action, NLA and constraints, as played); the scene is left at that
    frame."""
    scene = bpy.context.scene
    frame = obj.pla4d.start_frame + int(t)
    if scene.frame_current != frame:
        scene.frame_set(frame)
    armature = obj.get(RIG_MARK)
    if armature is None or getattr(armature, "type", None) != "ARMATURE":
        raise ValueError(f"{obj.name} has no armature")
    skin_object(obj, bpy.context.evaluated_depsgraph_get(), frame=frame)  # a no-op when the handler skinned it
    return _skin_of(obj, armature).written


def prefill(obj: Any) -> int:
    """Skin and keep every frame of the rigged splats ``obj`` as its armature plays them, ahead of playback (as the
    cache path converts its frames at import), so that the first pass over the timeline only writes kept frames;
    returns the frames kept. The splat instancing is off meanwhile (it is not needed to skin), and the scene's frame
    is restored."""
    props, scene = obj.pla4d, bpy.context.scene
    if props.baked or obj.get(RIG_MARK) is None:
        return 0
    current = scene.frame_current
    splats = obj.modifiers.get("pla4d Splats")
    shown = splats.show_viewport if splats is not None else False
    if splats is not None:
        splats.show_viewport = False
    kept = 0
    try:
        for t in range(props.frame_count):
            posed_frame(obj, t)
            if (obj.session_uid, props.start_frame + t) not in _frames:
                break  # the budget is spent: later frames are skinned on their visit
            kept += 1
    finally:
        if splats is not None:
            splats.show_viewport = shown
        scene.frame_set(current)
    return kept


def posed_values(obj: Any, name: str, t: int) -> np.ndarray:
    """Blender values of attribute ``name`` (``positions`` or ``rotations``; the held others as stored) at asset
    frame ``t`` of an unbaked rigged object, as its armature poses them (what the exporters write); the scene's
    frame is restored."""
    if name not in ("positions", "rotations"):
        target, _kind, key, width = BLENDER_ATTR[name]
        return read_attribute(obj.data, target, key, width)
    scene = bpy.context.scene
    current = scene.frame_current
    try:
        positions, rotations = posed_frame(obj, t)
        return (positions if name == "positions" else rotations).copy()
    finally:
        if scene.frame_current != current:
            scene.frame_set(current)


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
            positions, rotations = posed_frame(obj, t)
            set_attribute(data, f"pla4d_position_{t}", positions)
            set_attribute(data, f"pla4d_{ATTR_ROTATION}_{t}", rotations, "QUATERNION", "value")
    finally:
        scene.frame_set(current)
    props.baked = True
    obj.modifiers.get("pla4d Frames") or add_modifiers(obj, props.start_frame, props.frame_count, splats=False)
    data.update_tag()
    return props.frame_count
