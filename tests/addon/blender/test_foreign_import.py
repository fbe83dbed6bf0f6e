"""Splats made elsewhere, imported into Blender: a numbered PLY sequence (written by hand to the 3DGS layout), an SPZ
sequence (written by gsply, the library's own writer), and a KHR_gaussian_splatting GLB with POSITION morph
targets and a weights animation (written by hand to the spec). Each lands with the right count, positions and
colours at two frames, and bakes; the add-on's splat exports read back."""

from __future__ import annotations

import json
import struct

import bpy
import numpy as np
import pytest
from conftest import attribute, positions, to_blender

SH_C0 = 0.28209479177387814
N, T = 50, 3


def _srgb_to_linear(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0, 1)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _colour(sh_dc: np.ndarray) -> np.ndarray:
    """The splat's linear RGB from its SH DC (which encodes an sRGB colour), written independently of the add-on."""
    return _srgb_to_linear(0.5 + SH_C0 * sh_dc)


def _truth(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.uniform(-0.5, 0.5, (N, 3)).astype(np.float32)
    step = np.array([0.03, 0.02, -0.01], np.float32)
    q = rng.normal(size=(N, 4)).astype(np.float32)
    return {
        "positions": np.stack([base + t * step for t in range(T)]).astype(np.float32),
        "rotations": (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32),
        "scales": rng.uniform(-5, -3, (N, 3)).astype(np.float32),
        "opacities": rng.uniform(-2, 2, N).astype(np.float32),
        "sh_dc": rng.uniform(-1.2, 1.2, (N, 3)).astype(np.float32),
    }


def _write_ply(path, truth: dict[str, np.ndarray], t: int) -> None:
    """A 3DGS PLY by hand: ASCII header + binary little-endian float32 vertex records (x y z nx ny nz f_dc_0..2
    opacity scale_0..2 rot_0..3)."""
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
             "rot_0", "rot_1", "rot_2", "rot_3"]  # fmt: skip
    n = truth["positions"].shape[1]
    rows = np.concatenate([truth["positions"][t], np.zeros((n, 3)), truth["sh_dc"], truth["opacities"][:, None],
                           truth["scales"], truth["rotations"]], axis=1).astype("<f4")  # fmt: skip
    header = f"ply\nformat binary_little_endian 1.0\nelement vertex {n}\n"
    header += "".join(f"property float {n}\n" for n in names) + "end_header\n"
    path.write_bytes(header.encode() + rows.tobytes())


def _glb(doc: dict, blob: bytes) -> bytes:
    text = json.dumps(doc).encode()
    text += b" " * (-len(text) % 4)
    blob += b"\0" * (-len(blob) % 4)
    total = 12 + 8 + len(text) + 8 + len(blob)
    return (struct.pack("<III", 0x46546C67, 2, total) + struct.pack("<II", len(text), 0x4E4F534A) + text
            + struct.pack("<II", len(blob), 0x004E4942) + blob)  # fmt: skip


def _write_khr_glb(path, truth: dict[str, np.ndarray], fps: float) -> None:
    """KHR_gaussian_splatting by hand: base = frame 0, target k = frame k - frame 0, a LINEAR weights animation."""
    ext = "KHR_gaussian_splatting"
    base = truth["positions"][0]
    arrays = [
        (base, "VEC3"),
        (np.roll(truth["rotations"], -1, axis=1), "VEC4"),  # glTF order (x, y, z, w)
        (np.exp(truth["scales"]), "VEC3"),
        (1 / (1 + np.exp(-truth["opacities"])), "SCALAR"),
        (truth["sh_dc"], "VEC3"),
        *[(truth["positions"][k] - base, "VEC3") for k in range(T)],
        (np.arange(T, dtype=np.float32) / fps, "SCALAR"),
        (np.eye(T, dtype=np.float32), "SCALAR"),
    ]
    blob, views, accessors = b"", [], []
    for array, kind in arrays:
        data = np.ascontiguousarray(array, "<f4").tobytes()
        views.append({"buffer": 0, "byteOffset": len(blob), "byteLength": len(data)})
        width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}[kind]
        acc = {"bufferView": len(views) - 1, "componentType": 5126, "count": int(np.size(array) // width), "type": kind}
        if kind == "VEC3" and len(accessors) in (0, 5, 6, 7):  # POSITION and its targets need min/max
            acc["min"] = np.asarray(array).min(0).tolist()
            acc["max"] = np.asarray(array).max(0).tolist()
        if len(accessors) == 5 + T:
            acc["min"], acc["max"] = [0.0], [float((T - 1) / fps)]
        accessors.append(acc)
        blob += data
    attributes = {"POSITION": 0, f"{ext}:ROTATION": 1, f"{ext}:SCALE": 2, f"{ext}:OPACITY": 3,
                  f"{ext}:SH_DEGREE_0_COEF_0": 4}  # fmt: skip
    doc = {
        "asset": {"version": "2.0", "generator": "hand-written test"},
        "extensionsUsed": [ext],
        "buffers": [{"byteLength": len(blob) + (-len(blob) % 4)}],
        "bufferViews": views,
        "accessors": accessors,
        "meshes": [{"primitives": [{"attributes": attributes, "mode": 0,
                                    "targets": [{"POSITION": 5 + k} for k in range(T)],
                                    "extensions": {ext: {"kernel": "ellipse", "colorSpace": "srgb_rec709_display"}}}],
                    "weights": [0.0] * T}],
        "nodes": [{"mesh": 0}],
        "scenes": [{"nodes": [0]}],
        "scene": 0,
        "animations": [{"samplers": [{"input": 5 + T, "output": 6 + T, "interpolation": "LINEAR"}],
                        "channels": [{"sampler": 0, "target": {"node": 0, "path": "weights"}}]}],
    }  # fmt: skip
    path.write_bytes(_glb(doc, blob))


def _check(addon, obj, truth: dict[str, np.ndarray], atol: float, colour_atol: float) -> None:
    """Count, positions and colours at two frames, then bake and check the baked frames."""
    scene = bpy.context.scene
    start = obj.pla4d.start_frame
    assert obj.pla4d.frame_count == T and len(obj.data.points) == N
    for t in (0, T - 1):
        scene.frame_set(start + t)
        np.testing.assert_allclose(positions(obj.data), to_blender(truth["positions"][t]), atol=atol)
        np.testing.assert_allclose(attribute(obj.data, "splat_rgb", 3), _colour(truth["sh_dc"]), atol=colour_atol)
    assert addon.playback.bake(obj) == T and obj.pla4d.baked
    for t in (0, T - 1):
        baked = attribute(obj.data, f"pla4d_position_{t}", 3)
        np.testing.assert_allclose(baked, to_blender(truth["positions"][t]), atol=atol)


def test_ply_sequence_with_frame_index_pattern(addon, tmp_path):
    truth = _truth()
    folder = tmp_path / "kiri"
    folder.mkdir()
    for t in range(T):
        _write_ply(folder / f"bird_{t + 1:04d}.ply", truth, t)  # 1-based, 4 digits
    _write_ply(folder / "other_0001.ply", _truth(seed=5), 0)  # another sequence beside it stays out
    bpy.context.scene.frame_start = 1
    (obj,) = addon.import_foreign.import_foreign(bpy.context, str(folder / "bird_0002.ply"), fps=12.0)
    assert bpy.context.scene.render.fps == 12
    _check(addon, obj, truth, atol=0.0, colour_atol=1e-5)


def test_spz_sequence_written_by_gsply(addon, tmp_path):
    gsply = pytest.importorskip("gsply")
    from gsply.gsdata import GSData

    truth = _truth(seed=2)
    for t in range(T):
        data = GSData(means=truth["positions"][t], quats=truth["rotations"], scales=truth["scales"],
                      opacities=truth["opacities"], sh0=truth["sh_dc"], shN=None)  # fmt: skip
        gsply.write_spz(tmp_path / f"scan.{t:03d}.spz", data)
    (obj,) = addon.import_foreign.import_foreign(bpy.context, str(tmp_path / "scan.000.spz"), fps=8.0)
    # SPZ quantisation: positions 2^-13 (12 fractional bits), DC colour 1/(2 * 0.15 * 255) before the sRGB curve.
    _check(addon, obj, truth, atol=0.5 / 4096 + 1e-6, colour_atol=0.01)


def test_khr_glb_morph_targets_written_by_hand(addon, tmp_path):
    truth = _truth(seed=3)
    _write_khr_glb(tmp_path / "splats.glb", truth, fps=10.0)
    (obj,) = addon.import_foreign.import_foreign(bpy.context, str(tmp_path / "splats.glb"))
    assert abs(bpy.context.scene.render.fps / bpy.context.scene.render.fps_base - 10.0) < 1e-6
    _check(addon, obj, truth, atol=1e-6, colour_atol=1e-5)
    scales = attribute(obj.data, "splat_scale", 3)
    np.testing.assert_allclose(scales, np.exp(truth["scales"]), rtol=1e-5)


def test_foreign_errors_are_reported(addon, tmp_path):
    truth = _truth()
    _write_ply(tmp_path / "a_001.ply", truth, 0)
    small = {k: v[..., :10, :] if k == "positions" else v[:10] for k, v in truth.items()}
    _write_ply(tmp_path / "a_002.ply", small, 0)
    with pytest.raises(addon.playback.ImportFailedError, match="must hold the same Gaussians"):
        addon.import_foreign.import_foreign(bpy.context, str(tmp_path / "a_001.ply"))
    (tmp_path / "bad.glb").write_bytes(b"glTF\x02\x00\x00\x00")
    with pytest.raises(RuntimeError, match="the GLB is truncated"):  # the operator's ERROR report, without bpy UI
        bpy.ops.pla4d.import_foreign(filepath=str(tmp_path / "bad.glb"))


def test_export_menu_formats_read_back(addon, tmp_path):
    """The add-on's KHR GLB and SPZ-sequence exports of an imported sequence read back to the same frames."""
    truth = _truth(seed=4)
    for t in range(T):
        _write_ply(tmp_path / f"f_{t:03d}.ply", truth, t)
    (obj,) = addon.import_foreign.import_foreign(bpy.context, str(tmp_path / "f_000.ply"))
    assert addon.ops_scene.menu_export in bpy.types.TOPBAR_MT_file_export._dyn_ui_initialize()
    assert addon.ops_scene.menu_import in bpy.types.TOPBAR_MT_file_import._dyn_ui_initialize()
    glb = tmp_path / "out" / "s.glb"
    with bpy.context.temp_override(selected_objects=[obj], active_object=obj):
        assert bpy.ops.pla4d.export_splats(filepath=str(glb), format="KHR_GLB") == {"FINISHED"}
    _canonical, arrays, fps, _files = addon.import_foreign.read_frames(glb, sequence=False)
    np.testing.assert_allclose(arrays["positions"], truth["positions"], atol=1e-6)
    assert fps == 24.0  # the scene's rate, which the import set
    # Blender's own glTF importer (which knows no splats) reads the same file as points with one shape key per frame.
    before = set(bpy.data.objects)
    assert bpy.ops.import_scene.gltf(filepath=str(glb)) == {"FINISHED"}
    (points,) = [o for o in bpy.data.objects if o not in before and o.type == "MESH"]
    keys = points.data.shape_keys.key_blocks
    assert len(points.data.vertices) == N and len(keys) == T + 1 and points.data.shape_keys.animation_data.action
    for t in range(T):
        co = np.empty(N * 3, np.float32)
        keys[t + 1].data.foreach_get("co", co)
        np.testing.assert_allclose(co.reshape(N, 3), to_blender(truth["positions"][t]), atol=1e-6)
    try:
        import gsply  # noqa: F401
    except ImportError:
        return
    with bpy.context.temp_override(selected_objects=[obj], active_object=obj):
        result = bpy.ops.pla4d.export_splat_sequence(directory=str(tmp_path / "spz"), format="SPZ")
    assert result == {"FINISHED"}
    paths = sorted((tmp_path / "spz").iterdir())
    assert [p.name for p in paths] == [f"frame_{t:03d}.spz" for t in range(T)]
    _canonical, arrays, _fps, _files = addon.import_foreign.read_frames(paths[0])
    assert np.abs(arrays["positions"] - truth["positions"]).max() <= 0.5 / 4096 + 1e-6
