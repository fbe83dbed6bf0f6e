"""The video's point tracks (pla4d/losses/tracks.py): flow, chaining, and the loss on the Gaussians' centres."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from pla4d.cameras import front_camera
from pla4d.losses.tracks import (
    TrackLoss,
    chain_tracks,
    frame_alphas,
    project_points,
    step_validity,
    video_flows,
)

pytest.importorskip("skimage")


def _moving_blob(shift: tuple[float, float], steps: int = 4, size: int = 64) -> torch.Tensor:
    """(steps, size, size, 4) frames of a textured disc moved by ``shift`` (x, y) pixels a frame."""
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    frames = []
    for t in range(steps):
        cx, cy = 24 + shift[0] * t, 30 + shift[1] * t
        r = ((xs - cx) ** 2 + (ys - cy) ** 2).sqrt()
        alpha = (r < 12).float()
        texture = 0.5 + 0.25 * torch.sin((xs - cx) * 0.7) * torch.cos((ys - cy) * 0.5)
        frames.append(torch.stack([texture, texture, texture, alpha], -1))
    return torch.stack(frames)


def test_flow_and_tracks_follow_a_moving_disc() -> None:
    video = _moving_blob((1.5, -1.0))
    forward, backward = video_flows(video, 64, "ilk")
    assert forward.shape == (3, 64, 64, 2)
    tracks, valid = chain_tracks(forward, backward, frame_alphas(video, 64))
    # The disc's centre pixel at frame 0, followed to frame 3: moved by 3 * (1.5, -1.0).
    inner = valid[3, 26:34, 20:28]
    assert inner.float().mean() > 0.9
    moved = (tracks[3, 26:34, 20:28] - tracks[0, 26:34, 20:28])[inner].mean(0)
    assert torch.allclose(moved, torch.tensor([4.5, -3.0]), atol=0.5), moved
    # Background pixels carry no track.
    assert not valid[:, :5, :5].any()


def test_tracks_die_where_the_flow_leaves_the_object() -> None:
    size = 16
    forward = torch.zeros(2, size, size, 2)
    forward[..., 0] = 4.0  # everything moves 4 px to the right a frame
    backward = -forward
    alphas = torch.zeros(3, size, size)
    alphas[:, :, :12] = 1.0  # but the object covers only x < 12
    tracks, valid = chain_tracks(forward, backward, alphas)
    assert valid[0, 0, 2] and valid[1, 0, 2] and valid[2, 0, 2]  # x 2.5 -> 6.5 -> 10.5
    assert valid[1, 0, 6] and not valid[2, 0, 6]  # x 6.5 -> 10.5 -> 14.5, off the object
    assert torch.allclose(tracks[2, 0, 2], torch.tensor([10.5, 0.5]))
    # A forward-backward mismatch (an occlusion) ends the track too.
    backward[1] += 2.0
    _, valid = chain_tracks(forward, backward, alphas)
    assert valid[1, 0, 2] and not valid[2, 0, 2]


def test_track_loss_pulls_seen_centres_onto_their_tracks() -> None:
    camera = front_camera(radius=3.0, width=32)
    # Three points in front of a far backdrop: two on the surface the render shows, one behind it.
    means0 = torch.tensor([[0.0, 0.0, 0.0], [0.2, 0.1, 0.0], [0.0, 0.0, -0.5]])
    uv0, z0 = project_points(means0, camera)
    depth = torch.full((32, 32), float(z0[0]))
    alpha = torch.ones(32, 32)
    ys, xs = torch.meshgrid(torch.arange(32) + 0.5, torch.arange(32) + 0.5, indexing="ij")
    grid = torch.stack([xs, ys], -1)
    tracks = torch.stack([grid, grid + torch.tensor([3.0, 0.0])])  # frame 1: everything 3 px right
    valid = torch.ones(2, 32, 32, dtype=torch.bool)
    loss = TrackLoss(means0, torch.ones(3), depth, alpha, camera, tracks, valid, weight=1.0)
    assert loss.count == 2  # the point behind the surface is not tracked
    means = means0[None].clone().requires_grad_(True)
    term, figures = loss.loss(means, [1])
    assert math.isclose(figures["track_px"], 3.0, rel_tol=1e-3)
    term.backward()
    # The seen points are pulled along +x (world x maps to image x here), the hidden one not at all.
    sign = 1.0 if project_points(means0 + torch.tensor([0.01, 0, 0]), camera)[0][0, 0] > uv0[0, 0] else -1.0
    assert (means.grad[0, :2, 0] * sign < 0).all()
    assert means.grad[0, 2].abs().sum() == 0
    moved = means0.clone()
    at_target = torch.stack([moved[:2] + torch.tensor([3.0 * float(z0[0]) / float(camera.Ks[0, 0, 0]) * sign, 0, 0])])
    term, figures = loss.loss(torch.cat([at_target, means0[None, 2:]], 1), [1])
    assert figures["track_px"] < 0.05
    # Stepwise: frame 1's target is the pose at frame 0 (here the canonical one) moved by one flow step.
    forward = torch.zeros(1, 32, 32, 2)
    forward[..., 0] = 3.0
    step = TrackLoss(means0, torch.ones(3), depth, alpha, camera, tracks, valid, weight=1.0, step_flow=forward,
                     step_valid=torch.ones(1, 32, 32, dtype=torch.bool))  # fmt: skip
    still = lambda points, frames: points[None].expand(len(frames), -1, -1)  # noqa: E731
    _, figures = step.loss(means0[None], [1], before=still)
    assert math.isclose(figures["track_px"], 3.0, rel_tol=1e-3)
    _, figures = step.loss(means0[None], [0], before=still)
    assert figures["track_px"] < 1e-3


def test_step_validity_drops_occlusions_and_steps_off_the_object() -> None:
    forward = torch.zeros(1, 8, 8, 2)
    forward[..., 0] = 2.0
    backward = -forward.clone()
    backward[0, :, 6:] = 0.0  # pixels landing at x >= 6 do not come back: an occlusion
    alphas = torch.ones(2, 8, 8)
    alphas[1, :, :2] = 0.0
    ok = step_validity(forward, backward, alphas)
    assert ok[0, 0, 0] and ok[0, 0, 3] and not ok[0, 0, 5]


def test_motion_stage_trains_with_the_tracks() -> None:
    from pla4d.cameras import orbit_cameras
    from pla4d.config import MotionConfig
    from pla4d.example.clip import creature_mesh, render_example_frames
    from pla4d.example.creature import animate_creature
    from pla4d.gaussians.init import gaussians_from_mesh
    from pla4d.stages.motion4d import train_motion

    anim = animate_creature(4, cycles=0.5)
    front = orbit_cameras([0.0], 0.0, 3.0, 40.0, 64)
    frames = torch.from_numpy(render_example_frames(anim, front, supersample=1))[:, 0]
    model = gaussians_from_mesh(creature_mesh(anim, 0), n=1500, seed=0)
    cfg = MotionConfig(iterations=3, epochs=None, batch_frames=2, resolutions=(64,), resolution_steps=(), channels=4,
                       spatial_resolutions=(8, 16), view_pool=4, track_weight=1.0, track_size=64)  # fmt: skip
    result = train_motion(model, frames, front, cfg, seed=0)
    assert all(math.isfinite(r["track_px"]) for r in result.history)
    assert any(r["track_px"] > 0 for r in result.history)  # some frame away from 0 was drawn and tracked
    result = train_motion(model, frames, front, dataclasses.replace(cfg, track_mode="step"), seed=0)
    assert all(math.isfinite(r["track_px"]) for r in result.history)
