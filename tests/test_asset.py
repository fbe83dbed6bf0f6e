"""The 4D asset folder: exact float32 and bounded float16 round trips, the metadata contract, atomic writes,
clear errors for missing/corrupted/inconsistent files, streaming byte ranges, and speed at a realistic size."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pla4d.asset.format import (
    FORMAT_NAME,
    AnimatedMesh,
    Asset4D,
    AssetError,
    asset_from_models,
    frame_byte_range,
    frame_model,
    read_asset,
    read_meta,
    write_asset,
)
from pla4d.gaussians import GaussianModel, load_ply


def _model(n: int, seed: int = 0, degree: int = 0) -> GaussianModel:
    g = torch.Generator().manual_seed(seed)
    return GaussianModel(
        torch.rand(n, 3, generator=g) * 2 - 1,
        torch.randn(n, 4, generator=g),
        torch.randn(n, 3, generator=g) - 4.0,
        torch.randn(n, generator=g),
        torch.randn(n, 3, generator=g),
        torch.randn(n, (degree + 1) ** 2 - 1, 3, generator=g),
    )


def _mesh(t: int, seed: int = 0, textured: bool = True) -> AnimatedMesh:
    rng = np.random.default_rng(seed)
    v = 40
    return AnimatedMesh(
        faces=rng.integers(0, v, (60, 3)),
        positions=rng.uniform(-1, 1, (t, v, 3)).astype(np.float32),
        vertex_colors=rng.random((v, 3)).astype(np.float32),
        uvs=rng.random((v, 2)).astype(np.float32) if textured else None,
        texture=rng.integers(0, 256, (8, 16, 3), dtype=np.uint8) if textured else None,
    )


def _asset(n: int = 300, t: int = 5, seed: int = 0, mesh: bool = True, degree: int = 0, **kw) -> Asset4D:
    rng = np.random.default_rng(seed)
    return Asset4D(
        _model(n, seed, degree),
        positions=rng.uniform(-1, 1, (t, n, 3)).astype(np.float32),
        rotations=rng.normal(size=(t, n, 4)).astype(np.float32),
        scales=rng.normal(-4, 1, (t, n, 3)).astype(np.float32),
        opacities=rng.normal(0, 3, (t, n)).astype(np.float32),
        fps=12.0,
        meta={"prompt": "a dancing cat", "seed": 7, "settings": {"preset": "draft"}, "timings": {"4d_s": 1.5}},
        mesh=_mesh(t, seed) if mesh else None,
        start_frame=3,
        **kw,
    )


def _same_model(a: GaussianModel, b: GaussianModel) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


# ------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("mmap", [True, False])
def test_float32_round_trip_is_exact(tmp_path: Path, mmap: bool) -> None:
    a = _asset(degree=1)
    out = write_asset(tmp_path / "asset", a)
    b = read_asset(out, mmap=mmap)
    assert _same_model(a.canonical, b.canonical)
    for name in ("positions", "rotations", "scales", "opacities"):
        got = getattr(b, name)
        assert got.dtype == np.float32 and isinstance(got, np.memmap) == mmap
        np.testing.assert_array_equal(got, getattr(a, name))
    assert b.fps == 12.0 and b.start_frame == 3 and b.num_frames == 5 and b.animated == a.animated
    np.testing.assert_array_equal(b.mesh.faces, a.mesh.faces)
    np.testing.assert_array_equal(b.mesh.positions, a.mesh.positions)
    np.testing.assert_array_equal(b.mesh.vertex_colors, a.mesh.vertex_colors)
    np.testing.assert_array_equal(b.mesh.uvs, a.mesh.uvs)
    np.testing.assert_array_equal(b.mesh.texture, a.mesh.texture)
    for t in range(a.num_frames):
        assert _same_model(frame_model(a, t), frame_model(b, t))
    # canonical.ply is a standard 3DGS PLY on its own
    assert _same_model(load_ply(out / "canonical.ply"), a.canonical)


def test_metadata_contract(tmp_path: Path) -> None:
    out = write_asset(tmp_path / "asset", _asset(), dtype="float16")
    meta = json.loads((out / "asset.json").read_text())
    assert meta["format"] == FORMAT_NAME and meta["format_version"].startswith("1.")
    assert meta["frame_count"] == 5 and meta["num_gaussians"] == 300 and meta["fps"] == 12.0
    assert meta["start_frame"] == 3 and meta["up_axis"] == "+Y" and meta["byte_order"] == "little"
    assert meta["prompt"] == "a dancing cat" and meta["seed"] == 7 and meta["settings"] == {"preset": "draft"}
    assert meta["timings"] == {"4d_s": 1.5} and "pla4d" in meta["code_version"] and meta["units"]
    assert meta["times"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert meta["dtype"] == "float16" and meta["animated"] == ["positions", "rotations", "scales", "opacities"]
    entry = meta["arrays"]["rotations"]
    assert entry == {
        "file": "rotations.bin",
        "dtype": "<f2",
        "shape": [5, 300, 4],
        "offset": 0,
        "nbytes": 5 * 300 * 4 * 2,
        "sha256": entry["sha256"],
        "frame_nbytes": 300 * 4 * 2,
    }
    assert meta["mesh"]["faces"]["dtype"] == "<u4" and meta["mesh"]["positions"]["dtype"] == "<f2"
    assert list(meta)[:2] == ["format", "format_version"]
    # a read asset written again keeps the caller's fields, extra ones included
    again = read_asset(out)
    again.meta["source"] = {"video": "clip.mp4"}
    meta2 = json.loads((write_asset(out.parent / "again", again) / "asset.json").read_text())
    assert meta2["prompt"] == "a dancing cat" and meta2["source"] == {"video": "clip.mp4"} and meta2["seed"] == 7
    assert meta2["dtype"] == "float32" and meta2["arrays"]["positions"]["dtype"] == "<f4"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["asset.json", "canonical.ply", "positions.bin", "rotations.bin", "scales.bin", "opacities.bin",
         "mesh_faces.bin", "mesh_positions.bin", "mesh_colors.bin", "mesh_uvs.bin", "mesh_texture.png"]
    )  # fmt: skip


def test_float16_within_its_precision(tmp_path: Path) -> None:
    a = _asset()
    b = read_asset(write_asset(tmp_path / "asset", a, dtype="float16"))
    assert b.positions.dtype == np.float16
    # |x| <= 1 (a unit-sphere object): the float16 spacing is at most 2^-11, so the error is at most 2^-12.
    err = np.abs(b.positions.astype(np.float32) - a.positions).max()
    assert 0 < err <= 2.0**-12
    for name in ("rotations", "scales", "opacities"):
        got, ref = getattr(b, name).astype(np.float32), getattr(a, name)
        np.testing.assert_allclose(got, ref, rtol=2.0**-11, atol=2.0**-25)
    np.testing.assert_allclose(b.mesh.positions.astype(np.float32), a.mesh.positions, atol=2.0**-12, rtol=0)
    model = frame_model(b, 2)
    assert model.means.dtype == torch.float32
    np.testing.assert_allclose(model.means.detach().numpy(), a.positions[2], atol=2.0**-12, rtol=0)


def test_only_positions_animated(tmp_path: Path) -> None:
    a = _asset(mesh=False)
    a = Asset4D(a.canonical, a.positions, fps=30)
    b = read_asset(write_asset(tmp_path / "asset", a))
    assert b.animated == ["positions"] and b.rotations is None and b.mesh is None
    assert sorted(p.name for p in (tmp_path / "asset").iterdir()) == ["asset.json", "canonical.ply", "positions.bin"]
    m = frame_model(b, 4)
    assert torch.equal(m.quats, a.canonical.quats) and torch.equal(m.log_scales, a.canonical.log_scales)
    assert torch.equal(m.means, torch.from_numpy(a.positions[4]))
    with pytest.raises(IndexError, match="out of range"):
        frame_model(b, 5)


def test_asset_from_models_keeps_only_changed_attributes() -> None:
    canon = _model(50)
    frames = []
    for t in range(3):
        m = canon.clone()
        with torch.no_grad():
            m.means += 0.1 * t
            m.opacity_logits -= t
        frames.append(m)
    a = asset_from_models(canon, frames, fps=8, meta={"times": [0.0, 0.5, 1.0]})
    assert a.animated == ["positions", "opacities"]
    assert torch.allclose(frame_model(a, 2).means, canon.means + 0.2)
    assert torch.equal(frame_model(a, 1).quats, canon.quats)


def test_shapes_are_checked() -> None:
    canon = _model(10)
    with pytest.raises(ValueError, match="positions must be"):
        Asset4D(canon, np.zeros((2, 11, 3), np.float32))
    with pytest.raises(ValueError, match="frames"):
        Asset4D(canon, np.zeros((2, 10, 3), np.float32), opacities=np.zeros((3, 10), np.float32))
    with pytest.raises(ValueError, match="fps"):
        Asset4D(canon, np.zeros((2, 10, 3), np.float32), fps=0)
    with pytest.raises(ValueError, match="animated mesh has 4 frames"):
        Asset4D(canon, np.zeros((2, 10, 3), np.float32), mesh=_mesh(4))
    with pytest.raises(ValueError, match="outside"):
        AnimatedMesh(np.array([[0, 1, 5]]), np.zeros((1, 5, 3)))


# ---------------------------------------------------------------------------------------------- writing


def test_write_refuses_bad_values_and_keeps_the_previous_asset(tmp_path: Path) -> None:
    good = _asset(mesh=False)
    out = write_asset(tmp_path / "asset", good)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    big = _asset(mesh=False)
    big.scales[0, 0, 0] = 1e6
    with pytest.raises(ValueError, match="overflows float16"):
        write_asset(out, big, dtype="float16")
    nan = _asset(mesh=False)
    nan.positions[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        write_asset(out, nan)
    with pytest.raises(ValueError, match="JSON"):
        write_asset(out, Asset4D(good.canonical, good.positions, meta={"settings": object()}))
    with pytest.raises(ValueError, match="dtype"):
        write_asset(out, good, dtype="float64")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["asset"]  # no temporary folders left behind


def test_write_replaces_an_asset_but_never_another_folder(tmp_path: Path) -> None:
    out = write_asset(tmp_path / "asset", _asset(t=5))
    write_asset(out, _asset(t=2, mesh=False, seed=1))
    b = read_asset(out)
    assert b.num_frames == 2 and b.mesh is None and not (out / "mesh_faces.bin").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["asset"]
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"not an asset")
    with pytest.raises(ValueError, match="not a pla4d 4D asset"):
        write_asset(other, _asset(mesh=False))
    assert (other / "cat.jpg").read_bytes() == b"not an asset"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        write_asset(tmp_path / "file", _asset(mesh=False))


# ------------------------------------------------------------------------------------------------ errors


@pytest.fixture
def written(tmp_path: Path) -> Path:
    return write_asset(tmp_path / "asset", _asset())


def _edit_meta(folder: Path, edit) -> None:
    meta = json.loads((folder / "asset.json").read_text())
    edit(meta)
    (folder / "asset.json").write_text(json.dumps(meta))


def test_missing_folder_and_metadata(tmp_path: Path, written: Path) -> None:
    with pytest.raises(AssetError, match="no 4D asset folder"):
        read_asset(tmp_path / "nowhere")
    (written / "asset.json").unlink()
    with pytest.raises(AssetError, match=r"no asset\.json.*did not finish"):
        read_asset(written)
    (written / "asset.json").write_text("{ not json")
    with pytest.raises(AssetError, match="not valid JSON"):
        read_asset(written)
    (written / "asset.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(AssetError, match="not a pla4d-asset4d file"):
        read_asset(written)
    assert issubclass(AssetError, ValueError)


def test_newer_major_version_is_refused(written: Path) -> None:
    _edit_meta(written, lambda m: m.update(format_version="2.0"))
    with pytest.raises(AssetError, match="format version '2.0'.*update pla4d"):
        read_asset(written)
    _edit_meta(written, lambda m: m.update(format_version="1.7", new_optional_key=1))
    assert read_asset(written).num_frames == 5  # a newer minor version only adds optional keys


@pytest.mark.parametrize(
    "name", ["positions.bin", "opacities.bin", "canonical.ply", "mesh_uvs.bin", "mesh_texture.png"]
)
def test_missing_file(written: Path, name: str) -> None:
    (written / name).unlink()
    with pytest.raises(AssetError, match=f"{name} is missing"):
        read_asset(written)


@pytest.mark.parametrize("name", ["rotations.bin", "canonical.ply", "mesh_positions.bin"])
def test_corrupted_file(written: Path, name: str) -> None:
    raw = bytearray((written / name).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (written / name).write_bytes(bytes(raw))
    with pytest.raises(AssetError, match=f"{name} is corrupted"):
        read_asset(written)
    if name.endswith(".bin"):
        assert read_asset(written, verify=False).num_frames == 5  # the sha256 check can be skipped


def test_truncated_and_padded_files(written: Path) -> None:
    raw = (written / "scales.bin").read_bytes()
    (written / "scales.bin").write_bytes(raw[:-6])
    with pytest.raises(AssetError, match="corrupted"):
        read_asset(written)
    with pytest.raises(AssetError, match=r"scales\.bin has \d+ bytes, expected \d+ \(truncated\)"):
        read_asset(written, verify=False)
    (written / "scales.bin").write_bytes(raw + b"\0" * 4)
    with pytest.raises(AssetError, match="trailing data"):
        read_asset(written, verify=False)


def test_inconsistent_descriptors(written: Path) -> None:
    _edit_meta(written, lambda m: m["arrays"]["positions"].update(shape=[5, 300, 4]))
    with pytest.raises(AssetError, match=r"positions has shape \[5, 300, 4\], expected \[5, 300, 3\]"):
        read_asset(written)
    _edit_meta(written, lambda m: m["arrays"]["positions"].update(shape=[5, 300, 3], dtype="<f8"))
    with pytest.raises(AssetError, match="unsupported dtype"):
        read_asset(written)
    _edit_meta(written, lambda m: m["arrays"]["positions"].update(dtype="<f4", file="../escape.bin"))
    with pytest.raises(AssetError, match="plain name"):
        read_asset(written)
    _edit_meta(written, lambda m: m["arrays"]["positions"].update(file="positions.bin"))
    _edit_meta(written, lambda m: m.update(num_gaussians=299))
    with pytest.raises(AssetError, match="canonical.ply holds 300 Gaussians, asset.json says 299"):
        read_asset(written)
    _edit_meta(written, lambda m: m.update(num_gaussians=300, arrays={"velocities": {}}))
    with pytest.raises(AssetError, match="no positions"):
        read_asset(written)
    _edit_meta(written, lambda m: m["arrays"].update(positions={}))
    with pytest.raises(AssetError, match="unknown arrays velocities"):
        read_meta(written)


# --------------------------------------------------------------------------------------------- streaming


def test_frames_map_with_frombuffer(written: Path) -> None:
    meta = read_meta(written)
    asset = read_asset(written)
    # what the add-on does with one frame's chunk: frombuffer + reshape, no per-point loop
    entry = meta["arrays"]["positions"]
    offset, nbytes = frame_byte_range(entry, 3)
    assert nbytes == entry["frame_nbytes"]
    chunk = (written / "positions.bin").read_bytes()[offset : offset + nbytes]
    frame = np.frombuffer(chunk, dtype=entry["dtype"]).reshape(entry["shape"][1:])
    np.testing.assert_array_equal(frame, asset.positions[3])
    assert frame_byte_range(entry, 1, 4) == (entry["frame_nbytes"], 3 * entry["frame_nbytes"])
    with pytest.raises(IndexError):
        frame_byte_range(entry, 4, 6)


# ------------------------------------------------------------------------------------------------- scale


def test_large_asset_writes_and_reads_quickly(tmp_path: Path) -> None:
    n, t = 50_000, 32
    rng = np.random.default_rng(0)
    asset = Asset4D(
        _model(n),
        positions=rng.uniform(-1, 1, (t, n, 3)).astype(np.float32),
        rotations=rng.normal(size=(t, n, 4)).astype(np.float32),
        scales=rng.normal(-4, 1, (t, n, 3)).astype(np.float32),
        opacities=rng.normal(size=(t, n)).astype(np.float32),
        fps=24,
    )
    report = []
    for dtype in ("float32", "float16"):
        start = time.perf_counter()
        out = write_asset(tmp_path / dtype, asset, dtype=dtype)
        wrote = time.perf_counter()
        back = read_asset(out)  # sha256 of every file + memory maps
        frame = frame_model(back, t - 1)
        read = time.perf_counter()
        size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
        report.append(f"{dtype}: {size:.1f} MB, write {wrote - start:.2f} s, read+verify {read - wrote:.2f} s")
        assert frame.num_gaussians == n
        assert read - start < 15.0
    print("; ".join(report))
