"""Splat exports of a 4D asset (pla4d.asset.export): KHR_gaussian_splatting GLB with morph targets, the per-frame
GLB / SPZ / PLY sequences, canonical SPZ; read back by independent readers (pygltflib, gsply, plyfile through
our PLY reader); `pla4d export` and its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pygltflib
import pytest

from pla4d.asset.export import (
    export_format,
    export_khr_glb,
    export_khr_glb_sequence,
    export_splat_formats,
    export_spz,
    export_spz_sequence,
)
from pla4d.asset.format import Asset4D, write_asset
from pla4d.cli import main
from pla4d.formats.exports import EXPORT_FORMATS, parse_formats
from pla4d.formats.khr_gltf import EXTENSION, read_khr_gltf
from pla4d.formats.ply import read_gaussian_ply
from pla4d.gaussians.ply import model_arrays, model_from_arrays

gsply = pytest.importorskip("gsply")
N, T = 64, 4


@pytest.fixture(scope="module")
def asset() -> Asset4D:
    rng = np.random.default_rng(1)
    canonical = {
        "positions": rng.uniform(-0.8, 0.8, (N, 3)).astype(np.float32),
        "rotations": rng.normal(size=(N, 4)).astype(np.float32),
        "scales": rng.uniform(-6, -3, (N, 3)).astype(np.float32),
        "opacities": rng.uniform(-3, 3, N).astype(np.float32),
        "sh_dc": rng.uniform(-1.2, 1.2, (N, 3)).astype(np.float32),
    }
    step = np.array([0.02, 0.01, -0.015], np.float32)
    positions = np.stack([canonical["positions"] + t * step for t in range(T)]).astype(np.float32)
    angle = np.linspace(0, 0.3, T, dtype=np.float32)
    spin = np.stack([np.cos(angle), np.sin(angle), 0 * angle, 0 * angle], axis=1)  # about x, per frame
    rotations = np.stack([_quat_mul(spin[t], canonical["rotations"]) for t in range(T)]).astype(np.float32)
    return Asset4D(model_from_arrays(canonical), positions, rotations=rotations, fps=12.0, meta={"prompt": "blob"})


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b.T
    return np.stack([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2], axis=1)  # fmt: skip


def _unit(q: np.ndarray) -> np.ndarray:
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return q * np.sign(q[..., :1] + 1e-12)


def test_khr_glb_morphs_play_every_frame(tmp_path: Path, asset: Asset4D) -> None:
    path = export_khr_glb(asset, tmp_path / "s.glb")
    gltf = pygltflib.GLTF2().load(str(path))
    prim = gltf.meshes[0].primitives[0]
    assert EXTENSION in prim.extensions and len(prim.targets) == T
    blob = gltf.binary_blob()

    def read(index: int, width: int) -> np.ndarray:
        acc = gltf.accessors[index]
        offset = gltf.bufferViews[acc.bufferView].byteOffset
        return np.frombuffer(blob, "<f4", acc.count * width, offset).reshape(acc.count, width)

    base = read(prim.attributes.POSITION, 3)
    np.testing.assert_array_equal(base, model_arrays(asset.canonical)["positions"])
    for t, target in enumerate(prim.targets):
        np.testing.assert_allclose(base + read(target["POSITION"], 3), asset.positions[t], atol=1e-6)
    assert gltf.extras["pla4d"]["fps"] == 12.0 and gltf.extras["pla4d"]["prompt"] == "blob"


def test_khr_glb_sequence_has_every_attribute_of_every_frame(tmp_path: Path, asset: Asset4D) -> None:
    paths = export_khr_glb_sequence(asset, tmp_path / "seq", frames=[0, 3])
    assert [p.name for p in paths] == ["frame_000.glb", "frame_003.glb"]
    read = read_khr_gltf(paths[1])
    np.testing.assert_allclose(read.canonical["positions"], asset.positions[3], atol=0)
    np.testing.assert_allclose(_unit(read.canonical["rotations"]), _unit(asset.rotations[3]), atol=1e-6)
    can = model_arrays(asset.canonical)
    np.testing.assert_allclose(read.canonical["scales"], can["scales"], atol=1e-5)
    np.testing.assert_allclose(read.canonical["opacities"], can["opacities"], atol=1e-4)


def test_spz_and_spz_sequence_through_gsply(tmp_path: Path, asset: Asset4D) -> None:
    can = model_arrays(asset.canonical)
    data = gsply.read_spz(export_spz(asset, tmp_path / "c.spz"))
    assert np.abs(data.means - can["positions"]).max() <= 0.5 / 4096 + 1e-7
    assert np.abs(data.sh0 - can["sh_dc"]).max() <= 0.5 / (0.15 * 255) + 1e-6
    paths = export_spz_sequence(asset, tmp_path / "spz")
    assert [p.name for p in paths] == [f"frame_{t:03d}.spz" for t in range(T)]
    for t in (0, T - 1):
        frame = gsply.read_spz(paths[t])
        assert np.abs(frame.means - asset.positions[t]).max() <= 0.5 / 4096 + 1e-7
        dot = np.abs(np.sum(frame.quats * _unit(asset.rotations[t]), axis=1))
        assert np.degrees(2 * np.arccos(np.clip(dot, 0, 1))).max() <= 0.25


def test_export_format_and_stage_helper(tmp_path: Path, asset: Asset4D) -> None:
    paths = export_format(asset, "ply-sequence", tmp_path / "ply")
    assert len(paths) == T
    np.testing.assert_array_equal(read_gaussian_ply(paths[2])["positions"], asset.positions[2])
    written = export_splat_formats(asset, tmp_path / "exports", ["spz", "khr-glb", "mesh-glb"])
    assert sorted(p.name for p in written) == ["canonical.spz", "splats_khr.glb"]
    with pytest.raises(ValueError, match="unknown export format"):
        export_format(asset, "fbx", tmp_path / "x")
    assert parse_formats("spz, khr-glb,spz") == ["spz", "khr-glb"] and parse_formats("none") == []
    with pytest.raises(ValueError, match="unknown export format.*bogus"):
        parse_formats("spz,bogus")


def test_cli_export(tmp_path: Path, asset: Asset4D, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    write_asset(run / "asset", asset)
    assert main(["export", str(run), "--format", "khr-glb"]) == 0
    assert (run / "exports" / EXPORT_FORMATS["khr-glb"][1]).is_file()
    assert main(["export", str(run / "asset"), "--format", "spz-sequence", "--frames", "1,2"]) == 0
    assert sorted(p.name for p in (run / "exports" / "spz_sequence").iterdir()) == ["frame_001.spz", "frame_002.spz"]
    assert main(["export", str(run), "--format", "ply-sequence", "--out", str(tmp_path / "p"), "--frames", "0"]) == 0
    assert [p.name for p in (tmp_path / "p").iterdir()] == ["frame_000.ply"]
    capsys.readouterr()
    for argv, message in [
        (["export", str(tmp_path / "nothing"), "--format", "spz"], "holds no 4D asset"),
        (["export", str(run), "--format", "spz", "--frames", "x"], "invalid literal"),
        (["export", str(run), "--format", "ply-sequence", "--frames", "9"], "out of range"),
        (["export", str(run), "--format", "obj"], "invalid choice"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
