import pytest
import torch

from pla4d.cameras import orbit_cameras
from pla4d.config import PRESETS, MotionConfig, get_preset
from pla4d.errors import Cancelled
from pla4d.example.clip import creature_mesh, render_example_frames
from pla4d.example.creature import animate_creature
from pla4d.gaussians.init import gaussians_from_mesh
from pla4d.metrics import psnr
from pla4d.stages.motion4d import frames_reached, lambda_at, render_deformed, resolution_at, train_motion
from pla4d.stages.motion_sampling import MotionSampler, returns_to_start

SIZE = 80


@pytest.fixture(scope="module")
def creature():
    anim = animate_creature(4, cycles=0.5)
    front = orbit_cameras([0.0], 0.0, 3.0, 40.0, SIZE)
    frames = torch.from_numpy(render_example_frames(anim, front, supersample=1))[:, 0]
    model = gaussians_from_mesh(creature_mesh(anim, 0), n=2500, seed=0)
    return model, frames, front


def _cfg(**kw):
    base = dict(
        iterations=60,
        epochs=None,
        batch_frames=2,
        resolutions=(SIZE,),
        resolution_steps=(),
        channels=8,
        spatial_resolutions=(16, 32),
        view_pool=6,
        lr_grid=0.1,
        lr_mlp=1e-2,
    )
    return MotionConfig(**{**base, **kw})


def _front_psnr(model, frames, front, field=None):
    out = []
    for i in range(len(frames)):
        with torch.no_grad():
            if field is None:
                r = model.render(front, background=torch.ones(3))
            else:
                r = render_deformed(field, model, i / (len(frames) - 1), front, torch.ones(3))
        gt = frames[i, ..., :3] * frames[i, ..., 3:] + 1 - frames[i, ..., 3:]
        out.append(psnr(r.rgb[0], gt))
    return out


def test_paper_and_preset_schedules():
    paper = get_preset("paper").motion
    assert paper.epochs == 65 and paper.batch_frames == 6
    assert paper.total_iterations(8) == 65 * 2
    assert lambda_at(paper, 0, 100) == pytest.approx(0.5)
    assert lambda_at(paper, 99, 100) == pytest.approx(0.02)
    assert [resolution_at(paper, i, 100) for i in (0, 49, 50, 70)] == [128, 128, 256, 512]
    for preset in PRESETS.values():
        assert preset.motion.first_frame_consistency and not preset.motion.train_canonical
        assert preset.to_dict()["motion"]["lambda_start"] == 0.5
    with pytest.raises(ValueError, match="unknown motion settings"):
        get_preset("draft").replace_motion(iterationz=3)


def test_training_follows_the_motion(creature):
    model, frames, front = creature
    before = _front_psnr(model, frames, front)
    canonical_means = model.means.detach().clone()
    result = train_motion(model, frames, front, _cfg(frame_curriculum=0.0), seed=0)  # the paper's sampling
    after = _front_psnr(model, frames, front, result.field)
    moved = [a - b for a, b in zip(after[1:], before[1:], strict=True)]
    assert min(moved) > 2.0, (before, after)  # every moving frame gets clearly closer
    assert after[0] > before[0] - 0.5  # the first frame stays the static model
    assert torch.equal(model.means, canonical_means)  # only the field trained
    assert len(result.history) == 60 and "consistency_mse" in result.history[0]
    assert result.timings["train_s"] > 0


def test_frame_curriculum_grows_from_the_first_frames_and_still_follows_the_motion(creature):
    reached = [frames_reached(0.5, i, 100, 17) for i in range(100)]
    assert reached[0] == 2 and reached[50:] == [17] * 50
    assert all(b >= a for a, b in zip(reached, reached[1:], strict=False))
    assert frames_reached(0.0, 0, 100, 17) == 17

    # Seen across its mirror plane, the creature's depth prior is used, and with it the curriculum.
    model, _, _ = creature
    oblique = orbit_cameras([50.0], 0.0, 3.0, 40.0, SIZE)
    frames = torch.from_numpy(render_example_frames(animate_creature(4, cycles=0.5), oblique, supersample=1))[:, 0]
    before = _front_psnr(model, frames, oblique)
    seen: list[int] = []
    cfg = _cfg(frame_curriculum=0.5)
    result = train_motion(model, frames, oblique, cfg, seed=0, on_iteration=lambda r, f: seen.append(r["iteration"]))
    assert result.field.depth_lift is not None and result.frame_curriculum == 0.5
    after = _front_psnr(model, frames, oblique, result.field)
    # Every moving frame gets clearly closer (measured +1.4 to +1.8 dB in 60 iterations).
    assert min(a - b for a, b in zip(after[1:], before[1:], strict=True)) > 1.0, (before, after)
    assert len(seen) == 60
    # Without a depth prior or the depth anchor it does not run: held motion would hold the unseen depth too.
    plain = train_motion(
        model, frames, oblique, _cfg(frame_curriculum=0.5, mirror_prior=False, depth_anchor_weight=0.0, iterations=2)
    )
    assert plain.field.depth_lift is None and plain.frame_curriculum == 0.0


def test_ablation_guidance_hook_and_cancel(creature):
    model, frames, front = creature
    result = train_motion(model, frames, front, _cfg(iterations=2, first_frame_consistency=False))
    assert "consistency_mse" not in result.history[0]

    calls = []

    def guidance(rendered, reference, info):
        calls.append((rendered.shape, reference.shape, info))
        return ((rendered - reference) ** 2).mean()

    result = train_motion(model, frames, front, _cfg(iterations=2, guidance_views=2), guidance=guidance)
    assert len(calls) == 2 and result.guidance_used
    shape, ref_shape, info = calls[0]
    assert shape == ref_shape == (2, 3, SIZE, SIZE)
    assert len(info["azimuth_deg"]) == 2 and len(info["times"]) == 2 and len(info["cameras"]) == 2
    assert "guidance" in result.history[0]

    seen = []
    with pytest.raises(Cancelled):
        train_motion(
            model, frames, front, _cfg(iterations=10), on_iteration=lambda r, f: seen.append(r),
            should_cancel=lambda: len(seen) >= 3,
        )  # fmt: skip
    assert len(seen) == 3


def test_mirror_prior_finds_the_creatures_plane_and_keeps_it_in_the_field(creature):
    model, frames, front = creature
    result = train_motion(model, frames, front, _cfg(iterations=2, mirror_prior=True))
    plane = result.mirror_plane
    assert plane is not None and abs(plane.normal[0]) > 0.99  # the creature faces the camera: its plane is x = c
    assert result.field.depth_lift is None  # seen edge-on the plane sets no depth
    oblique = orbit_cameras([50.0], 0.0, 3.0, 40.0, SIZE)  # the same shape seen across its plane
    result = train_motion(model, frames, oblique, _cfg(iterations=2, mirror_prior=True))
    assert result.field.config()["depth_lift"]["normal"] == list(result.mirror_plane.normal)
    assert result.field.config()["depth_lift"]["eye"] == pytest.approx(oblique.centers()[0].tolist(), abs=1e-5)
    off = train_motion(model, frames, front, _cfg(iterations=2, mirror_prior=False))
    assert off.mirror_plane is None and off.field.depth_lift is None


def test_joint_fine_tune_moves_the_canonical_model(creature):
    model, frames, front = creature
    copy = model.clone()
    train_motion(copy, frames, front, _cfg(iterations=3, train_canonical=True))
    assert not torch.equal(copy.means, model.means)


def test_rigidity_is_zero_for_rigid_motion_and_positive_for_scattering():
    from pla4d.stages.motion4d import knn_pairs, rigidity_loss

    pts = torch.rand(300, 3)
    neighbours, rest = knn_pairs(pts, 6, chunk=64)
    assert neighbours.shape == (300, 6) and not bool((neighbours == torch.arange(300)[:, None]).any())
    angle = torch.tensor(0.7)
    rot = torch.tensor([[angle.cos(), -angle.sin(), 0.0], [angle.sin(), angle.cos(), 0.0], [0.0, 0.0, 1.0]])
    moved = (pts @ rot.T + torch.tensor([0.3, -0.1, 0.2]))[None]
    assert float(rigidity_loss(moved, neighbours, rest)) < 1e-10
    scattered = moved + torch.randn_like(moved) * 0.05
    assert float(rigidity_loss(scattered, neighbours, rest)) > 1e-4


def test_curriculum_from_both_ends_reaches_the_last_frame_first_and_meets_in_the_middle():
    cfg = MotionConfig(batch_frames=3)
    sampler = MotionSampler(cfg, 9, 100, 0.5, None, torch.Generator().manual_seed(0), False, False, both_ends=True)
    assert sampler.reached_frames() == [0, 8]
    assert sorted(sampler.draw(0).frames) == [0, 8]
    sampler.reached = 5
    assert sampler.reached_frames() == [0, 1, 2, 7, 8]
    drawn = sampler.draw(1).frames
    assert drawn[:2] == [2, 7] and len(drawn) == 3  # the newest from each end first
    sampler.reached = 9
    assert sampler.reached_frames() == list(range(9))


def test_a_clip_back_at_its_first_pose_is_told_from_one_that_is_not():
    frames = torch.zeros(8, 16, 16, 4)
    for i in range(8):
        frames[i, :, : 2 + min(i, 7 - i) * 2, :] = 1.0  # a bar that grows and shrinks back
    assert returns_to_start(frames, 0.15)
    growing = torch.zeros(8, 16, 16, 4)
    for i in range(8):
        growing[i, :, : 2 + i * 2, :] = 1.0
    assert not returns_to_start(growing, 0.15)


def test_depth_anchor_charges_motion_along_the_input_rays_only(creature):
    from pla4d.stages.motion_losses import DeformedBatch, DepthAnchor
    from pla4d.stages.motion_sampling import MotionBatch

    model, _, front = creature
    eye = front.centers()[0]
    anchor = DepthAnchor(model, eye, weight=2.0)
    rays = torch.nn.functional.normalize(model.means.detach() - eye, dim=-1)
    across = torch.linalg.cross(rays, torch.tensor([0.3, 1.0, 0.2]).expand_as(rays))  # perpendicular to each ray
    ones = torch.ones(1, model.num_gaussians)
    batch = MotionBatch(frames=[1], times=[0.5])

    def charged(displacement):
        moved = DeformedBatch((model.means.detach() + displacement)[None], ones, ones, ones)
        return float(anchor.loss(model, moved, batch)[0].detach())

    assert charged(0.1 * across) == pytest.approx(0.0, abs=1e-9)
    assert charged(0.1 * rays) == pytest.approx(2.0 * 0.01, rel=1e-4)
    assert charged(0.1 * across + 0.1 * rays) == pytest.approx(2.0 * 0.01, rel=1e-4)


def test_depth_anchor_holds_the_unseen_depth_where_the_prior_does_not(creature):
    model, frames, front = creature  # seen from the front: the mirror plane is edge-on and sets no depth
    rays = torch.nn.functional.normalize(model.means - front.centers()[0], dim=-1)

    def depth_motion(result):
        with torch.no_grad():
            d = result.field(model.means, torch.linspace(0, 1, len(frames))).d_means
        return float(((d * rays).sum(-1) ** 2).mean())

    free = train_motion(
        model, frames, front, _cfg(frame_curriculum=0.5, curriculum_needs_prior=False, depth_anchor_weight=0.0), seed=0
    )
    held = train_motion(model, frames, front, _cfg(frame_curriculum=0.5, depth_anchor_weight=10.0), seed=0)
    assert held.field.depth_lift is None and held.frame_curriculum == 0.5  # the anchor lets the curriculum run
    assert "depth_anchor" in held.history[-1] and "depth_anchor" not in free.history[-1]
    assert depth_motion(held) < 0.5 * depth_motion(free), (depth_motion(held), depth_motion(free))
    assert min(_front_psnr(model, frames, front, held.field)[1:]) > min(_front_psnr(model, frames, front)[1:]) + 1.0
    # Where the prior sets the depth, the anchor is not used; nor where no plane is found (measured to lose there).
    oblique = orbit_cameras([50.0], 0.0, 3.0, 40.0, SIZE)
    lifted = train_motion(model, frames, oblique, _cfg(iterations=2, depth_anchor_weight=10.0))
    assert lifted.field.depth_lift is not None and "depth_anchor" not in lifted.history[-1]
    planeless = train_motion(model, frames, front, _cfg(iterations=2, depth_anchor_weight=10.0, mirror_min_inliers=1.0))
    assert planeless.mirror_plane is None and "depth_anchor" not in planeless.history[-1]
    assert planeless.frame_curriculum == 0.0
