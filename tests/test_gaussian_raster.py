"""Gaussian splat rasteriser: CPU kernel vs gsplat's torch reference, finite differences and the dense reference.

gsplat's own ``_rasterize_to_pixels`` cannot run here (it calls the CUDA op ``rasterize_to_indices_3dgs`` and
needs nerfacc), so the gsplat comparison takes gsplat's torch projection (``_fully_fused_projection``), tile
intersection (``_isect_tiles``, ``_isect_offset_encode``) and spherical harmonics as they are, and composites each
tile's list with a few lines of torch that transcribe ``RasterizeToPixels3DGSFwd.cu``; autograd supplies the
gradients that ``RasterizeToPixels3DGSBwd.cu`` computes by hand.
"""

from __future__ import annotations

import math

import pytest
import torch

from pla4d.cameras import Cameras, intrinsics, look_at_w2c, orbit_cameras
from pla4d.render.gaussians import GaussianRender, rasterize_gaussians, render_gaussians

gsplat_torch = pytest.importorskip("gsplat.cuda._torch_impl")

PARAMS = ("means", "quats", "scales", "opacities", "colors")


def random_scene(
    n: int,
    seed: int,
    dtype: torch.dtype = torch.float32,
    scale_range: tuple[float, float] = (0.03, 0.2),
    opacity_range: tuple[float, float] = (0.05, 0.95),
    sh_k: int | None = None,
    spread: float = 0.6,
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lo, hi = math.log(scale_range[0]), math.log(scale_range[1])
    scene = {
        "means": torch.randn(n, 3, generator=g) * spread,
        "quats": torch.randn(n, 4, generator=g),
        "scales": torch.empty(n, 3).uniform_(lo, hi, generator=g).exp(),
        "opacities": torch.empty(n).uniform_(*opacity_range, generator=g),
        "colors": torch.rand(n, 3, generator=g) if sh_k is None else 0.4 * torch.randn(n, sh_k, 3, generator=g),
    }
    return {k: v.to(dtype) for k, v in scene.items()}


def leaf(scene: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().requires_grad_(True) for k, v in scene.items()}


def cams(azimuths: list[float], width: int, height: int, elevation: float = 10.0) -> Cameras:
    return orbit_cameras(azimuths, elevation, radius=3.0, fov_deg=49.1, width=width, height=height)


def loss_weights(c: int, h: int, w: int, dtype: torch.dtype, seed: int = 7) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.rand(c, h, w, 3, generator=g).to(dtype),
        torch.rand(c, h, w, 1, generator=g).to(dtype),
        (0.2 * torch.rand(c, h, w, 1, generator=g)).to(dtype),
    )


def weighted_loss(rgb: torch.Tensor, alpha: torch.Tensor, depth: torch.Tensor, w: tuple[torch.Tensor, ...]):
    return (rgb * w[0]).sum() + (alpha * w[1]).sum() + (depth * w[2]).sum()


def render(p: dict[str, torch.Tensor], cameras: Cameras, **kw) -> GaussianRender:
    return render_gaussians(p["means"], p["quats"], p["scales"], p["opacities"], p["colors"], cameras, **kw)


def grads(p: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.grad if v.grad is not None else torch.zeros_like(v)) for k, v in p.items()}


def assert_close_rel(a: torch.Tensor, b: torch.Tensor, rel: float, name: str = "") -> None:
    """|a - b| <= rel * max|b| (+ a tiny floor): gradient entries span orders of magnitude."""
    scale = b.abs().max().item() if b.numel() else 0.0
    err = (a - b).abs().max().item() if b.numel() else 0.0
    assert err <= rel * scale + 1e-9, f"{name}: max |diff| {err:.3g} vs max |ref| {scale:.3g} (rel {rel})"


def ambiguous_pixels(out: GaussianRender, opacities: torch.Tensor, window: float = 1e-3) -> torch.Tensor:
    """(C, H, W, 1) pixels sitting on a discontinuity of the compositing rule: some Gaussian's alpha within
    ``window`` (relative) of the 1/255 cut, or the transmittance within ``window`` of the 1e-4 stop.

    There float rounding decides (gsplat, the kernel and the dense reference round differently), so comparisons
    and losses leave those pixels out. Small scenes only (dense over pixels x Gaussians).
    """
    info = out.info
    n_cams, height, width = out.alpha.shape[:3]
    py, px = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    px, py = px.reshape(-1, 1).double(), py.reshape(-1, 1).double()
    masks = []
    for c in range(n_cams):
        vis = torch.nonzero((info["radii"][c] > 0).all(-1))[:, 0]
        vis = vis[torch.sort(info["depths"][c, vis].detach(), stable=True).indices]
        m = info["means2d"][c, vis].detach().double()
        con = info["conics"][c, vis].detach().double()
        dx, dy = m[None, :, 0] - px, m[None, :, 1] - py
        sigma = 0.5 * (con[None, :, 0] * dx * dx + con[None, :, 2] * dy * dy) + con[None, :, 1] * dx * dy
        raw = opacities.detach().double()[vis][None] * torch.exp(-sigma)
        near_cut = ((raw * 255.0 - 1.0).abs() < window).any(1)
        alpha = torch.where(raw.clamp(max=0.999) >= 1 / 255, raw.clamp(max=0.999), torch.zeros_like(raw))
        t_incl = torch.cumprod(1 - alpha, 1)
        t_excl = torch.cat([torch.ones_like(t_incl[:, :1]), t_incl[:, :-1]], 1)
        # only the step that first takes T to 1e-4 matters: later ones are never composited
        crossing = (t_excl * 1e4 > 1.0 - window) & (alpha > 0)
        near_stop = (crossing & ((t_incl * 1e4 - 1.0).abs() < window)).any(1)
        masks.append((near_cut | near_stop).reshape(height, width, 1))
    return torch.stack(masks)


# --------------------------------------------------------------------------------------------------------------
# gsplat's torch pieces + a torch transcription of its per-tile compositing kernel
# --------------------------------------------------------------------------------------------------------------


def gsplat_torch_render(
    p: dict[str, torch.Tensor], cameras: Cameras, background: torch.Tensor | None = None, sh_degree: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width, height, tile = cameras.width, cameras.height, 16
    viewmats, Ks = cameras.viewmats.to(p["means"].dtype), cameras.Ks.to(p["means"].dtype)
    n_cams = viewmats.shape[0]
    covars, _ = gsplat_torch._quat_scale_to_covar_preci(p["quats"], p["scales"], compute_preci=False)
    radii, means2d, depths, conics, _ = gsplat_torch._fully_fused_projection(
        p["means"], covars, viewmats, Ks, width, height
    )
    if sh_degree is None:
        colors = p["colors"][None].expand(n_cams, -1, -1)
    else:
        campos = torch.inverse(viewmats)[:, :3, 3]
        dirs = p["means"][None] - campos[:, None]
        shs = p["colors"][None].expand(n_cams, -1, -1, -1)
        colors = torch.clamp_min(gsplat_torch._spherical_harmonics(sh_degree, dirs, shs) + 0.5, 0.0)
    colors = torch.cat([colors, depths[..., None]], dim=-1)  # render_mode "RGB+ED"
    tiles_x, tiles_y = math.ceil(width / tile), math.ceil(height / tile)
    _, isect_ids, flatten_ids = gsplat_torch._isect_tiles(means2d, radii, depths, tile, tiles_x, tiles_y)
    offsets = gsplat_torch._isect_offset_encode(isect_ids, n_cams, tiles_x, tiles_y).flatten().tolist()
    offsets.append(len(flatten_ids))
    opac = p["opacities"]
    n = p["means"].shape[0]
    flat = lambda t: t.reshape(n_cams * n, *t.shape[2:])  # noqa: E731
    m2, con, col = flat(means2d), flat(conics), flat(colors)
    images, alphas = [], []
    for c in range(n_cams):
        img = torch.zeros(height, width, 4, dtype=m2.dtype)
        acc = torch.zeros(height, width, 1, dtype=m2.dtype)
        for ty in range(tiles_y):
            for tx in range(tiles_x):
                t = (c * tiles_y + ty) * tiles_x + tx
                ids = flatten_ids[offsets[t] : offsets[t + 1]].long()
                if ids.numel() == 0:
                    continue
                y0, x0 = ty * tile, tx * tile
                y1, x1 = min(y0 + tile, height), min(x0 + tile, width)
                py, px = torch.meshgrid(
                    torch.arange(y0, y1, dtype=m2.dtype) + 0.5,
                    torch.arange(x0, x1, dtype=m2.dtype) + 0.5,
                    indexing="ij",
                )
                dx = m2[ids, 0][None] - px.reshape(-1, 1)
                dy = m2[ids, 1][None] - py.reshape(-1, 1)
                a, b, cc = con[ids, 0][None], con[ids, 1][None], con[ids, 2][None]
                sigma = 0.5 * (a * dx * dx + cc * dy * dy) + b * dx * dy
                alpha = torch.clamp_max(opac[ids % n][None] * torch.exp(-sigma), 0.999)
                alpha = torch.where((sigma >= 0) & (alpha >= 1.0 / 255.0), alpha, torch.zeros_like(alpha))
                t_incl = torch.cumprod(1.0 - alpha, dim=1)
                t_excl = torch.cat([torch.ones_like(t_incl[:, :1]), t_incl[:, :-1]], dim=1)
                keep = t_incl > 1e-4  # "next_T <= 1e-4: done, exclusive"
                w = torch.where(keep, alpha * t_excl, torch.zeros_like(alpha))
                t_final = torch.prod(torch.where(keep, 1.0 - alpha, torch.ones_like(alpha)), dim=1)
                out = w @ col[ids]
                img[y0:y1, x0:x1] = out.reshape(y1 - y0, x1 - x0, 4)
                acc[y0:y1, x0:x1] = (1.0 - t_final).reshape(y1 - y0, x1 - x0, 1)
        if background is not None:
            bg = background if background.ndim == 1 else background[c]
            img = img + (1.0 - acc) * torch.cat([bg, bg.new_zeros(1)])
        images.append(img)
        alphas.append(acc)
    img, acc = torch.stack(images), torch.stack(alphas)
    return img[..., :3], acc, img[..., 3:4] / acc.clamp(min=1e-10)


def compare_with_gsplat(scene, cameras, background=None, sh_degree=None, tol=1e-4):
    w = loss_weights(len(cameras), cameras.height, cameras.width, torch.float32)
    p_ours, p_ref = leaf(scene), leaf(scene)
    ours = render(p_ours, cameras, background=background, sh_degree=sh_degree, backend="cpu")
    ref = gsplat_torch_render(p_ref, cameras, background, sh_degree)
    assert ours.alpha.max() > 0.2, "scene should be visible"
    amb = ambiguous_pixels(ours, scene["opacities"])
    assert amb.float().mean() < 0.05  # a sanity bound: the comparison must still cover nearly all pixels
    for name, a, b in (("rgb", ours.rgb, ref[0]), ("alpha", ours.alpha, ref[1]), ("depth", ours.depth, ref[2])):
        assert a.shape == b.shape
        scale = 1.0 if name != "depth" else b.abs().max().item()
        diff = torch.where(amb, 0.0, (a - b).abs())
        assert diff.max().item() <= tol * scale, f"{name} differs from gsplat"
    w = tuple(torch.where(amb, 0.0, x) for x in w)
    weighted_loss(ours.rgb, ours.alpha, ours.depth, w).backward()
    weighted_loss(*ref, w).backward()
    g_ours, g_ref = grads(p_ours), grads(p_ref)
    for k in PARAMS:
        assert torch.isfinite(g_ours[k]).all()
        assert_close_rel(g_ours[k], g_ref[k], tol, k)
    return ours


@pytest.mark.parametrize(
    ("azimuths", "width", "height"),
    [([0.0], 37, 23), ([20.0, 160.0], 17, 50), ([0.0, 90.0, 200.0], 40, 32)],
)
def test_matches_gsplat_torch_reference(azimuths, width, height):
    scene = random_scene(120, seed=len(azimuths) + width)
    compare_with_gsplat(scene, cams(azimuths, width, height), background=torch.tensor([0.1, 0.5, 0.9]))


@pytest.mark.parametrize("sh_degree", [0, 1, 3, 4])
def test_sh_matches_gsplat_torch_reference(sh_degree):
    scene = random_scene(80, seed=3 + sh_degree, sh_k=25)
    compare_with_gsplat(scene, cams([30.0, -60.0], 33, 29), sh_degree=sh_degree)


def test_saturated_scene_matches_gsplat_torch_reference():
    # Many opaque, overlapping Gaussians: pixels stop early (T <= 1e-4) and alphas hit the 0.999 clamp.
    scene = random_scene(300, seed=11, scale_range=(0.1, 0.4), opacity_range=(0.6, 1.0), spread=0.3)
    scene["opacities"][:40] = 1.0
    out = compare_with_gsplat(scene, cams([0.0, 45.0], 32, 32))
    assert out.alpha.max() > 0.9998


# --------------------------------------------------------------------------------------------------------------
# Gradients: finite differences (float64) and the dense autograd reference
# --------------------------------------------------------------------------------------------------------------


def test_gradients_match_finite_differences_float64():
    scene = random_scene(25, seed=5, dtype=torch.float64, opacity_range=(0.2, 0.7), sh_k=4, scale_range=(0.08, 0.25))
    cameras = cams([0.0, 40.0], 24, 20)
    bg = torch.tensor([0.3, 0.2, 0.1], dtype=torch.float64)
    w = loss_weights(2, 20, 24, torch.float64)

    def loss(p):
        out = render(p, cameras, background=bg, sh_degree=1, backend="cpu")
        return weighted_loss(out.rgb, out.alpha, out.depth, w)

    p = leaf(scene)
    loss(p).backward()
    analytic = grads(p)
    eps = 1e-6
    g = torch.Generator().manual_seed(0)
    for name in PARAMS:
        flat = scene[name].reshape(-1)
        # Parameters of visible Gaussians carry the information; pick among those with a non-zero gradient.
        nz = torch.nonzero(analytic[name].reshape(-1).abs() > 1e-6)[:, 0]
        assert nz.numel() > 0, name
        for idx in nz[torch.randperm(nz.numel(), generator=g)[:3]].tolist():
            plus = {k: v.clone() for k, v in scene.items()}
            minus = {k: v.clone() for k, v in scene.items()}
            plus[name].reshape(-1)[idx] = flat[idx] + eps
            minus[name].reshape(-1)[idx] = flat[idx] - eps
            with torch.no_grad():
                fd = (loss(plus) - loss(minus)).item() / (2 * eps)
            an = analytic[name].reshape(-1)[idx].item()
            assert abs(fd - an) <= 1e-5 * max(1.0, abs(fd)), f"{name}[{idx}]: analytic {an} vs finite diff {fd}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("azimuths", "width", "height"), [([0.0], 37, 23), ([10.0, 130.0, 250.0], 17, 50)])
def test_cpu_matches_dense_reference(dtype, azimuths, width, height):
    scene = random_scene(150, seed=21, dtype=dtype)
    cameras = cams(azimuths, width, height)
    bg = torch.rand(len(azimuths), 3, generator=torch.Generator().manual_seed(1)).to(dtype)
    w = loss_weights(len(azimuths), height, width, dtype)
    amb = ambiguous_pixels(render(scene, cameras, backend="cpu"), scene["opacities"])
    w = tuple(torch.where(amb, 0.0, x) for x in w)
    outs = {}
    for backend in ("cpu", "reference"):
        p = leaf(scene)
        out = render(p, cameras, background=bg, backend=backend)
        weighted_loss(out.rgb, out.alpha, out.depth, w).backward()
        outs[backend] = (out, grads(p))
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    (a, ga), (b, gb) = outs["cpu"], outs["reference"]
    assert torch.where(amb, 0.0, a.rgb - b.rgb).abs().max() <= tol
    assert torch.where(amb, 0.0, a.alpha - b.alpha).abs().max() <= tol
    assert torch.where(amb, 0.0, a.depth - b.depth).abs().max() <= tol * b.depth.abs().max()
    for k in PARAMS:
        assert_close_rel(ga[k], gb[k], tol, k)


# --------------------------------------------------------------------------------------------------------------
# Edge cases
# --------------------------------------------------------------------------------------------------------------


def test_culled_gaussians_get_zero_gradients_and_change_nothing():
    visible = random_scene(40, seed=2)
    # Camera on +Z looking at the origin: z_cam = 3 - z_world.
    bad_means = torch.tensor(
        [
            [0.0, 0.0, 5.0],  # behind the camera
            [0.0, 0.0, 3.0],  # in the camera plane (z = 0)
            [0.0, 0.0, 2.995],  # closer than the near plane
            [40.0, 0.0, 0.0],  # far off-screen to the right
            [0.0, -30.0, 0.0],  # far off-screen above
            [0.1, 0.1, 0.0],  # on screen but opacity below 1/255
        ]
    )
    extra = {
        "means": bad_means,
        "quats": torch.randn(6, 4),
        "scales": torch.full((6, 3), 0.1),
        "opacities": torch.tensor([0.9, 0.9, 0.9, 0.9, 0.9, 0.001]),
        "colors": torch.rand(6, 3),
    }
    scene = {k: torch.cat([visible[k], extra[k]]) for k in PARAMS}
    cameras = cams([0.0], 30, 26, elevation=0.0)
    bg = torch.tensor([0.2, 0.2, 0.2])
    p = leaf(scene)
    out = render(p, cameras, background=bg, backend="cpu")
    (out.rgb.sum() + out.alpha.sum() + out.depth.sum()).backward()
    g = grads(p)
    assert (out.info["radii"][0, -6:] == 0).all()
    for k in PARAMS:
        assert torch.isfinite(g[k]).all(), k
        assert (g[k][-6:] == 0).all(), k
    ref = render(leaf(visible), cameras, background=bg, backend="cpu")
    assert torch.equal(out.rgb, ref.rgb) and torch.equal(out.alpha, ref.alpha)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_empty_scene_returns_background(backend):
    empty = {"means": torch.zeros(0, 3), "quats": torch.zeros(0, 4), "scales": torch.zeros(0, 3)}
    empty |= {"opacities": torch.zeros(0), "colors": torch.zeros(0, 3)}
    p = leaf(empty)
    bg = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], requires_grad=True)
    out = render(p, cams([0.0, 90.0], 19, 21), background=bg, backend=backend)
    assert out.rgb.shape == (2, 21, 19, 3) and out.alpha.shape == (2, 21, 19, 1) and out.depth.shape == (2, 21, 19, 1)
    assert torch.equal(out.rgb, bg.detach()[:, None, None, :].expand(2, 21, 19, 3))
    assert (out.alpha == 0).all() and (out.depth == 0).all()
    (out.rgb.sum() + out.alpha.sum() + out.depth.sum()).backward()
    assert torch.allclose(bg.grad, torch.full((2, 3), 19.0 * 21.0))
    assert all(v.shape == (0, *v.shape[1:]) for v in grads(p).values())


def test_everything_behind_the_camera():
    scene = random_scene(30, seed=4)
    scene["means"] = scene["means"] * 0.1 + torch.tensor([0.0, 0.0, 6.0])
    p = leaf(scene)
    out = render(p, cams([0.0], 16, 16, elevation=0.0), backend="cpu")
    assert (out.alpha == 0).all() and (out.rgb == 0).all()
    out.rgb.sum().backward()
    assert all((v == 0).all() for v in grads(p).values())


def test_background_broadcast_and_gradient():
    scene = random_scene(60, seed=8)
    cameras = cams([0.0, 70.0], 20, 18)
    bg3 = torch.tensor([0.3, 0.6, 0.9], requires_grad=True)
    out3 = render(leaf(scene), cameras, background=bg3, backend="cpu")
    out_c3 = render(leaf(scene), cameras, background=bg3.detach().expand(2, 3).clone(), backend="cpu")
    black = render(leaf(scene), cameras, backend="cpu")
    assert torch.allclose(out3.rgb, out_c3.rgb)
    # Premultiplied over black; the background fills what alpha leaves.
    assert torch.allclose(out3.rgb, black.rgb + (1 - black.alpha) * bg3.detach(), atol=1e-6)
    out3.rgb.sum().backward()
    assert torch.allclose(bg3.grad, (1 - black.alpha).sum((0, 1, 2)).expand(3), rtol=1e-5)


def test_depth_is_expected_depth():
    one = {
        "means": torch.tensor([[0.0, 0.0, 0.5]]),
        "quats": torch.tensor([[1.0, 0.0, 0.0, 0.0]]),
        "scales": torch.full((1, 3), 0.2),
        "opacities": torch.tensor([0.8]),
        "colors": torch.tensor([[1.0, 0.5, 0.0]]),
    }
    out = render(one, cams([0.0], 25, 25, elevation=0.0), backend="cpu")  # a pixel centre on the mean
    hit = out.alpha[..., 0] > 0
    assert hit.sum() > 20
    assert torch.allclose(out.depth[..., 0][hit], torch.tensor(2.5), atol=1e-5)  # camera at z = 3
    assert (out.depth[..., 0][~hit] == 0).all()
    assert abs(out.alpha.max().item() - 0.8) < 1e-6


def test_quaternions_need_not_be_normalised_and_float64_agrees():
    scene = random_scene(50, seed=9)
    cameras = cams([0.0], 25, 25)
    a = render(scene, cameras, backend="cpu")
    scaled = dict(scene, quats=scene["quats"] * 3.7)
    b = render(scaled, cameras, backend="cpu")
    assert torch.allclose(a.rgb, b.rgb, atol=1e-5)
    c = render({k: v.double() for k, v in scene.items()}, cameras, backend="cpu")
    assert c.rgb.dtype == torch.float64
    assert torch.allclose(a.rgb.double(), c.rgb, atol=1e-4)


def test_info_and_rasterize_gaussians_signature():
    scene = random_scene(30, seed=10)
    cameras = cams([0.0, 120.0], 21, 19)
    p = leaf(scene)
    out = rasterize_gaussians(
        p["means"], p["quats"], p["scales"], p["opacities"], p["colors"], cameras.viewmats, cameras.Ks, 21, 19
    )
    assert out.info["backend"] == "cpu"  # auto on CPU tensors
    assert out.info["radii"].shape == (2, 30, 2) and out.info["radii"].dtype == torch.int32
    assert out.info["means2d"].shape == (2, 30, 2)
    assert out.info["n_isects"] > 0
    out.info["means2d"].retain_grad()
    out.rgb.sum().backward()
    assert out.info["means2d"].grad.abs().sum() > 0  # screen-space gradients for densification


def _base_args():
    s = random_scene(4, seed=0)
    c = cams([0.0], 8, 8)
    return dict(
        means=s["means"], quats=s["quats"], scales=s["scales"], opacities=s["opacities"], colors=s["colors"],
        viewmats=c.viewmats, Ks=c.Ks, width=8, height=8,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"means": torch.zeros(4, 2)}, "means must be"),
        ({"quats": torch.zeros(3, 4)}, "quats must be"),
        ({"scales": torch.zeros(4, 3, 1)}, "scales must be"),
        ({"opacities": torch.zeros(4, 1)}, "opacities must be"),
        ({"colors": torch.zeros(4, 4)}, "colors must be"),
        ({"colors": torch.zeros(4, 3, 3), "sh_degree": 1}, "colors must be"),
        ({"sh_degree": 9}, "sh_degree"),
        ({"means": torch.zeros(4, 3, dtype=torch.int64)}, "float32 or float64"),
        ({"means": torch.zeros(4, 3, dtype=torch.float64)}, "share one dtype"),
        ({"viewmats": torch.zeros(1, 3, 4)}, "viewmats must be"),
        ({"viewmats": torch.zeros(0, 4, 4)}, "viewmats must be"),
        ({"Ks": torch.zeros(2, 3, 3)}, "Ks must be"),
        ({"width": 0}, "image size must be positive"),
        ({"height": -3}, "image size must be positive"),
        ({"width": 8.0}, "must be ints"),
        ({"background": torch.zeros(4)}, "background must be"),
        ({"backend": "vulkan"}, "backend must be"),
        ({"backend": "gsplat"}, "needs CUDA"),
        ({"near_plane": 0.0}, "near_plane"),
        ({"means": [[0.0, 0.0, 0.0]] * 4}, "torch.Tensor"),
        ({"means": torch.zeros(4, 3, device="meta")}, "one device"),
    ],
)
def test_validation_errors(change, message):
    args = _base_args() | change
    with pytest.raises(ValueError, match=message):
        rasterize_gaussians(**args)


def test_cameras_helper_matches_explicit_call():
    scene = random_scene(40, seed=12)
    eye = torch.tensor([0.5, 0.4, 2.8])
    cameras = Cameras(look_at_w2c(eye)[None], intrinsics(30.0, 27, 22)[None], 27, 22)
    a = render(scene, cameras, backend="cpu")
    b = rasterize_gaussians(*(scene[k] for k in PARAMS), cameras.viewmats, cameras.Ks, 27, 22, backend="cpu")
    assert torch.equal(a.rgb, b.rgb) and torch.equal(a.depth, b.depth)


@pytest.mark.slow
def test_bench_scene_matches_reference():
    from pla4d.bench_raster import make_scene

    scene = make_scene(3000, seed=3)
    cameras = cams([0.0, 120.0], 64, 64)
    amb = ambiguous_pixels(render(scene, cameras, backend="cpu"), scene["opacities"])
    w = tuple(torch.where(amb, 0.0, x) for x in loss_weights(2, 64, 64, torch.float32))
    res = {}
    for backend in ("cpu", "reference"):
        p = leaf(scene)
        out = render(p, cameras, backend=backend)
        weighted_loss(out.rgb, out.alpha, out.depth, w).backward()
        res[backend] = (out, grads(p))
    (a, ga), (b, gb) = res["cpu"], res["reference"]
    assert torch.where(amb, 0.0, a.rgb - b.rgb).abs().max() <= 1e-4
    for k in PARAMS:
        assert_close_rel(ga[k], gb[k], 1e-3, k)


def test_in_place_change_before_backward_is_an_error():
    torch.manual_seed(0)
    n = 50
    means = (torch.randn(n, 3) * 0.3).requires_grad_()
    quats = torch.randn(n, 4).requires_grad_()
    scales = torch.full((n, 3), 0.05).requires_grad_()
    opacities = torch.full((n,), 0.7).requires_grad_()
    colors = torch.rand(n, 3).requires_grad_()
    cams = orbit_cameras([0.0], 0.0, 3.0, 49.1, 32)
    out = rasterize_gaussians(means, quats, scales, opacities, colors, cams.viewmats, cams.Ks, 32, 32, backend="cpu")
    with torch.no_grad():
        colors.add_(0.1)  # what an optimizer step does
    with pytest.raises(RuntimeError, match="inplace"):
        out.rgb.sum().backward()
