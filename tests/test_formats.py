"""The numpy-only format package ``pla4d.formats`` and its copy in the Blender add-on (``pla4d_formats``).

The add-on ships the package byte for byte; the add-on's reader (run here outside Blender: it needs numpy and
plyfile only) and the engine's reader return the same arrays; files keep the bytes the previous writers produced;
PLY files agree with plyfile read directly; the axis and colour conversions invert each other."""

from __future__ import annotations

import ast
import hashlib
import importlib
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import plyfile
import pytest
import torch
from test_asset import _model  # random Gaussians of a given SH degree

from pla4d.asset.export import export_ply_sequence
from pla4d.asset.format import AnimatedMesh, Asset4D, frame_model, read_asset, write_asset
from pla4d.formats import axes, colour
from pla4d.formats.ply import read_gaussian_ply, write_gaussian_ply
from pla4d.gaussians import GaussianModel

REPO = Path(__file__).resolve().parents[1]
FORMATS = REPO / "pla4d" / "formats"


@pytest.fixture(scope="module")
def addon_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, str(REPO / "build_addon.py"), "--no-wheels", "--out", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def addon_io(addon_zip: Path, tmp_path_factory: pytest.TempPathFactory):
    """The add-on's ``asset_io`` from the built zip, imported outside Blender: the zip's contents as a package
    whose ``__init__`` (which needs bpy) is not run, so ``asset_io`` imports its vendored ``pla4d_formats``."""
    root = tmp_path_factory.mktemp("addon")
    with zipfile.ZipFile(addon_zip) as archive:
        archive.extractall(root)
    name = "pla4d_addon_under_test"
    package = types.ModuleType(name)
    package.__path__ = [str(root)]
    sys.modules[name] = package
    try:
        module = importlib.import_module(f"{name}.asset_io")
        assert module.read_gaussian_ply.__module__ == f"{name}.pla4d_formats.ply"  # the copy, not pla4d's
        yield module
    finally:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]


# ------------------------------------------------------------------------------------------- the vendored copy


def test_addon_ships_the_package_byte_for_byte(addon_zip: Path) -> None:
    with zipfile.ZipFile(addon_zip) as archive:
        vendored = {n.removeprefix("pla4d_formats/"): archive.read(n) for n in archive.namelist()
                    if n.startswith("pla4d_formats/")}  # fmt: skip
        client = {n: archive.read(n) for n in ("pla4d_client/client.py", "pla4d_client/protocol.py")}
    sources = {p.name: p.read_bytes() for p in FORMATS.glob("*.py")}
    assert set(vendored) == set(sources) and {"asset.py", "ply.py", "colour.py", "axes.py"} <= set(sources)
    for name, data in sources.items():
        assert vendored[name] == data, name
    assert client["pla4d_client/client.py"] == (REPO / "backend" / "client.py").read_bytes()
    assert client["pla4d_client/protocol.py"] == (REPO / "backend" / "protocol.py").read_bytes()


def test_package_imports_only_stdlib_numpy_and_plyfile() -> None:
    allowed = set(sys.stdlib_module_names) | {"numpy", "plyfile"}
    for path in FORMATS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = [(node.module or "").split(".")[0]]
            else:
                continue
            # spz.py alone reaches for gsply (SPZ's maintained codec), inside its functions: the rest works without it.
            # khr_gltf.py alone uses pygltflib (the glTF container; the add-on bundles its wheels).
            extra = {"spz.py": {"gsply"}, "khr_gltf.py": {"pygltflib"}}.get(path.name, set())
            assert set(roots) <= allowed | extra, f"{path.name} imports {roots}"
    # And importing it pulls in neither torch nor the rest of pla4d (what the add-on relies on).
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import formats.asset, formats.axes, formats.colour, formats.ply, "
        "formats.khr_gltf; "
        "assert not {'torch', 'pla4d', 'PIL', 'trimesh'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code, str(FORMATS.parent)], check=True)


# ----------------------------------------------------------------------------------- one reader, two wrappers


def _asset(n: int = 200, t: int = 4) -> Asset4D:
    rng = np.random.default_rng(0)
    model = _model(n, degree=1)
    faces = np.array([[0, 1, 2], [2, 3, 0]], np.uint32)
    verts = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32)
    mesh = AnimatedMesh(
        faces,
        verts[None] + rng.normal(0, 0.1, (t, 4, 3)).astype(np.float32),
        vertex_colors=rng.uniform(size=(4, 3)),
        uvs=verts[:, :2],
        texture=rng.integers(0, 256, (4, 4, 3), dtype=np.uint8),
    )
    return Asset4D(
        model,
        model.means.detach().numpy()[None] + rng.normal(0, 0.05, (t, n, 3)).astype(np.float32),
        rotations=rng.normal(size=(t, n, 4)).astype(np.float32),
        scales=rng.normal(-4, 0.5, (t, n, 3)).astype(np.float32),
        opacities=rng.normal(size=(t, n)).astype(np.float32),
        fps=12.0,
        meta={"prompt": "a blob", "seed": 1},
        mesh=mesh,
        start_frame=5,
    )


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_addon_and_engine_readers_return_identical_arrays(tmp_path: Path, addon_io, dtype: str) -> None:
    path = write_asset(tmp_path / "asset", _asset(), dtype=dtype)
    engine = read_asset(path)
    addon = addon_io.open_asset(path)
    assert addon.meta == engine.meta
    assert (addon.frame_count, addon.fps, addon.start_frame) == (engine.num_frames, engine.fps, engine.start_frame)
    assert addon.animated == engine.animated == ["positions", "rotations", "scales", "opacities"]
    params = {"positions": "means", "rotations": "quats", "scales": "log_scales", "opacities": "opacity_logits",
              "sh_dc": "sh0", "sh_rest": "sh_rest"}  # fmt: skip
    for key, param in params.items():
        want = getattr(engine.canonical, param).detach().numpy()
        assert addon.canonical[key].dtype == want.dtype and np.array_equal(addon.canonical[key], want), key
    for name in engine.animated:
        mine, theirs = addon.arrays[name], getattr(engine, name)
        assert mine.dtype == theirs.dtype == np.dtype(dtype) and np.array_equal(mine, theirs), name
        np.testing.assert_array_equal(addon.frame(name, 2), theirs[2])
    am, em = addon.mesh, engine.mesh
    assert np.array_equal(am.faces, em.faces) and np.array_equal(am.positions, em.positions)
    assert np.array_equal(am.vertex_colors, em.vertex_colors) and np.array_equal(am.uvs, em.uvs)
    from PIL import Image

    with Image.open(am.texture) as im:  # the add-on hands Blender the PNG file; the engine decodes it
        assert np.array_equal(np.asarray(im.convert("RGB")), em.texture)


def test_addon_reader_errors_are_asset_read_errors(tmp_path: Path, addon_io) -> None:
    path = write_asset(tmp_path / "asset", _asset(n=20, t=2))
    raw = bytearray((path / "positions.bin").read_bytes())
    raw[10] ^= 0xFF
    (path / "positions.bin").write_bytes(bytes(raw))
    with pytest.raises(addon_io.AssetReadError, match="corrupted"):
        addon_io.open_asset(path)
    (tmp_path / "notes").mkdir()
    with pytest.raises(addon_io.AssetReadError, match="not a pla4d 4D asset"):
        addon_io.open_asset(tmp_path / "notes")
    (tmp_path / "bad.ply").write_bytes(b"hello")
    with pytest.raises(addon_io.AssetReadError, match="not a PLY file"):
        addon_io.open_asset(tmp_path / "bad.ply")


def test_addon_and_engine_write_the_same_ply_sequence(tmp_path: Path, addon_io) -> None:
    asset = _asset(n=50, t=3)
    engine = export_ply_sequence(asset, tmp_path / "engine")
    opened = addon_io.open_asset(write_asset(tmp_path / "asset", asset))

    def frame(t: int) -> dict[str, np.ndarray]:
        return {**opened.canonical, **{name: opened.frame(name, t) for name in opened.animated}}

    addon = addon_io.write_ply_sequence(tmp_path / "addon", opened.frame_count, frame)
    assert [p.name for p in addon] == [p.name for p in engine] == ["frame_000.ply", "frame_001.ply", "frame_002.ply"]
    for mine, theirs in zip(addon, engine, strict=True):
        assert mine.read_bytes() == theirs.read_bytes()


# ------------------------------------------------------------------------------------------------ the bytes


# sha256 of the files the writer produced before the format code moved into pla4d.formats (same inputs as
# _golden_asset): the format on disk is unchanged, so assets written before still read the same.
GOLDEN = {
    "float32": {
        "canonical.ply": "bcd86c4d165de9ec72c4f6f4bbcf12a3cc4ee1cc419b2f5940649d8945585cc0",
        "mesh_colors.bin": "56061a48bda24c817f361fb0dd596c8f6eb41f87608072e490b6283f0c30a962",
        "mesh_faces.bin": "753d5e1ada77b20b9959a1030b8e0ba5cf925f2881d3635c3f791e5a0ae0eeb1",
        "mesh_positions.bin": "54ffb4ecfb53c070ba91070060ba93b7ca1884b80af4fdc7c7f27195ef6f84d9",
        "mesh_uvs.bin": "eeb394f1726eac2bb9656979b5b3190f0fc2bfc9a3df8e179d13da2ebc8c513a",
        "positions.bin": "8995787a71ecebf301b89fead2953665da389c3e1139e13c1e30c2b99c48b8ff",
        "rotations.bin": "cae2e1d44044ab00c5690dcc9254142598ee93d6e7ffea31625b1dfa265e60cb",
    },
    "float16": {
        "canonical.ply": "bcd86c4d165de9ec72c4f6f4bbcf12a3cc4ee1cc419b2f5940649d8945585cc0",
        "mesh_colors.bin": "56061a48bda24c817f361fb0dd596c8f6eb41f87608072e490b6283f0c30a962",
        "mesh_faces.bin": "753d5e1ada77b20b9959a1030b8e0ba5cf925f2881d3635c3f791e5a0ae0eeb1",
        "mesh_positions.bin": "48b3c2bd5c9e0b0bf5b0d894c0b6d38d4b5f5cb46746539a02285fb3a9c29c50",
        "mesh_uvs.bin": "eeb394f1726eac2bb9656979b5b3190f0fc2bfc9a3df8e179d13da2ebc8c513a",
        "positions.bin": "de9d72f5967b8ec5d3bc89b934aee032288f1b627c7c291e231ebbc0408407ba",
        "rotations.bin": "ce622617bf3443d1293214c1b7b131d51886a266a4b08a4c92acdd6cc13fd249",
    },
}


def _golden_asset() -> Asset4D:
    n, t = 6, 3
    a = np.arange(n, dtype=np.float32)
    model = GaussianModel(
        torch.from_numpy(np.stack([a * 0.1, -a * 0.2, a * 0.05 + 0.3], 1)),
        torch.from_numpy(np.stack([1 + a * 0, a * 0.1, -a * 0.1, a * 0.01], 1)),
        torch.from_numpy(np.stack([a * 0 - 3, a * 0.1 - 4, -a * 0.2 - 2], 1)),
        torch.from_numpy(a * 0.3 - 1),
        torch.from_numpy(np.stack([a * 0.1, a * 0.2, -a * 0.3], 1)),
        torch.from_numpy((np.arange(n * 3 * 3, dtype=np.float32).reshape(n, 3, 3) - 20) / 50),
    )
    steps = np.arange(t, dtype=np.float32)[:, None, None]
    positions = model.means.detach().numpy()[None] + steps * np.float32(0.125)
    rotations = model.quats.detach().numpy()[None] + steps * np.float32(0.25)
    faces = np.array([[0, 1, 2], [2, 3, 0]], np.uint32)
    verts = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32)
    mesh = AnimatedMesh(faces, verts[None] + steps * np.float32(0.5), vertex_colors=verts * 0.5 + 0.25,
                        uvs=verts[:, :2])  # fmt: skip
    return Asset4D(model, positions, rotations=rotations, fps=12.0, mesh=mesh, meta={"prompt": "golden", "seed": 3})


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_files_keep_the_bytes_of_the_previous_writer(tmp_path: Path, dtype: str) -> None:
    path = write_asset(tmp_path / dtype, _golden_asset(), dtype=dtype)
    got = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in path.iterdir() if p.name != "asset.json"}
    assert got == GOLDEN[dtype]


def test_ply_agrees_with_plyfile(tmp_path: Path) -> None:
    model = _model(30, degree=2)
    arrays = {"positions": model.means, "rotations": model.quats, "scales": model.log_scales,
              "opacities": model.opacity_logits, "sh_dc": model.sh0, "sh_rest": model.sh_rest}  # fmt: skip
    arrays = {k: v.detach().numpy() for k, v in arrays.items()}
    path = write_gaussian_ply(tmp_path / "g.ply", **arrays)
    vertex = plyfile.PlyData.read(str(path))["vertex"]
    assert all(p.val_dtype == "f4" for p in vertex.properties)
    np.testing.assert_array_equal(np.stack([vertex[c] for c in "xyz"], 1), arrays["positions"])
    np.testing.assert_array_equal(np.stack([vertex[f"rot_{i}"] for i in range(4)], 1), arrays["rotations"])
    np.testing.assert_array_equal(np.stack([vertex[f"scale_{i}"] for i in range(3)], 1), arrays["scales"])
    np.testing.assert_array_equal(vertex["opacity"], arrays["opacities"])
    np.testing.assert_array_equal(np.stack([vertex[f"f_dc_{i}"] for i in range(3)], 1), arrays["sh_dc"])
    for c in range(3):  # channel-major f_rest: f_rest_{c * K + k} = sh_rest[:, k, c], K = 8 at degree 2
        for k in range(8):
            np.testing.assert_array_equal(vertex[f"f_rest_{c * 8 + k}"], arrays["sh_rest"][:, k, c])
    back = read_gaussian_ply(path)
    assert all(np.array_equal(back[k], arrays[k]) for k in arrays)
    # The engine's load_ply is the same reader.
    engine = frame_model(Asset4D(model, arrays["positions"][None]), 0)
    assert torch.equal(engine.sh_rest, torch.from_numpy(back["sh_rest"]))


# ----------------------------------------------------------------------------------------- axes and colour


def test_axis_change_round_trips_and_matches_the_convention() -> None:
    rng = np.random.default_rng(0)
    p = rng.normal(size=(100, 3)).astype(np.float32)
    np.testing.assert_array_equal(axes.positions_to_blender(p), np.stack([p[:, 0], -p[:, 2], p[:, 1]], 1))
    np.testing.assert_array_equal(axes.positions_from_blender(axes.positions_to_blender(p)), p)
    q = rng.normal(size=(100, 4)).astype(np.float32)
    unit = q / np.linalg.norm(q, axis=1, keepdims=True)
    np.testing.assert_allclose(axes.rotations_from_blender(axes.rotations_to_blender(q)), unit, atol=1e-6)
    assert np.array_equal(axes.rotations_to_blender(np.zeros((1, 4), np.float32)), [[1.0, 0.0, 0.0, 0.0]])
    log_s = rng.normal(-4, 1, (100, 3)).astype(np.float32)
    np.testing.assert_allclose(axes.scales_from_blender(axes.scales_to_blender(log_s)), log_s, atol=1e-5)
    logits = rng.normal(size=100).astype(np.float32)
    np.testing.assert_allclose(axes.opacities_from_blender(axes.opacities_to_blender(logits)), logits, atol=1e-4)
    assert np.isfinite(axes.opacities_from_blender(np.array([0.0, 1.0]))).all()
    assert np.isfinite(axes.scales_from_blender(np.array([0.0]))).all()


def test_sh_colour_round_trip_and_engine_agreement() -> None:
    from pla4d import colour as engine_colour

    rgb = np.random.default_rng(0).uniform(size=(500, 3)).astype(np.float32)
    sh = colour.linear_rgb_to_sh_dc(rgb)
    assert sh.dtype == np.float32
    np.testing.assert_allclose(colour.sh_dc_to_linear_rgb(sh), rgb, atol=1e-5)
    srgb = 0.5 + colour.SH_C0 * sh
    assert np.array_equal(engine_colour.srgb_to_linear(srgb), colour.srgb_to_linear(srgb))
    tensor = engine_colour.srgb_to_linear(torch.from_numpy(srgb)).numpy()  # the torch formula, same curve
    np.testing.assert_allclose(tensor, colour.srgb_to_linear(srgb), rtol=1e-6, atol=1e-7)
