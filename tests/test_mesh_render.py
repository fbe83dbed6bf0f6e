"""Mesh loading and the CPU mesh renderer.

Parity with the benchmark's Cycles renders (frame 000, both composited on white, full-image PSNR), measured
with this code on the development machine (2 CPU cores):

    clip               views (input, novel/045, 135, 225, 315)      PSNR dB            mask IoU
    khr_cesiumman      37.26 37.63 38.33 38.22 36.77                mean 37.64         >= 0.9984
    khr_fox_walk       30.20 30.79 30.10 31.16 30.20                mean 30.49         >= 0.9973
    q_stag_walk        31.49 30.89 31.73 31.47 31.98                mean 31.51         >= 0.9971
    three_robot_dance  30.88 30.65 32.18 31.49 31.58                mean 31.36         >= 0.9984
    all 20 views: mean 32.75 dB, min 30.10 dB, min IoU 0.9971

The remaining error is Cycles' ambient sheen and creases (the references are lit, ours is unlit albedo).
The OBJ exports render within > 70 dB of the GLBs. Rendering all 5 views of a clip at 256x256 with
supersample 3 takes ~0.07 s once numba's cache is warm (one view of a 5k-face mesh: ~0.014 s); this file
runs in ~4 s with a warm numba cache and ~11 s on a cold one (compilation).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pla4d.cameras import Cameras, front_camera, look_at_w2c, orbit_cameras
from pla4d.clip import composite_on_white, load_clip
from pla4d.colour import linear_to_srgb, srgb_to_linear
from pla4d.metrics import mask_iou, psnr
from pla4d.render.mesh import Material, Mesh, load_mesh, mesh_from_arrays, render_mesh

BENCH = Path(os.environ.get("PLA4D_BENCH_DIR", Path(__file__).resolve().parents[2] / "shared" / "bench"))
CLIPS = sorted(p.name for p in BENCH.glob("*") if (p / "cameras.json").is_file()) if BENCH.is_dir() else []
needs_bench = pytest.mark.skipif(not CLIPS, reason=f"benchmark clips not found in {BENCH} (set PLA4D_BENCH_DIR)")

WHITE = torch.ones(3)
FACE_COLOURS = torch.tensor(  # linear; +X, -X, +Y, -Y, +Z, -Z
    [[0.8, 0.1, 0.1], [0.1, 0.6, 0.1], [0.1, 0.1, 0.7], [0.5, 0.5, 0.05], [0.02, 0.3, 0.4], [0.9, 0.9, 0.9]]
)


def coloured_cube(half: float = 0.5) -> Mesh:
    """A cube with one flat linear colour per face (4 own vertices per face)."""
    verts, faces, colours = [], [], []
    for axis in range(3):
        for sign in (1.0, -1.0):
            u, v = [a for a in range(3) if a != axis]
            quad = []
            for du, dv in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
                p = [0.0, 0.0, 0.0]
                p[axis], p[u], p[v] = sign * half, du * half, dv * half
                quad.append(p)
            base = len(verts)
            verts += quad
            faces += [[base, base + 1, base + 2], [base, base + 2, base + 3]]
            colours += [FACE_COLOURS[2 * axis + (0 if sign > 0 else 1)].tolist()] * 4
    return mesh_from_arrays(np.array(verts), np.array(faces), vertex_colors=np.array(colours))


def quad(corners: list[list[float]], **kwargs) -> Mesh:
    """Two triangles over four corners given in order around the quad."""
    return mesh_from_arrays(np.array(corners, np.float64), np.array([[0, 1, 2], [0, 2, 3]]), **kwargs)


def single_camera(eye: list[float], target: list[float], width: int = 64, height: int | None = None, fov: float = 40.0):
    height = width if height is None else height
    f = 0.5 * width / math.tan(math.radians(fov) / 2)
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=torch.float32)
    w2c = look_at_w2c(torch.tensor(eye, dtype=torch.float64), torch.tensor(target, dtype=torch.float64))
    return Cameras(w2c[None], K[None], width, height)


def pixel_rays(cameras: Cameras, s: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Normalised camera-space ray directions (x/z, y/z) at the centres of the s x s samples of every pixel."""
    K = cameras.Ks[0].double().numpy()
    js = (np.arange(cameras.width * s) + 0.5) / s
    is_ = (np.arange(cameras.height * s) + 0.5) / s
    xn = (js[None, :] - K[0, 2]) / K[0, 0]
    yn = (is_[:, None] - K[1, 2]) / K[1, 1]
    return np.broadcast_to(xn, (len(is_), len(js))), np.broadcast_to(yn, (len(is_), len(js)))


# ------------------------------------------------------------------------------------------ benchmark parity


@pytest.fixture(scope="module")
def parity() -> dict:
    results = {}
    for name in CLIPS:
        clip = load_clip(BENCH / name)
        out = render_mesh(load_mesh(clip.mesh_path), clip.camera_batch(), background=WHITE)
        for i, view in enumerate(clip.views):
            ref = clip.load_frame(view, 0)
            results[(name, view)] = (
                psnr(out.rgb[i], composite_on_white(ref)),
                mask_iou(out.alpha[i, ..., 0], ref[..., 3]),
            )
    return results


@needs_bench
@pytest.mark.parametrize("name", CLIPS)
def test_bench_first_frame_parity(parity: dict, name: str) -> None:
    views = {view: v for (clip, view), v in parity.items() if clip == name}
    assert set(views) >= {"input"} and len(views) >= 2
    for view, (p, iou) in views.items():
        assert iou >= 0.99, f"{name} {view}: mask IoU {iou:.4f}"
        assert p >= 29.0, f"{name} {view}: PSNR {p:.2f} dB"


@needs_bench
def test_bench_mean_psnr(parity: dict) -> None:
    mean = float(np.mean([p for p, _ in parity.values()]))
    assert mean >= 30.0, f"mean PSNR {mean:.2f} dB over {len(parity)} views"


@needs_bench
@pytest.mark.parametrize("name", CLIPS)
def test_obj_matches_glb(name: str) -> None:
    clip = load_clip(BENCH / name)
    cams = clip.camera_batch(["input", clip.novel_views[0]])
    glb = render_mesh(load_mesh(clip.mesh_path), cams, background=WHITE)
    obj = render_mesh(load_mesh(clip.obj_path), cams, background=WHITE)
    for i in range(len(cams)):
        assert mask_iou(glb.alpha[i], obj.alpha[i]) >= 0.999
        assert psnr(glb.rgb[i], obj.rgb[i]) >= 45.0


@needs_bench
def test_bench_multi_part_scene_is_flattened() -> None:
    name = "three_robot_dance" if "three_robot_dance" in CLIPS else CLIPS[0]
    path = BENCH / name / "first_frame.glb"
    import trimesh

    scene = trimesh.load(str(path), force="scene", process=False)
    mesh = load_mesh(path)
    expected_faces = sum(len(scene.geometry[scene.graph[n][1]].faces) for n in scene.graph.nodes_geometry)
    assert mesh.num_faces == expected_faces
    # The bench is normalised to the unit sphere around the origin.
    assert float(mesh.vertices.norm(dim=1).max()) <= 1.0 + 1e-4


# ------------------------------------------------------------------------------------------ colours


def test_vertex_colours_are_encoded_exactly() -> None:
    cube = coloured_cube()
    out = render_mesh(cube, front_camera(radius=3.0, fov_deg=30.0, width=64), background=WHITE)
    # The +Z face spans about +-16 px around the centre; its interior is one flat colour.
    centre = out.rgb[0, 24:40, 24:40]
    expected = linear_to_srgb(FACE_COLOURS[4])
    assert torch.allclose(centre, expected.expand_as(centre), atol=2e-6)
    assert torch.all(out.alpha[0, 24:40, 24:40] == 1)
    # Corners are background.
    assert torch.all(out.rgb[0, :4, :4] == 1) and torch.all(out.alpha[0, :4, :4] == 0)


def test_visible_faces_and_orientation() -> None:
    cube = coloured_cube()
    out = render_mesh(cube, orbit_cameras([45.0], 30.0, radius=3.0, fov_deg=40.0, width=96), supersample=1)
    rgb = out.rgb[0]
    encoded = linear_to_srgb(FACE_COLOURS)
    masks = [(rgb - c).abs().amax(-1) < 1e-5 for c in encoded]
    counts = [int(m.sum()) for m in masks]
    assert counts[0] > 100 and counts[2] > 100 and counts[4] > 100  # +X, +Y, +Z seen from az 45, el 30
    assert counts[1] == counts[3] == counts[5] == 0
    rows = torch.arange(96).view(-1, 1).expand(96, 96).float()
    cols = torch.arange(96).view(1, -1).expand(96, 96).float()
    assert rows[masks[2]].mean() < rows[masks[4]].mean()  # +Y (top) above +Z: image rows grow downwards
    assert cols[masks[0]].mean() > cols[masks[4]].mean()  # +X right of +Z for a camera swung towards +X


def test_edges_average_in_linear_premultiplied_space() -> None:
    # A half-covered pixel: the colour is the encoded linear colour, blended by coverage over the background.
    colour = torch.tensor([0.2, 0.4, 0.8])
    # Seen from z = 10 with f = 40 px, world x maps to u = 4 x + 2: the edge x = -0.125 halves pixel column 1.
    plane = quad([[-0.125, -5, 0], [5, -5, 0], [5, 5, 0], [-0.125, 5, 0]], base_color=colour)
    cams = Cameras(
        look_at_w2c(torch.tensor([0.0, 0.0, 10.0]))[None],
        torch.tensor([[[40.0, 0, 2.0], [0, 40.0, 2.0], [0, 0, 1]]]),
        4,
        4,
    )
    bg = torch.tensor([0.0, 0.5, 1.0])
    out = render_mesh(plane, cams, background=bg, supersample=4)
    a = out.alpha[0, 1, 1, 0].item()
    assert a == 0.5
    expected = linear_to_srgb(colour) * a + (1 - a) * bg
    assert torch.allclose(out.rgb[0, 1, 1], expected, atol=1e-6)
    assert out.alpha[0, 1, 0, 0] == 0 and out.alpha[0, 1, 3, 0] == 1


def test_textures_are_decoded_filtered_and_wrapped() -> None:
    # 4x4 sRGB texture with four flat 2x2 blocks; v = 0 is the image's top row (glTF convention).
    blocks = np.array([[[230, 20, 20], [20, 200, 40]], [[30, 60, 220], [250, 250, 250]]], np.uint8)
    texture = blocks.repeat(2, axis=0).repeat(2, axis=1)
    corners = [[-1, 1, 0], [1, 1, 0], [1, -1, 0], [-1, -1, 0]]  # top-left first, world +Y up
    uvs = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)
    cams = front_camera(radius=3.0, fov_deg=40.0, width=128)
    # World (+-0.5, +-0.5) lands on the centre of each block; pixel centres near it sample one flat block.
    f = float(cams.Ks[0, 0, 0])
    off = int(round(64 + 0.5 / 3.0 * f))
    lo = 127 - off
    probes = {(lo, lo): blocks[0, 0], (lo, off): blocks[0, 1], (off, lo): blocks[1, 0], (off, off): blocks[1, 1]}
    base = torch.tensor([0.5, 1.0, 0.25])
    for shift in (0.0, 1.0, -3.0):
        plain = render_mesh(quad(corners, uvs=uvs + shift, texture=texture), cams)
        tinted = render_mesh(quad(corners, uvs=uvs + shift, texture=texture, base_color=base), cams)
        for (i, j), value in probes.items():
            tex = torch.tensor(value / 255.0, dtype=torch.float32)
            assert torch.allclose(plain.rgb[0, i, j], tex, atol=2e-5), (shift, i, j)
            assert torch.allclose(tinted.rgb[0, i, j], linear_to_srgb(base * srgb_to_linear(tex)), atol=2e-5)


def test_multiple_materials_and_concatenation() -> None:
    red = np.full((2, 2, 3), [255, 0, 0], np.uint8)
    left = quad([[-1, 1, 0], [0, 1, 0], [0, -1, 0], [-1, -1, 0]], uvs=np.zeros((4, 2)), texture=red)
    right = quad([[0, 1, 0], [1, 1, 0], [1, -1, 0], [0, -1, 0]], base_color=(0.0, 0.0, 1.0))
    both = Mesh.cat([left, right])
    assert both.face_material is not None and len(both.materials) == 1
    out = render_mesh(both, front_camera(width=64), supersample=1)
    assert torch.allclose(out.rgb[0, 32, 20], torch.tensor([1.0, 0, 0]), atol=1e-6)
    assert torch.allclose(out.rgb[0, 32, 44], torch.tensor([0, 0, 1.0]), atol=1e-6)
    explicit = Mesh(
        both.vertices,
        both.faces,
        uvs=both.uvs,
        face_material=both.face_material,
        materials=(Material(torch.tensor([0.0, 0.0, 1.0])),),
        texture=torch.from_numpy(red),
    )
    assert torch.equal(render_mesh(explicit, front_camera(width=64), supersample=1).rgb, out.rgb)


def test_perspective_correct_interpolation() -> None:
    # A strongly tilted plane whose linear vertex colour is an affine function of world x: every pixel must
    # show the value at the ray's intersection point, which affine screen-space interpolation would miss.
    corners = [[-2, -1, -2.5], [2, -1, 1.5], [2, 1, 1.5], [-2, 1, -2.5]]
    red = [(x + 2) / 4 for x, _, _ in corners]
    colours = np.array([[r, 0.5, 0.5] for r in red])
    cams = front_camera(radius=4.0, fov_deg=40.0, width=48)
    out = render_mesh(quad(corners, vertex_colors=colours), cams, supersample=1)
    xn, _ = pixel_rays(cams)
    # Camera on +Z at distance 4 looking at -Z: world X = z * xn, camera z = 4 - Z and the plane is Z = X - 0.5.
    X = 4.5 * xn / (1 + xn)
    covered = out.alpha[0, ..., 0].numpy() == 1
    got = srgb_to_linear(out.rgb[0, ..., 0].numpy())
    assert covered.sum() > 1000
    assert np.abs(got[covered] - ((X + 2) / 4)[covered]).max() < 2e-4


# ------------------------------------------------------------------------------------------ geometry


@pytest.mark.parametrize("supersample", [1, 3])
def test_depth_of_a_tilted_plane(supersample: int) -> None:
    # Plane n . X = d in the world, large enough to fill the view.
    n = np.array([0.3, 0.2, 1.0])
    d = 0.1

    def z_of(x: float, y: float) -> float:
        return (d - n[0] * x - n[1] * y) / n[2]

    corners = [[x, y, z_of(x, y)] for x, y in ((-6, -6), (6, -6), (6, 6), (-6, 6))]
    cams = orbit_cameras([20.0], 10.0, radius=3.0, fov_deg=40.0, width=40, height=30)
    out = render_mesh(quad(corners), cams, supersample=supersample)
    assert torch.all(out.alpha == 1)
    R = cams.viewmats[0, :3, :3].double().numpy()
    t = cams.viewmats[0, :3, 3].double().numpy()
    nc = R @ n
    dc = d + nc @ t
    xn, yn = pixel_rays(cams, supersample)
    z = dc / (nc[0] * xn + nc[1] * yn + nc[2])
    nearest = z.reshape(30, supersample, 40, supersample).min(axis=(1, 3))
    assert np.abs(out.depth[0, ..., 0].numpy() - nearest).max() < 1e-4


def test_geometry_crossing_the_near_plane_is_clipped() -> None:
    # A floor 1 unit below a camera that stands on it: two huge triangles reaching far behind the camera.
    floor = quad([[-50, -1, -50], [50, -1, -50], [50, -1, 50], [-50, -1, 50]])
    cams = front_camera(radius=3.0, fov_deg=60.0, width=64)
    out = render_mesh(floor, cams, supersample=1)
    xn, yn = pixel_rays(cams)
    yn = yn[:, 0]
    alpha = out.alpha[0, :, :, 0].numpy()
    depth = out.depth[0, :, :, 0].numpy()
    above = yn < 0
    assert np.all(alpha[above] == 0) and np.all(depth[above] == 0)
    below = yn > 0.05  # well below the horizon (the floor ends at 53 units, y/z = 1/53)
    assert np.all(alpha[below] == 1)
    assert np.abs(depth[below] - 1.0 / yn[below, None]).max() < 1e-4


def test_camera_inside_a_cube_sees_its_far_wall() -> None:
    cube = coloured_cube()
    cams = single_camera([0.0, 0.0, 0.0], [0.0, 0.0, -1.0], width=32)
    out = render_mesh(cube, cams)
    assert torch.all(out.alpha == 1)
    assert torch.allclose(out.rgb[0], linear_to_srgb(FACE_COLOURS[5]).expand(32, 32, 3), atol=2e-6)
    assert abs(out.depth[0, 16, 16, 0].item() - 0.5) < 1e-3


@pytest.mark.parametrize(
    "cams",
    [
        single_camera([0.0, 0.0, 3.0], [0.0, 0.0, 6.0]),  # looking away: the mesh is behind the camera
        single_camera([0.0, 0.0, 3.0], [40.0, 0.0, 3.0]),  # looking sideways: the mesh is off-screen
    ],
)
def test_empty_views(cams: Cameras) -> None:
    out = render_mesh(coloured_cube(), cams, background=torch.tensor([0.2, 0.3, 0.4]))
    assert torch.all(out.alpha == 0) and torch.all(out.depth == 0)
    assert torch.allclose(out.rgb, torch.tensor([0.2, 0.3, 0.4]).expand_as(out.rgb))


def test_empty_mesh_renders_nothing() -> None:
    empty = mesh_from_arrays(np.zeros((0, 3)), np.zeros((0, 3), np.int64))
    out = render_mesh(empty, front_camera(width=16))
    assert out.rgb.shape == (1, 16, 16, 3) and torch.all(out.alpha == 0)


@pytest.mark.parametrize(("width", "height", "supersample"), [(37, 23, 3), (31, 17, 2), (5, 9, 1)])
def test_odd_image_sizes(width: int, height: int, supersample: int) -> None:
    cams = front_camera(radius=3.0, fov_deg=40.0, width=width, height=height)
    out = render_mesh(coloured_cube(), cams, supersample=supersample)
    assert out.rgb.shape == (1, height, width, 3)
    assert out.alpha.shape == out.depth.shape == (1, height, width, 1)
    # The principal point is the image centre, so the cube's silhouette is mirror-symmetric.
    alpha = out.alpha[0, ..., 0]
    assert (alpha - alpha.flip(1)).abs().mean() < 1e-3
    assert (alpha - alpha.flip(0)).abs().mean() < 1e-3
    assert alpha.sum() > 0


def test_batch_equals_single_renders() -> None:
    cams = orbit_cameras([0.0, 100.0, 230.0], [0.0, 20.0, -35.0], radius=2.5, width=40)
    cube = coloured_cube()
    bg = torch.rand(3, 40, 40, 3, generator=torch.Generator().manual_seed(0))
    batch = render_mesh(cube, cams, background=bg)
    assert batch.rgb.shape == (3, 40, 40, 3)
    for i in range(3):
        single = render_mesh(cube, cams[i], background=bg[i])
        assert torch.equal(batch.rgb[i], single.rgb[0])
        assert torch.equal(batch.alpha[i], single.alpha[0])
        assert torch.equal(batch.depth[i], single.depth[0])


def test_animation_helpers() -> None:
    cube = coloured_cube(half=0.25)
    cams = front_camera(width=48)
    shift = torch.eye(4)
    shift[0, 3] = 0.5
    moved = cube.transformed(shift)
    assert torch.allclose(moved.vertices, cube.vertices + torch.tensor([0.5, 0, 0]))
    assert moved.vertex_colors.data_ptr() == cube.vertex_colors.data_ptr()  # shared, not copied
    assert torch.equal(moved.faces, cube.faces)
    a = render_mesh(cube, cams).alpha[0, ..., 0]
    b = render_mesh(cube.with_vertices(moved.vertices), cams).alpha[0, ..., 0]
    cols = torch.arange(48).float()
    assert (b.sum(0) * cols).sum() / b.sum() > (a.sum(0) * cols).sum() / a.sum() + 3
    with pytest.raises(ValueError, match="shape"):
        cube.with_vertices(torch.zeros(3, 3))


def test_speed_of_a_5k_face_mesh() -> None:
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=4)  # 5120 faces
    mesh = mesh_from_arrays(sphere.vertices, sphere.faces, vertex_colors=np.abs(sphere.vertices))
    cams = front_camera(width=256)
    render_mesh(mesh, cams)  # numba compilation / cache load
    start = time.perf_counter()
    render_mesh(mesh, cams, supersample=3)
    assert time.perf_counter() - start < 1.0


# ------------------------------------------------------------------------------------------ errors


def test_missing_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.glb"):
        load_mesh(tmp_path / "nowhere.glb")
    bad = tmp_path / "corrupt.glb"
    bad.write_bytes(b"glTF\x02\x00\x00\x00garbage")
    with pytest.raises(ValueError, match="could not read"):
        load_mesh(bad)
    other = tmp_path / "mesh.xyz"
    other.write_text("1 2 3\n")
    with pytest.raises(ValueError, match="unsupported"):
        load_mesh(other)
    with pytest.raises(ValueError, match="not a mesh file"):
        load_mesh(tmp_path)


def test_invalid_meshes_and_arguments() -> None:
    with pytest.raises(ValueError, match="outside"):
        mesh_from_arrays(np.zeros((3, 3)), np.array([[0, 1, 3]]))
    with pytest.raises(ValueError, match="uvs"):
        mesh_from_arrays(np.zeros((3, 3)), np.array([[0, 1, 2]]), texture=np.zeros((2, 2, 3)))
    cube = coloured_cube()
    with pytest.raises(ValueError, match="supersample"):
        render_mesh(cube, front_camera(width=8), supersample=0)
    with pytest.raises(ValueError, match="backend"):
        render_mesh(cube, front_camera(width=8), backend="opengl")
    with pytest.raises(RuntimeError, match="nvdiffrast"):
        render_mesh(cube, front_camera(width=8), backend="nvdiffrast")  # not installed, or the mesh is on the CPU
    with pytest.raises(ValueError, match="background"):
        render_mesh(cube, front_camera(width=8), background=torch.ones(4))


def test_load_mesh_from_exported_glb(tmp_path: Path) -> None:
    # A vertex-coloured glTF built with trimesh: COLOR_0 is linear, node transforms are applied.
    import trimesh

    box = trimesh.creation.box(extents=(0.5, 0.5, 0.5))
    box.visual.vertex_colors = np.tile(np.array([[128, 64, 255, 255]], np.uint8), (len(box.vertices), 1))
    scene = trimesh.Scene()
    transform = np.eye(4)
    transform[:3, 3] = [0.25, 0.0, 0.0]
    scene.add_geometry(box, transform=transform)
    path = tmp_path / "box.glb"
    scene.export(path)
    mesh = load_mesh(path)
    assert torch.allclose(mesh.vertices.mean(0), torch.tensor([0.25, 0.0, 0.0]), atol=1e-6)
    assert mesh.vertex_colors is not None
    assert torch.allclose(mesh.vertex_colors[0], torch.tensor([128, 64, 255]) / 255.0, atol=1e-6)


def test_clip_loader_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_clip(tmp_path / "missing")
    with pytest.raises(ValueError, match="not a benchmark clip"):
        load_clip(tmp_path)


@needs_bench
def test_clip_loader() -> None:
    clip = load_clip(BENCH / CLIPS[0])
    assert clip.views[0] == "input" and len(clip.novel_views) >= 1
    assert clip.n_frames == len(clip.times) and clip.fps > 0
    frame = clip.load_frame(clip.novel_views[0], clip.n_frames - 1)
    assert frame.shape == (clip.height, clip.width, 4) and 0 <= float(frame.min()) <= float(frame.max()) <= 1
    cams = clip.camera_batch()
    assert len(cams) == len(clip.views)
    # The front camera sits on +Z at the clip's radius.
    assert torch.allclose(clip.camera("input").centers()[0], torch.tensor([0, 0, 3.0]), atol=1e-4)
    with pytest.raises(KeyError):
        clip.camera("novel/999")
    with pytest.raises(IndexError):
        clip.frame_path("input", clip.n_frames)


def test_nvdiffrast_clip_space_matches_the_pinhole_model() -> None:
    # The CUDA path itself needs a GPU; its camera mapping is plain torch and is checked here.
    from pla4d.render._mesh_nvdiffrast import clip_space

    cams = orbit_cameras([30.0, 200.0], [10.0, -20.0], radius=3.0, width=40, height=24)
    cams = Cameras(cams.viewmats, cams.Ks.clone(), 40, 24)
    cams.Ks[1, 0, 1] = 3.0  # some skew
    cams.Ks[1, 0, 2] = 17.0  # an off-centre principal point
    verts = torch.rand(50, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1
    clip, z = clip_space(verts, cams, near=0.01)
    ndc = clip[..., :3] / clip[..., 3:]
    cam = torch.einsum("cij,vj->cvi", cams.viewmats[:, :3, :3], verts) + cams.viewmats[:, None, :3, 3]
    pix = torch.einsum("cij,cvj->cvi", cams.Ks, cam)
    pix = pix[..., :2] / pix[..., 2:]
    assert torch.allclose((ndc[..., 0] + 1) / 2 * 40, pix[..., 0], atol=1e-3)
    # nvdiffrast stores rows bottom-up from NDC y = -1, so NDC y = -1 must be pixel row 0.
    assert torch.allclose((ndc[..., 1] + 1) / 2 * 24, pix[..., 1], atol=1e-3)
    assert torch.allclose(z, cam[..., 2], atol=1e-5)
    assert torch.all(ndc[..., 2] > -1) and torch.all(ndc[..., 2] < 1)
