import json
import math

import pytest
import torch

from pla4d.cameras import (
    Cameras,
    focal_from_fov,
    fov_from_focal,
    front_camera,
    look_at_w2c,
    orbit_cameras,
    orbit_position,
)


def test_front_camera_sits_on_plus_z_looking_at_origin():
    cam = front_camera(radius=3.0, width=64)
    assert torch.allclose(cam.centers()[0], torch.tensor([0.0, 0.0, 3.0]), atol=1e-6)
    # The origin projects to the image centre, +X to the right and +Y (up) towards smaller row indices.
    origin = cam.viewmats[0] @ torch.tensor([0.0, 0.0, 0.0, 1.0])
    assert origin[2] == pytest.approx(3.0)
    for point, check in (
        ([0.5, 0, 0], lambda u, v: u > 32 and abs(v - 32) < 1e-4),
        ([0, 0.5, 0], lambda u, v: v < 32 and abs(u - 32) < 1e-4),
    ):
        p = cam.viewmats[0] @ torch.tensor([*point, 1.0])
        uv = cam.Ks[0] @ p[:3]
        assert check(float(uv[0] / uv[2]), float(uv[1] / uv[2]))


def test_orbit_rotation_is_orthonormal_and_right_handed():
    cams = orbit_cameras([0, 37, 90, 200, 359], [0, 20, -30, 60, 89.9], radius=2.5, width=32)
    rot = cams.viewmats[:, :3, :3]
    eye = torch.eye(3).expand_as(rot)
    assert torch.allclose(rot @ rot.transpose(1, 2), eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(5), atol=1e-5)
    assert torch.allclose(cams.centers().norm(dim=1), torch.full((5,), 2.5), atol=1e-5)
    # Every camera looks at the origin: the origin lies on the optical axis.
    origin_cam = cams.viewmats[:, :3, 3]
    assert torch.allclose(origin_cam[:, :2], torch.zeros(5, 2), atol=1e-5)


def test_orbit_matches_position_formula():
    az, el, r = 45.0, 20.0, 3.0
    expected = torch.tensor(
        [
            r * math.sin(math.radians(az)) * math.cos(math.radians(el)),
            r * math.sin(math.radians(el)),
            r * math.cos(math.radians(az)) * math.cos(math.radians(el)),
        ]
    )
    assert torch.allclose(orbit_position(az, el, r), expected, atol=1e-6)
    assert torch.allclose(orbit_cameras([az], el, r, width=16).centers()[0], expected, atol=1e-5)


def test_straight_down_view_is_well_defined():
    w2c = look_at_w2c(torch.tensor([0.0, 3.0, 0.0]))
    assert torch.isfinite(w2c).all()
    assert torch.allclose(w2c[:3, :3] @ w2c[:3, :3].T, torch.eye(3), atol=1e-6)


def test_focal_fov_round_trip_and_errors():
    assert fov_from_focal(focal_from_fov(49.1, 512), 512) == pytest.approx(49.1)
    with pytest.raises(ValueError):
        focal_from_fov(0.0, 64)
    with pytest.raises(ValueError):
        fov_from_focal(-1.0, 64)


def test_cameras_batch_helpers():
    cams = orbit_cameras([0, 90, 180], 0.0, width=64)
    assert len(cams) == 3 and len(cams[1]) == 1 and len(cams[-1]) == 1
    assert torch.equal(cams[-1].viewmats, cams.viewmats[2:])
    half = cams.scaled(0.5)
    assert (half.width, half.height) == (32, 32)
    assert torch.allclose(half.Ks[:, 0, 0], cams.Ks[:, 0, 0] / 2)
    assert len(Cameras.cat([cams, cams[0]])) == 4
    with pytest.raises(ValueError):
        Cameras.cat([cams, orbit_cameras([0], width=16)])
    with pytest.raises(ValueError):
        Cameras(torch.eye(4), torch.eye(3), 4, 4)


def test_matches_every_benchmark_camera(clips):
    for clip in clips:
        meta = json.loads((clip / "cameras.json").read_text())
        width, height = meta["resolution"]
        for name, view in meta["views"].items():
            cam = orbit_cameras(
                [view["azimuth_deg"]], [view["elevation_deg"]], meta["camera_radius"], meta["fov_deg"], width, height
            )
            assert torch.allclose(cam.viewmats[0], torch.tensor(view["w2c_opencv"]), atol=1e-5), (clip.name, name)
            assert torch.allclose(cam.Ks[0], torch.tensor(meta["K"], dtype=torch.float32), atol=1e-4)
