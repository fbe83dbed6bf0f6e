"""Playback of pla4d objects: the opened (memory-mapped) assets, the per-frame update the ``frame_change_pre``
handler runs, the bake into the .blend and back, and the start frame.

- **Playback**: :func:`apply_scene` writes the current frame's animated attributes with ``foreach_set`` from the
  memory-mapped asset files (asset frame ``t`` = scene frame ``start + t``). This is the hot path
  (benchmarks/addon_bench.py). Converting a frame to Blender's axes and values costs more than writing it (at
  100k Gaussians ~2.5 ms for the rotations' normalisation against ~0.05 ms per ``foreach_set``), so each frame is
  converted once and kept (contiguous float32, up to :data:`FRAME_CACHE_BYTES` in all); a frame that does not fit
  is converted into a reused buffer every time instead.
- **Bake**: copies each frame into per-frame attributes (``pla4d_position_7`` ...); the ``pla4d Frames`` modifier
  then picks the current frame's attributes by name, so a saved file plays without the asset folder, the
  add-on's handler or the backend.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import bpy
import numpy as np

from . import asset_io
from .asset_io import Asset
from .attributes import BLENDER_ATTR, MESH_ANIMATED, read_attribute, set_attribute, to_blender
from .nodes import add_modifiers, set_modifier_input

RIG_MARK = "pla4d_rig"  # rig hook (issue 23): rig_playback.RIG_MARK, the custom property of rigged splats

# Converted frames kept for playback, all assets together; filled in visiting order and never evicted: playback
# loops over the timeline, where least-recently-used eviction would miss on every frame once the loop outgrows it.
FRAME_CACHE_BYTES = 512 * 2**20

_assets: dict[str, Asset] = {}  # resolved asset path -> opened (memory-mapped) asset
_resolved: dict[str, str] = {}  # asset path as stored on objects -> resolved path (no file-system call per frame)
_buffers: dict[tuple[int, str], np.ndarray] = {}  # (data session_uid, attribute) -> float32 scratch buffer
_frames: dict[tuple[str, str, int], np.ndarray] = {}  # (resolved path, attribute, frame) -> flat Blender values
_frames_bytes = 0


class ImportFailedError(Exception):
    """An import or bake that cannot proceed; the message is for the user (shown by the operator)."""


# ------------------------------------------------------------------------------------------------ assets


def _key(path: str | os.PathLike[str]) -> str:
    key = _resolved.get(path) if isinstance(path, str) else None
    if key is None:
        key = str(Path(path).resolve())
        if isinstance(path, str):
            _resolved[path] = key
    return key


def _opened(path: str | os.PathLike[str], verify: bool = False) -> tuple[str, Asset]:
    key = _key(path)
    asset = _assets.get(key)
    if asset is None:
        asset = asset_io.open_asset(key, verify=verify)
        _assets[key] = asset
    return key, asset


def get_asset(path: str | os.PathLike[str], verify: bool = False) -> Asset:
    """The opened asset at ``path``, cached (memory maps stay open while the add-on runs)."""
    return _opened(path, verify)[1]


def forget_asset(path: str | os.PathLike[str]) -> None:
    """Drop one cached asset and its converted frames, so the next :func:`get_asset` re-reads the folder (it may
    have been replaced)."""
    global _frames_bytes
    _resolved.clear()  # a replaced folder may resolve elsewhere now (a moved link)
    key = str(Path(path).resolve())
    _assets.pop(key, None)
    for cached in [k for k in _frames if k[0] == key]:
        _frames_bytes -= _frames.pop(cached).nbytes


def forget_assets() -> None:
    """Drop cached assets, converted frames and buffers (after loading a file, or when an asset folder was
    replaced)."""
    global _frames_bytes
    _assets.clear()
    _resolved.clear()
    _buffers.clear()
    _frames.clear()
    _frames_bytes = 0


def _buffer(data: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    key = (data.session_uid, name)
    buf = _buffers.get(key)
    if buf is None or buf.shape != shape:
        buf = np.empty(shape, dtype=np.float32)
        _buffers[key] = buf
    return buf


# ------------------------------------------------------------------------------------------------ playback


def asset_frame(obj: Any, scene_frame: int) -> int:
    props = obj.pla4d
    return min(max(int(scene_frame) - props.start_frame, 0), max(props.frame_count - 1, 0))


def apply_frame(obj: Any, scene_frame: int) -> bool:
    """Write the object's animated attributes for ``scene_frame``; False when the asset is not available."""
    props = obj.pla4d
    if props.baked or not props.asset_path or props.kind not in ("GAUSSIANS", "MESH"):
        return False
    if obj.get(RIG_MARK) is not None:  # rig hook (issue 23): rigged splats follow their armature, not the asset
        return False
    try:
        path, asset = _opened(props.asset_path)
    except (asset_io.AssetReadError, OSError):
        return False
    t = asset_frame(obj, scene_frame)
    data = obj.data
    if props.kind == "MESH":
        if asset.mesh is None:
            return False
        flat = _blender_frame(data, path, asset, "mesh", t)
        data.attributes["position"].data.foreach_set("vector", flat)
        data.update_tag()
        return True
    if len(data.points) != asset.num_gaussians:
        return False
    for name in asset.animated:
        target, _kind, key, _width = BLENDER_ATTR[name]
        attr = data.attributes.get(target)
        if attr is None:
            continue
        attr.data.foreach_set(key, _blender_frame(data, path, asset, name, t))
    data.update_tag()
    return True


def _blender_frame(data: Any, path: str, asset: Asset, name: str, t: int) -> np.ndarray:
    """Frame ``t`` of animated attribute ``name`` (``"mesh"``: the mesh's positions) as flat contiguous float32
    Blender values, ready for ``foreach_set``: converted once and kept (under the asset's key ``path``) while
    :data:`FRAME_CACHE_BYTES` allows, else converted into ``data``'s reused buffer."""
    global _frames_bytes
    cache_key = (path, name, t)
    flat = _frames.get(cache_key)
    if flat is not None:
        return flat
    src = asset.mesh.positions[t] if name == "mesh" else asset.arrays[name][t]
    shape = (src.shape[0], 3) if name == "mesh" else (src.shape[0], BLENDER_ATTR[name][3])
    shape = shape if shape[1] > 1 else shape[:1]
    nbytes = 4 * int(np.prod(shape))
    keep = _frames_bytes + nbytes <= FRAME_CACHE_BYTES
    out = np.empty(shape, dtype=np.float32) if keep else _buffer(data, name, shape)
    if name == "mesh":
        asset_io.positions_to_blender(src, out)
    else:
        to_blender(name, src, out)
    flat = out.reshape(-1)
    if keep:
        flat.flags.writeable = False  # shared by every object showing this asset
        _frames[cache_key] = flat
        _frames_bytes += nbytes
    return flat


def prefill(obj: Any) -> int:
    """Convert every frame of a handler-driven object ahead of playback, while :data:`FRAME_CACHE_BYTES` allows,
    so that no frame change pays the conversion (at 100k Gaussians ~3 ms a frame against ~0.25 ms to write a
    converted one); returns the frames now kept. Run at import and after loading a file."""
    props = obj.pla4d
    if props.baked or not props.asset_path or props.kind not in ("GAUSSIANS", "MESH") or obj.get(RIG_MARK) is not None:
        return 0
    try:
        path, asset = _opened(props.asset_path)
    except (asset_io.AssetReadError, OSError):
        return 0
    if props.kind == "MESH" and asset.mesh is None:
        return 0
    names = ["mesh"] if props.kind == "MESH" else list(asset.animated)
    for t in range(asset.frame_count):
        for name in names:
            _blender_frame(obj.data, path, asset, name, t)
            if (path, name, t) not in _frames:  # the budget is spent: later frames convert on their visit
                return t
    return asset.frame_count


def apply_scene(scene: Any) -> int:
    """Update every handler-driven pla4d object of ``scene`` to its current frame; returns how many changed."""
    count = 0
    frame = scene.frame_current
    for obj in scene.objects:
        props = getattr(obj, "pla4d", None)
        if props is not None and props.kind in ("GAUSSIANS", "MESH") and not props.baked:
            count += apply_frame(obj, frame)
    return count


# ------------------------------------------------------------------------------------------------ bake


def frame_values(obj: Any, name: str, t: int) -> np.ndarray:
    """Blender values of animated attribute ``name`` at asset frame ``t`` (from the bake or the asset)."""
    props = obj.pla4d
    target, _kind, key, width = BLENDER_ATTR[name]
    if props.baked:
        data = obj.data
        baked = f"pla4d_{target}_{t}"
        return read_attribute(data, baked if data.attributes.get(baked) else target, key, width)
    if obj.get(RIG_MARK) is not None:  # rig hook (issue 23): rigged splats export what their armature poses
        from .rig_playback import posed_values

        return posed_values(obj, name, t)
    asset = get_asset(props.asset_path)
    if props.kind == "MESH":
        return asset_io.positions_to_blender(asset.mesh.positions[t])
    return to_blender(name, asset.frame(name, t))


def bake(obj: Any) -> int:
    """Copy every frame into per-frame attributes read by the ``pla4d Frames`` nodes; returns the frame count.

    After this the object plays without the asset folder, the handler or the backend (a saved .blend too)."""
    props = obj.pla4d
    if props.baked:
        return props.frame_count
    if obj.get(RIG_MARK) is not None:  # rig hook (issue 23): bake the armature's motion of rigged splats
        from .rig_playback import bake_rig

        return bake_rig(obj)
    if props.kind not in ("GAUSSIANS", "MESH"):
        raise ImportFailedError(f"{obj.name} is not a pla4d Gaussian or mesh object")
    try:
        asset = get_asset(props.asset_path)
    except asset_io.AssetReadError as exc:
        raise ImportFailedError(f"cannot bake {obj.name}: {exc}") from None
    animated = MESH_ANIMATED if props.kind == "MESH" else asset.animated
    data = obj.data
    for t in range(asset.frame_count):
        for name in animated:
            target, kind, key, _width = BLENDER_ATTR[name]
            values = frame_values(obj, name, t)
            set_attribute(data, f"pla4d_{target}_{t}", values, kind, key)
    props.baked = True
    obj.modifiers.get("pla4d Frames") or add_modifiers(obj, props.start_frame, props.frame_count, splats=False)
    data.update_tag()
    return asset.frame_count


def unbake(obj: Any) -> None:
    """Remove the per-frame attributes; the handler drives the object from its asset folder again."""
    data = obj.data
    # Collect names first: removing an attribute invalidates references to the others.
    names = [a.name for a in data.attributes if a.name.startswith("pla4d_") and a.name.rsplit("_", 1)[-1].isdigit()]
    for name in names:
        data.attributes.remove(data.attributes[name])
    obj.pla4d.baked = False
    data.update_tag()


def set_start_frame(obj: Any) -> None:
    """Propagate a changed start frame to the modifier and the handler-driven data."""
    mod = obj.modifiers.get("pla4d Frames")
    if mod is not None and mod.node_group is not None:
        set_modifier_input(mod, "Start Frame", int(obj.pla4d.start_frame))
        obj.update_tag()
    scene = bpy.context.scene
    if scene is not None:
        apply_frame(obj, scene.frame_current)
