import json

import pytest
import torch

from pla4d.cameras import front_camera, orbit_cameras
from pla4d.config import PRESETS, get_preset
from pla4d.errors import Cancelled
from pla4d.example.clip import creature_mesh
from pla4d.example.creature import animate_creature
from pla4d.gaussians.init import gaussians_from_mesh
from pla4d.gaussians.model import GaussianModel
from pla4d.render.mesh import render_mesh
from pla4d.stages.densify import GradientStats, densify_and_prune
from pla4d.stages.static3d import (
    frame_target,
    lambda_at,
    resolution_at,
    train_static,
)


def test_paper_schedules():
    cfg = get_preset("paper").static
    assert cfg.iterations == 1000 and cfg.batch_views == 6
    assert lambda_at(cfg, 0) == pytest.approx(0.98)
    assert lambda_at(cfg, cfg.iterations - 1) == pytest.approx(0.02)
    assert [resolution_at(cfg, i) for i in (0, 499, 500, 699, 700, 999)] == [128, 128, 256, 256, 512, 512]
    assert get_preset("paper").focal.init_fov_deg == pytest.approx(49.1)


def test_presets_print_and_validate():
    for name, preset in PRESETS.items():
        assert json.loads(preset.to_json())["name"] == name
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("ultra")
    with pytest.raises(ValueError, match="unknown static settings"):
        get_preset("draft").replace_static(iterationz=3)
    assert get_preset("draft").replace_static(iterations=7).static.iterations == 7


def _tiny_model(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return GaussianModel.from_activated(
        torch.randn(n, 3, generator=g) * 0.3,
        torch.randn(n, 4, generator=g),
        torch.full((n, 3), 0.02),
        torch.full((n,), 0.5),
        torch.rand(n, 3, generator=g),
    )


def test_densify_keeps_adam_state_and_all_parameters_aligned():
    model = _tiny_model()
    groups = [{"params": [getattr(model, k)], "lr": 1e-3, "name": k} for k in ("means", "log_scales", "sh0")]
    groups += [{"params": [model.quats], "lr": 1e-3, "name": "quats"}]
    groups += [{"params": [model.opacity_logits], "lr": 1e-3, "name": "opacity_logits"}]
    opt = torch.optim.Adam(groups)
    (model.means.sum() + model.sh0.sum() + model.log_scales.sum() + model.quats.sum()
     + model.opacity_logits.sum()).backward()  # fmt: skip
    opt.step()
    before = opt.state[model.means]["exp_avg"].clone()
    with torch.no_grad():
        model.log_scales[:4] = torch.log(torch.tensor(0.2))  # large: these split
        model.opacity_logits[10:12] = -10.0  # transparent: pruned
    stats = GradientStats.zeros(64, torch.device("cpu"))
    stats.grad_sum[:8] = 1.0  # 0..3 split (large), 4..7 clone (small)
    stats.count[:] = 1.0
    result = densify_and_prune(model, opt, stats, 0.5, 0.05, 0.01, 10_000)
    assert (result.cloned, result.split, result.pruned) == (4, 4, 2)
    n = 64 - 4 - 2 + 4 + 8
    assert result.total == n
    for name, param in model.named_parameters():
        assert param.shape[0] == n, name
    # Survivors keep their moments; new Gaussians start from zero; the optimizer holds the new tensors.
    state = opt.state[model.means]["exp_avg"]
    survivors = [i for i in range(64) if i not in (0, 1, 2, 3, 10, 11)]
    assert torch.equal(state[: len(survivors)], before[survivors])
    assert state[len(survivors) :].abs().sum() == 0
    assert opt.param_groups[0]["params"][0] is model.means
    # Split children are smaller than their parents.
    assert model.log_scales[-8:].exp().max() < 0.2


def test_frame_target_composites_and_resizes():
    frame = torch.zeros(64, 64, 4)
    frame[16:48, 16:48] = torch.tensor([1.0, 0.0, 0.0, 1.0])
    rgb, alpha = frame_target(frame, 32)
    assert rgb.shape == (32, 32, 3) and alpha.shape == (32, 32, 1)
    assert torch.allclose(rgb[0, 0], torch.zeros(3)) and torch.allclose(rgb[16, 16], torch.tensor([1.0, 0, 0]))
    assert alpha.mean() == pytest.approx(0.25, abs=0.02)


def test_training_fits_the_front_view_and_mesh_views():
    anim = animate_creature(2)
    mesh = creature_mesh(anim, 0)
    cfg = get_preset("draft").replace_static(
        iterations=40, resolutions=(48,), resolution_steps=(), num_gaussians=3000, view_pool=8, batch_views=2,
        densify_from=0.2, densify_until=0.8, densify_every=10,
    ).static  # fmt: skip
    front = front_camera(3.0, 40.0, 96, 96)
    frame = render_mesh(mesh, front, supersample=2)
    straight = torch.where(frame.alpha > 0, frame.rgb / frame.alpha.clamp_min(1e-8), 0.0)
    frame_rgba = torch.cat([straight[0], frame.alpha[0]], -1)
    records = []
    result = train_static(
        mesh, frame_rgba, front, cfg, 3.0, perceptual=None, on_iteration=lambda r, m: records.append(r)
    )
    assert len(records) == 40 and len(result.history) == 40
    assert {"init_s", "train_s"} <= set(result.timings)
    assert all(p.shape[0] == result.model.num_gaussians for p in result.model.parameters())

    def errors(model):
        # Front view against the frame, and a side view against the mesh, both over a fixed grey.
        grey = torch.full((3,), 0.5)
        side = front_camera(3.0, 40.0, 96, 96)
        side = type(side)(orbit_cameras([70.0], 10.0, 3.0, 40.0, 96).viewmats, side.Ks, 96, 96)
        out = []
        for cam, (rgb, alpha) in ((front, (frame.rgb, frame.alpha)), (side, (None, None))):
            if alpha is None:
                ref = render_mesh(mesh, side, supersample=2)
                rgb, alpha = ref.rgb, ref.alpha
            with torch.no_grad():
                r = model.render(cam, background=grey)
            target = rgb + (1 - alpha) * grey
            out.append(float(((r.rgb - target) ** 2).mean() + ((r.alpha - alpha) ** 2).mean()))
        return out

    before = errors(gaussians_from_mesh(mesh, n=cfg.num_gaussians, seed=0))
    after = errors(result.model)
    assert after[0] < 0.6 * before[0]  # texture alignment: the front view fits frame 1
    assert after[1] < 0.8 * before[1]  # GS-mesh contrastive learning: an unseen side view fits the mesh


def test_cancel_stops_between_iterations():
    mesh = creature_mesh(animate_creature(1), 0)
    cfg = get_preset("draft").replace_static(iterations=50, resolutions=(32,), resolution_steps=(), num_gaussians=500)
    front = front_camera(3.0, 40.0, 32, 32)
    frame = torch.zeros(32, 32, 4)
    frame[8:24, 8:24] = 1.0
    seen = []
    with pytest.raises(Cancelled):
        train_static(mesh, frame, front, cfg.static, 3.0, on_iteration=lambda r, m: seen.append(r),
                     should_cancel=lambda: len(seen) >= 3)  # fmt: skip
    assert len(seen) == 3


def test_bad_settings():
    anim = animate_creature(1)
    mesh = creature_mesh(anim, 0)
    front = front_camera(3.0, 40.0, 32, 32)
    with pytest.raises(ValueError):
        train_static(mesh, torch.zeros(32, 32, 4), front, get_preset("draft").replace_static(iterations=0).static, 3.0)
