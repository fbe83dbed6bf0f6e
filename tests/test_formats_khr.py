"""KHR_gaussian_splatting GLB (pla4d.formats.khr_gltf): valid against the vendored glTF 2.0 and extension schemas,
read back by pygltflib (an independent reader) with float32 exactness, morph targets + weights animation, and
our own reader (the add-on's import path) on our files and on files written by hand to the spec."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import jsonschema
import numpy as np
import pygltflib
import pytest
from referencing import Registry, Resource

from pla4d.formats.colour import SH_C0, srgb_to_linear
from pla4d.formats.khr_gltf import EXTENSION, KhrError, khr_glb_bytes, read_khr_gltf, write_khr_glb

SCHEMAS = Path(__file__).parent / "data" / "gltf_schema"
ROT, SCALE, OPACITY, DC = (f"{EXTENSION}:{s}" for s in ("ROTATION", "SCALE", "OPACITY", "SH_DEGREE_0_COEF_0"))


def gaussians(n: int = 40, seed: int = 0, degree: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    rest = (degree + 1) ** 2 - 1
    return {
        "positions": rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        "rotations": rng.normal(size=(n, 4)).astype(np.float32) * 2.0,  # unnormalised, as stored
        "scales": rng.uniform(-6, -2, (n, 3)).astype(np.float32),
        "opacities": rng.uniform(-4, 4, n).astype(np.float32),
        "sh_dc": rng.uniform(-1.5, 1.5, (n, 3)).astype(np.float32),
        "sh_rest": rng.uniform(-0.3, 0.3, (n, rest, 3)).astype(np.float32),
    }


def moving(frames: int = 4) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Canonical Gaussians and (T, N, 3) per-frame positions (frame 0 differs from the canonical ones too)."""
    g = gaussians()
    step = np.array([1.0, -0.5, 0.25], np.float32)
    return g, np.stack([g["positions"] + np.float32(0.05 * (t + 1)) * step for t in range(frames)])


def validator(schema: str) -> jsonschema.Draft202012Validator:
    resources = [(p.name, Resource.from_contents(json.loads(p.read_text()))) for p in SCHEMAS.glob("*.schema.json")]
    registry = Registry().with_resources(resources)
    return jsonschema.Draft202012Validator(json.loads((SCHEMAS / schema).read_text()), registry=registry)


def glb_json(data: bytes) -> dict:
    magic, version, length = struct.unpack_from("<III", data, 0)
    assert (magic, version, length) == (0x46546C67, 2, len(data))
    size, kind = struct.unpack_from("<II", data, 12)
    assert kind == 0x4E4F534A and size % 4 == 0
    return json.loads(data[20 : 20 + size])


def accessor(gltf: pygltflib.GLTF2, index: int) -> np.ndarray:
    acc = gltf.accessors[index]
    view = gltf.bufferViews[acc.bufferView]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[acc.type]
    assert acc.componentType == pygltflib.FLOAT
    blob = gltf.binary_blob()
    start = (view.byteOffset or 0) + (acc.byteOffset or 0)
    return np.frombuffer(blob, "<f4", acc.count * width, start).reshape(acc.count, width)


@pytest.mark.parametrize("frames", [0, 1, 4])
def test_glb_is_valid_gltf_and_khr(frames: int) -> None:
    g, positions = moving(max(frames, 1))
    data = khr_glb_bytes(g, positions if frames else None, fps=12.0)
    doc = glb_json(data)
    validator("glTF.schema.json").validate(doc)
    ext = validator("mesh.primitive.KHR_gaussian_splatting.schema.json")
    prim = doc["meshes"][0]["primitives"][0]
    ext.validate(prim["extensions"][EXTENSION])
    assert prim["mode"] == 0 and doc["extensionsUsed"] == [EXTENSION]
    assert prim["extensions"][EXTENSION]["kernel"] == "ellipse"
    # The schema itself must be able to fail: a missing required property is caught.
    with pytest.raises(jsonschema.ValidationError):
        ext.validate({"kernel": "ellipse"})
    for name, index in prim["attributes"].items():
        acc = doc["accessors"][index]
        assert acc["count"] == 40 and acc["componentType"] == 5126, name
        assert doc["bufferViews"][acc["bufferView"]]["byteOffset"] % 4 == 0


def test_static_round_trip_through_pygltflib(tmp_path: Path) -> None:
    g = gaussians(degree=2)
    path = write_khr_glb(tmp_path / "s.glb", g)
    gltf = pygltflib.GLTF2().load(str(path))
    prim = gltf.meshes[0].primitives[0]

    attrs = {k: v for k, v in vars(prim.attributes).items() if v is not None}
    np.testing.assert_array_equal(accessor(gltf, attrs["POSITION"]), g["positions"])
    q = g["rotations"] / np.linalg.norm(g["rotations"], axis=1, keepdims=True)
    np.testing.assert_allclose(accessor(gltf, attrs[ROT]), np.roll(q, -1, axis=1), atol=1e-6)
    np.testing.assert_allclose(accessor(gltf, attrs[SCALE]), np.exp(g["scales"]), rtol=1e-6)
    np.testing.assert_allclose(accessor(gltf, attrs[OPACITY])[:, 0], 1 / (1 + np.exp(-g["opacities"])), rtol=1e-6)
    np.testing.assert_array_equal(accessor(gltf, attrs[DC]), g["sh_dc"])
    # Degree 2: coefficient k of 3DGS's f_rest is SH_DEGREE_l_COEF_n in the same order (m = -l .. l).
    names = [f"{EXTENSION}:SH_DEGREE_{d}_COEF_{c}" for d in (1, 2) for c in range(2 * d + 1)]
    for k, name in enumerate(names):
        np.testing.assert_array_equal(accessor(gltf, attrs[name]), g["sh_rest"][:, k])
    colour = accessor(gltf, attrs["COLOR_0"])
    np.testing.assert_allclose(colour[:, :3], srgb_to_linear(np.clip(0.5 + SH_C0 * g["sh_dc"], 0, 1)), atol=1e-6)
    assert gltf.animations == [] and prim.targets in (None, [])


def test_morph_targets_play_the_frames(tmp_path: Path) -> None:
    g, frames = moving(5)
    path = write_khr_glb(tmp_path / "m.glb", g, frames, fps=10.0)
    gltf = pygltflib.GLTF2().load(str(path))
    prim = gltf.meshes[0].primitives[0]
    base = accessor(gltf, prim.attributes.POSITION)
    np.testing.assert_array_equal(base, g["positions"])  # the base is the canonical (rest) splats
    assert len(prim.targets) == 5 and gltf.meshes[0].weights == [0.0] * 5
    for t, target in enumerate(prim.targets):
        acc = gltf.accessors[target["POSITION"]]
        offset = accessor(gltf, target["POSITION"])
        np.testing.assert_allclose(base + offset, frames[t], atol=1e-6)
        np.testing.assert_allclose(acc.min, offset.min(axis=0), atol=1e-7)
        np.testing.assert_allclose(acc.max, offset.max(axis=0), atol=1e-7)
    (anim,) = gltf.animations
    sampler = anim.samplers[0]
    assert anim.channels[0].target.path == "weights" and anim.channels[0].target.node == 0
    np.testing.assert_allclose(accessor(gltf, sampler.input)[:, 0], np.arange(5) / 10.0, atol=1e-7)
    np.testing.assert_array_equal(accessor(gltf, sampler.output).reshape(5, 5), np.eye(5))


def test_our_reader_round_trip(tmp_path: Path) -> None:
    g, frames = moving(3)
    read = read_khr_gltf(write_khr_glb(tmp_path / "m.glb", g, frames, fps=8.0))
    assert read.fps == 8.0 and read.frame_count == 3
    np.testing.assert_allclose(read.arrays["positions"], frames, atol=1e-6)
    np.testing.assert_array_equal(read.canonical["positions"], g["positions"])
    q = g["rotations"] / np.linalg.norm(g["rotations"], axis=1, keepdims=True)
    np.testing.assert_allclose(read.canonical["rotations"], q, atol=1e-6)
    np.testing.assert_allclose(read.canonical["scales"], g["scales"], atol=1e-5)
    np.testing.assert_allclose(read.canonical["opacities"], g["opacities"], atol=1e-4)
    np.testing.assert_array_equal(read.canonical["sh_dc"], g["sh_dc"])
    np.testing.assert_array_equal(read.canonical["sh_rest"], g["sh_rest"])


def hand_written_gltf(path: Path, n: int = 6, buffer: str = "octet-stream") -> dict[str, np.ndarray]:
    """A .gltf written to the spec by hand: int16-normalised rotations, uint8-normalised opacities, an interleaved
    POSITION/SCALE view, and lin_rec709_display colours. ``buffer``: the data URI's media type (``octet-stream`` or
    ``gltf-buffer``, both allowed by glTF 2.0), or ``file`` for an external .bin beside it."""
    rng = np.random.default_rng(3)
    pos = rng.uniform(-1, 1, (n, 3)).astype("<f4")
    scale = rng.uniform(0.01, 0.1, (n, 3)).astype("<f4")
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q_i16 = np.round(q * 32767).astype("<i2")
    alpha_u8 = rng.integers(0, 256, n).astype("<u1")
    dc = rng.uniform(-1, 1, (n, 3)).astype("<f4")
    inter = np.concatenate([pos, scale], axis=1).astype("<f4")  # stride 24
    blobs = [inter.tobytes(), q_i16.tobytes(), alpha_u8.tobytes() + b"\0" * (-n % 4), dc.tobytes()]
    offsets = np.cumsum([0] + [len(b) for b in blobs])
    views = [{"buffer": 0, "byteOffset": int(offsets[0]), "byteLength": len(blobs[0]), "byteStride": 24}]
    views += [{"buffer": 0, "byteOffset": int(offsets[i]), "byteLength": len(blobs[i])} for i in (1, 2, 3)]
    uri = f"data:application/{buffer};base64," + base64.b64encode(b"".join(blobs)).decode()
    if buffer == "file":
        uri = path.stem + ".bin"
        (path.parent / uri).write_bytes(b"".join(blobs))
    doc = {
        "asset": {"version": "2.0", "generator": "hand"},
        "extensionsUsed": [EXTENSION],
        "buffers": [{"byteLength": int(offsets[-1]), "uri": uri}],
        "bufferViews": views,
        "accessors": [
            {"bufferView": 0, "componentType": 5126, "count": n, "type": "VEC3", "min": pos.min(0).tolist(),
             "max": pos.max(0).tolist()},
            {"bufferView": 0, "byteOffset": 12, "componentType": 5126, "count": n, "type": "VEC3"},
            {"bufferView": 1, "componentType": 5122, "normalized": True, "count": n, "type": "VEC4"},
            {"bufferView": 2, "componentType": 5121, "normalized": True, "count": n, "type": "SCALAR"},
            {"bufferView": 3, "componentType": 5126, "count": n, "type": "VEC3"},
        ],
        "meshes": [{"primitives": [{"mode": 0, "attributes": {"POSITION": 0, SCALE: 1, ROT: 2, OPACITY: 3, DC: 4},
                                    "extensions": {EXTENSION: {"kernel": "ellipse",
                                                               "colorSpace": "lin_rec709_display"}}}]}],
        "nodes": [{"mesh": 0}],
        "scenes": [{"nodes": [0]}],
    }  # fmt: skip
    path.write_text(json.dumps(doc))
    return {"positions": pos, "scales": scale, "rotations": q, "opacities": alpha_u8 / 255.0, "dc": dc}


@pytest.mark.parametrize("buffer", ["octet-stream", "gltf-buffer", "file"])
def test_reader_decodes_hand_written_normalised_and_interleaved(tmp_path: Path, buffer: str) -> None:
    truth = hand_written_gltf(tmp_path / "hand.gltf", buffer=buffer)
    validator("glTF.schema.json").validate(json.loads((tmp_path / "hand.gltf").read_text()))
    read = read_khr_gltf(tmp_path / "hand.gltf")
    c = read.canonical
    np.testing.assert_array_equal(c["positions"], truth["positions"])
    np.testing.assert_allclose(np.exp(c["scales"]), truth["scales"], rtol=1e-5)
    np.testing.assert_allclose(c["rotations"], np.roll(truth["rotations"], 1, axis=1), atol=0.5 / 32767 + 1e-7)
    np.testing.assert_allclose(1 / (1 + np.exp(-c["opacities"])), truth["opacities"], atol=2e-6)
    linear = np.clip(0.5 + SH_C0 * truth["dc"], 0, 1)  # the file's colours are linear; ours decode to sRGB
    np.testing.assert_allclose(srgb_to_linear(np.clip(0.5 + SH_C0 * c["sh_dc"], 0, 1)), linear, atol=1e-5)
    assert read.frame_count == 1 and read.fps is None


def test_reader_errors(tmp_path: Path) -> None:
    plain = tmp_path / "plain.gltf"
    plain.write_text(json.dumps({"asset": {"version": "2.0"}, "meshes": []}))
    with pytest.raises(KhrError, match="no KHR_gaussian_splatting primitive"):
        read_khr_gltf(plain)
    junk = tmp_path / "junk.glb"
    junk.write_bytes(b"\x00\x01not gltf")
    with pytest.raises(KhrError, match="neither a GLB nor glTF JSON"):
        read_khr_gltf(junk)
    data = bytearray(khr_glb_bytes(gaussians()))
    doc = glb_json(bytes(data))
    doc["nodes"][0]["translation"] = [1.0, 0.0, 0.0]
    moved = tmp_path / "moved.gltf"
    blob = bytes(data[28 + struct.unpack_from("<I", data, 12)[0] :])
    doc["buffers"][0]["uri"] = "data:application/octet-stream;base64," + base64.b64encode(blob).decode()
    moved.write_text(json.dumps(doc))
    with pytest.raises(KhrError, match="carries a transform"):
        read_khr_gltf(moved)
    hand_written_gltf(tmp_path / "lost.gltf", buffer="file")
    (tmp_path / "lost.bin").unlink()
    with pytest.raises(KhrError, match="buffer 0 cannot be read"):
        read_khr_gltf(tmp_path / "lost.gltf")
    cut = tmp_path / "cut.glb"
    cut.write_bytes(data[:40])
    with pytest.raises(KhrError, match="not a readable GLB"):
        read_khr_gltf(cut)
    cut.write_bytes(b"glTF\x02\x00\x00\x00")
    with pytest.raises(KhrError, match="the GLB is truncated"):
        read_khr_gltf(cut)
    with pytest.raises(ValueError, match="non-finite"):
        bad = gaussians()
        bad["positions"][0, 0] = np.nan
        khr_glb_bytes(bad)
