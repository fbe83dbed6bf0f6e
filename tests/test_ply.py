"""Standard 3DGS PLY: exact round trip, the header viewers expect, plyfile agreement, atomic writes, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pla4d.gaussians import GaussianModel, load_ply, save_ply


def _model(n: int, degree: int, seed: int = 0) -> GaussianModel:
    g = torch.Generator().manual_seed(seed)
    return GaussianModel(
        torch.randn(n, 3, generator=g),
        torch.randn(n, 4, generator=g),
        torch.randn(n, 3, generator=g) - 4.0,
        torch.randn(n, generator=g),
        torch.randn(n, 3, generator=g),
        torch.randn(n, (degree + 1) ** 2 - 1, 3, generator=g),
    )


def _same(a: GaussianModel, b: GaussianModel) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_round_trip_exact(tmp_path: Path, degree: int) -> None:
    m = _model(257, degree)
    out = save_ply(m, tmp_path / "g.ply")
    back = load_ply(out)
    assert back.sh_degree == degree and back.num_gaussians == 257
    assert _same(m, back)
    assert all(p.dtype == torch.float32 and p.requires_grad for p in back.parameters())


def test_header_and_layout(tmp_path: Path) -> None:
    m = _model(5, 1)
    path = save_ply(m, tmp_path / "g.ply")
    raw = path.read_bytes()
    header = raw[: raw.index(b"end_header\n") + len(b"end_header\n")]
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(9)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    expected = ["ply", "format binary_little_endian 1.0", "element vertex 5"]
    expected += [f"property float {n}" for n in names] + ["end_header"]
    assert header == ("\n".join(expected) + "\n").encode("ascii")  # byte for byte, LF line ends
    assert len(raw) == len(header) + 5 * len(names) * 4  # float32, nothing after the data
    rows = np.frombuffer(raw[len(header) :], "<f4").reshape(5, len(names))
    col = {n: rows[:, i] for i, n in enumerate(names)}
    assert np.array_equal(col["opacity"], m.opacity_logits.detach().numpy())  # logit
    assert np.array_equal(col["scale_2"], m.log_scales.detach().numpy()[:, 2])  # log-scale
    assert np.array_equal(col["rot_0"], m.quats.detach().numpy()[:, 0])  # w first
    assert not col["nx"].any()
    # f_rest is channel-major, as 3DGS writes features_rest.transpose(1, 2): red's 3 coefficients, then green's...
    rest = m.sh_rest.detach().numpy()
    for c in range(3):
        for k in range(3):
            assert np.array_equal(col[f"f_rest_{c * 3 + k}"], rest[:, k, c])


def test_agrees_with_plyfile(tmp_path: Path) -> None:
    plyfile = pytest.importorskip("plyfile")
    m = _model(40, 2)
    ply = plyfile.PlyData.read(str(save_ply(m, tmp_path / "g.ply")))
    v = ply["vertex"]
    assert len(v) == 40 and [p.name for p in v.properties][:3] == ["x", "y", "z"]
    assert np.array_equal(v["f_dc_1"], m.sh0.detach().numpy()[:, 1])
    assert np.array_equal(v["f_rest_9"], m.sh_rest.detach().numpy()[:, 1, 1])  # green (f_rest_8..15), coefficient 1
    # And files plyfile writes (other byte orders, ASCII, extra properties) load.
    data = v.data
    extra = np.empty(len(data), dtype=data.dtype.descr + [("filter_3D", "<f4")])
    for name in data.dtype.names:
        extra[name] = data[name]
    extra["filter_3D"] = 1.0
    for kwargs in ({"byte_order": ">"}, {"text": True}):
        path = tmp_path / f"other_{len(kwargs)}_{'text' in kwargs}.ply"
        el = plyfile.PlyElement.describe(extra, "vertex")
        plyfile.PlyData([el], **kwargs).write(str(path))
        back = load_ply(path)
        assert back.sh_degree == 2
        tol = 1e-6 if "text" in kwargs else 0.0
        assert all(
            torch.allclose(a, b, atol=tol, rtol=tol) for a, b in zip(m.parameters(), back.parameters(), strict=True)
        )


def test_atomic_write(tmp_path: Path) -> None:
    path = tmp_path / "g.ply"
    save_ply(_model(3, 0), path)
    before = path.read_bytes()
    bad = _model(3, 0)
    with torch.no_grad():
        bad.means[1, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        save_ply(bad, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.ply"]  # no temporary left behind
    save_ply(_model(4, 0, seed=1), path)  # overwriting replaces the file whole
    assert load_ply(path).num_gaussians == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.ply"]


def test_non_3dgs_ply_rejected(tmp_path: Path) -> None:
    mesh_ply = tmp_path / "mesh.ply"
    header = "ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
    header += "property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n"
    mesh_ply.write_bytes(header.encode() + np.zeros(9, "<f4").tobytes() + b"\x03" + np.arange(3, dtype="<i4").tobytes())
    with pytest.raises(ValueError, match="not a 3DGS Gaussian PLY.*lacks f_dc_0"):
        load_ply(mesh_ply)
    not_ply = tmp_path / "x.ply"
    not_ply.write_bytes(b"hello")
    with pytest.raises(ValueError, match="not a PLY file"):
        load_ply(not_ply)
    truncated = tmp_path / "t.ply"
    save_ply(_model(10, 0), truncated)
    truncated.write_bytes(truncated.read_bytes()[:-8])
    with pytest.raises(ValueError, match="truncated"):
        load_ply(truncated)
    odd_rest = tmp_path / "odd.ply"
    names = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "f_rest_0", "opacity"]
    names += ["scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    head = "ply\nformat binary_little_endian 1.0\nelement vertex 1\n"
    head += "".join(f"property float {n}\n" for n in names) + "end_header\n"
    odd_rest.write_bytes(head.encode() + np.zeros(len(names), "<f4").tobytes())
    with pytest.raises(ValueError, match="SH degree"):
        load_ply(odd_rest)
