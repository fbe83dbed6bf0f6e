"""Surface sampling: area-uniform points whose colours are what the mesh renderer shows there."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pla4d.cameras import front_camera
from pla4d.clip import load_clip
from pla4d.colour import linear_to_srgb, srgb_to_linear
from pla4d.render.mesh import Material, Mesh, load_mesh, mesh_from_arrays, render_mesh
from pla4d.render.mesh_sampling import face_areas, sample_barycentric, sample_surface, surface_colors

CUBE_V = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], np.float32) * 0.5
CUBE_F = np.array(
    [[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
     [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]],
    np.int64,
)  # fmt: skip


def _quad(texture: np.ndarray, uv_lo: float = 0.0, uv_hi: float = 1.0, size: float = 1.0, **kw) -> Mesh:
    """A square in the z = 0 plane facing +Z; uv (uv_lo, uv_lo) at the top-left corner (glTF: v down)."""
    s = size
    verts = np.array([[-s, s, 0], [s, s, 0], [s, -s, 0], [-s, -s, 0]], np.float32)
    uvs = np.array([[uv_lo, uv_lo], [uv_hi, uv_lo], [uv_hi, uv_hi], [uv_lo, uv_hi]], np.float32)
    return mesh_from_arrays(verts, np.array([[0, 2, 1], [0, 3, 2]]), uvs=uvs, texture=texture, **kw)


def _reference_texture_lookup(texture: np.ndarray, uv: torch.Tensor) -> torch.Tensor:
    """Linear-space bilinear lookup by torch's grid_sample (texel centres at (k + 0.5) / size)."""
    lin = srgb_to_linear(torch.from_numpy(texture)).permute(2, 0, 1)[None].double()
    grid = (uv * 2.0 - 1.0).double().view(1, 1, -1, 2)
    return F.grid_sample(lin, grid, mode="bilinear", align_corners=False)[0, :, 0].T


def test_vertex_coloured_cube_colours_exact() -> None:
    # Colours linear in position: barycentric interpolation reproduces them exactly at every sample.
    vc = CUBE_V + 0.5
    mesh = mesh_from_arrays(CUBE_V, CUBE_F, vertex_colors=vc, base_color=(0.5, 1.0, 0.8))
    s = sample_surface(mesh, 4000, seed=1)
    expected = linear_to_srgb((s.points.double() + 0.5) * torch.tensor([0.5, 1.0, 0.8], dtype=torch.float64))
    assert torch.allclose(s.colors_srgb.double(), expected, atol=2e-6)
    assert s.points.shape == s.normals.shape == s.colors_srgb.shape == (4000, 3)
    assert s.face_idx.dtype == torch.int64 and s.points.dtype == torch.float32
    # On a cube every point lies on a face (one coordinate at +-0.5) and its normal is that axis.
    on_face = (s.points.abs() - 0.5).abs() < 1e-6
    assert bool(on_face.any(dim=1).all())
    axis = s.normals.abs().argmax(dim=1)
    assert bool(on_face[torch.arange(4000), axis].all())
    assert torch.allclose(s.normals.norm(dim=1), torch.ones(4000), atol=1e-6)
    assert torch.allclose(s.normals.abs().max(dim=1).values, torch.ones(4000), atol=1e-6)


def test_area_weighting_and_uniformity() -> None:
    # Two triangles of areas 1 and 3: a quarter of the samples on the first, spread uniformly in each.
    verts = np.array([[0, 0, 0], [2, 0, 0], [0, 1, 0], [0, 0, 1], [3, 0, 1], [0, 2, 1]], np.float32)
    mesh = mesh_from_arrays(verts, np.array([[0, 1, 2], [3, 4, 5]]))
    assert torch.allclose(face_areas(mesh), torch.tensor([1.0, 3.0], dtype=torch.float64))
    s = sample_surface(mesh, 40000, seed=0)
    frac = float((s.face_idx == 0).float().mean())
    assert frac == pytest.approx(0.25, abs=0.01)
    first = s.points[s.face_idx == 0]
    assert torch.allclose(first.mean(dim=0), torch.tensor([2 / 3, 1 / 3, 0.0]), atol=0.02)  # centroid
    # Uniform in a triangle: the fraction below the mid-height line y = 0.5 is 3/4.
    assert float((first[:, 1] < 0.5).float().mean()) == pytest.approx(0.75, abs=0.02)
    assert torch.allclose(s.colors_srgb, torch.ones_like(s.colors_srgb))  # no colours: white


def test_textured_quad_matches_bilinear_and_repeat() -> None:
    rng = np.random.default_rng(3)
    tex = rng.random((6, 5, 3)).astype(np.float32)
    # UVs inside [0.2, 0.8] keep grid_sample's border handling out of the comparison.
    mesh = _quad(tex, 0.2, 0.8, base_color=(0.9, 0.7, 1.0))
    face_idx, bary = sample_barycentric(mesh, 3000, seed=2)
    uv = (bary[:, :, None] * mesh.uvs.double()[mesh.faces[face_idx]]).sum(dim=1)
    ref = _reference_texture_lookup(tex, uv) * torch.tensor([0.9, 0.7, 1.0], dtype=torch.float64)
    got = surface_colors(mesh, face_idx, bary, srgb=False)
    assert torch.allclose(got.double(), ref, atol=1e-5)
    assert torch.allclose(surface_colors(mesh, face_idx, bary), linear_to_srgb(got))
    # REPEAT wrap: shifting every UV by whole tiles changes nothing.
    shifted = _quad(tex, 2.2, 2.8, base_color=(0.9, 0.7, 1.0))
    assert torch.allclose(surface_colors(shifted, face_idx, bary, srgb=False), got, atol=1e-5)


def test_multi_material_colours() -> None:
    tex = np.full((2, 2, 3), 0.5, np.float32)
    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [0, 1, 1]], np.float32)
    mesh = Mesh(
        torch.from_numpy(verts),
        torch.tensor([[0, 1, 2], [3, 4, 5]]),
        vertex_colors=torch.full((6, 3), 0.5),
        uvs=torch.zeros(6, 2),
        base_color=torch.tensor([1.0, 0.0, 0.0]),
        face_material=torch.tensor([0, 1]),
        materials=(Material(torch.tensor([0.0, 0.5, 1.0]), torch.from_numpy(tex)),),
    )
    s = sample_surface(mesh, 200, seed=0)
    lin_tex = float(srgb_to_linear(0.5))
    expect0 = linear_to_srgb(torch.tensor([0.5, 0.0, 0.0]))
    expect1 = linear_to_srgb(torch.tensor([0.0, 0.25, 0.5]) * lin_tex)
    assert torch.allclose(s.colors_srgb[s.face_idx == 0], expect0.expand(int((s.face_idx == 0).sum()), 3), atol=1e-6)
    assert torch.allclose(s.colors_srgb[s.face_idx == 1], expect1.expand(int((s.face_idx == 1).sum()), 3), atol=1e-6)


def _visible_sample_errors(mesh: Mesh, cameras, n: int = 20000) -> torch.Tensor:
    """Max-channel |render - sample colour| at the pixels of the samples the camera sees unoccluded."""
    out = render_mesh(mesh, cameras)
    s = sample_surface(mesh, n, seed=0)
    vm, K = cameras.viewmats[0], cameras.Ks[0]
    pc = s.points @ vm[:3, :3].T + vm[:3, 3]
    px = (pc @ K.T)[:, :2] / pc[:, 2:]
    j, i = px[:, 0].floor().long(), px[:, 1].floor().long()
    inside = (i >= 0) & (i < cameras.height) & (j >= 0) & (j < cameras.width)
    i, j, pc, col = i[inside], j[inside], pc[inside], s.colors_srgb[inside]
    visible = (out.alpha[0, i, j, 0] > 0.999) & ((pc[:, 2] - out.depth[0, i, j, 0]).abs() < 2e-3)
    assert int(visible.sum()) > 500
    return (out.rgb[0, i, j][visible] - col[visible]).abs().max(dim=1).values


def test_colours_match_render_textured_quad() -> None:
    # A smooth texture seen face-on: each sample's colour is the rendered pixel's up to the pixel footprint.
    yy, xx = np.meshgrid(np.linspace(0, 1, 16), np.linspace(0, 1, 16), indexing="ij")
    tex = np.stack([xx, yy, 0.5 + 0.0 * xx], axis=-1).astype(np.float32)
    # (UVs kept off the texture border, where REPEAT blends in the opposite edge within one texel.)
    err = _visible_sample_errors(_quad(tex, 0.1, 0.9, size=0.8), front_camera(3.0, 40.0, 128))
    assert float(err.max()) < 0.02


def test_colours_match_render_bench(clips) -> None:
    # The real assets (textured and vertex-coloured): most visible samples match their pixel exactly; the
    # rest differ by texture detail inside the pixel.
    for path in clips:
        clip = load_clip(path)
        err = _visible_sample_errors(load_mesh(clip.mesh_path), clip.camera("input"))
        print(f"sampling {clip.name:18s} median {float(err.median()):.4f} mean {float(err.mean()):.4f}")
        assert float(err.median()) < 0.01
        assert float(err.mean()) < 0.05


def test_deterministic_and_errors() -> None:
    mesh = mesh_from_arrays(CUBE_V, CUBE_F)
    a, b = sample_surface(mesh, 100, seed=5), sample_surface(mesh, 100, seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a.points, sample_surface(mesh, 100, seed=6).points)
    with pytest.raises(ValueError, match="positive int"):
        sample_surface(mesh, 0)
    with pytest.raises(ValueError, match="surface area"):
        sample_surface(mesh_from_arrays(np.zeros((3, 3)), np.array([[0, 1, 2]])), 10)
    with pytest.raises(ValueError, match="surface area"):
        sample_surface(mesh_from_arrays(np.zeros((3, 3)), np.zeros((0, 3), np.int64)), 10)
