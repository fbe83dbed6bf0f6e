import math

import pytest
import torch

from pla4d.deform import DeformationField
from pla4d.deform.mirror import find_mirror_plane

UP = torch.tensor([0.0, 1.0, 0.0])


def _symmetric_cloud(angle_deg: float, offset: float, n: int = 3000, seed: int = 0):
    """Points on one side of a vertical plane and their mirror images: a symmetric body with a few limbs."""
    g = torch.Generator().manual_seed(seed)
    normal = torch.tensor([math.cos(math.radians(angle_deg)), 0.0, math.sin(math.radians(angle_deg))])
    half = torch.randn(n // 2, 3, generator=g) * torch.tensor([0.4, 0.3, 0.6])
    side = half @ normal
    half = half - (side - side.abs().clamp_min(0.05))[:, None] * normal  # all on the positive side
    half = half + offset * normal
    mirrored = half - 2.0 * ((half @ normal) - offset)[:, None] * normal
    return torch.cat([half, mirrored]), normal


@pytest.mark.parametrize("angle", [0.0, 37.0, 120.0])
def test_finds_the_mirror_plane_of_a_symmetric_cloud(angle):
    points, normal = _symmetric_cloud(angle, offset=0.08)
    plane = find_mirror_plane(points, UP, tolerance=0.02)
    assert plane is not None
    found = torch.tensor(plane.normal)
    assert abs(float(found @ normal)) > math.cos(math.radians(1.5))  # the same plane (either orientation)
    assert abs(abs(plane.offset) - 0.08) < 0.02
    assert plane.inlier_fraction > 0.9


def test_no_plane_for_an_asymmetric_cloud():
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(7, 3, generator=g)
    points = torch.cat([c + 0.05 * torch.randn(300, 3, generator=g) for c in centres])
    assert find_mirror_plane(points, UP, tolerance=0.01, min_inliers=0.35) is None
    with pytest.raises(ValueError, match="points must be"):
        find_mirror_plane(torch.zeros(5, 2), UP)


def _perturbed(field):
    with torch.no_grad():
        field.head_means.weight.normal_(0.0, 0.05)
        field.head_means.bias.normal_(0.0, 0.05)
    return field


def test_lifted_field_keeps_the_image_motion_and_sets_the_depth():
    eye = torch.tensor([0.0, 0.0, 3.0])
    normal = torch.nn.functional.normalize(torch.tensor([-0.5, 0.0, 0.866]), dim=0)
    points = torch.rand(200, 3) * 1.6 - 0.8
    plain = _perturbed(DeformationField(4, spatial_resolutions=(8,), channels=4, seed=3))
    lift = {"normal": normal.tolist(), "eye": eye.tolist(), "softness": 1e-4}
    lifted = DeformationField(**{**plain.config(), "depth_lift": lift})
    lifted.load_state_dict(plain.state_dict())
    with torch.no_grad():
        d_plain = plain(points, 0.5).d_means
        d_lifted = lifted(points, 0.5).d_means
    rays = torch.nn.functional.normalize(points - eye, dim=-1)

    def across(d):
        return d - (d * rays).sum(-1, keepdim=True) * rays

    assert float(d_plain.norm()) > 1e-3
    assert torch.allclose(across(d_lifted), across(d_plain), atol=1e-6)  # what the input view sees is unchanged
    assert torch.allclose(d_lifted @ normal, torch.zeros(200), atol=1e-4)  # parallel to the mirror plane
    # The setting travels with the field's config (a saved run rebuilds the same field).
    assert lifted.config()["depth_lift"]["normal"] == pytest.approx(normal.tolist())
    rebuilt = DeformationField(**lifted.config())
    rebuilt.load_state_dict(lifted.state_dict())
    assert torch.equal(rebuilt(points, 0.5).d_means, d_lifted)


def test_lift_adds_no_depth_when_the_camera_looks_along_the_plane():
    eye = torch.tensor([0.0, 0.0, 3.0])
    points = torch.rand(100, 3) * 0.2 - 0.1  # near the axis: rays almost along -z, in the plane x = 0
    plain = _perturbed(DeformationField(4, spatial_resolutions=(8,), channels=4, seed=5))
    lift = {"normal": [1.0, 0.0, 0.0], "eye": eye.tolist(), "softness": 0.2}
    lifted = DeformationField(**{**plain.config(), "depth_lift": lift})
    lifted.load_state_dict(plain.state_dict())
    with torch.no_grad():
        d = lifted(points, 1.0).d_means
    rays = torch.nn.functional.normalize(points - eye, dim=-1)
    depth = (d * rays).sum(-1).abs()
    assert float(depth.max()) < 0.05 * float(d.norm(dim=-1).max())
