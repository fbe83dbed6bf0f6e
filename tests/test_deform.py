import math

import pytest
import torch
import torch.nn.functional as F

from pla4d.deform import DeformationField, frame_time
from pla4d.gaussians.model import GaussianModel


def _model(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    return GaussianModel.from_activated(
        torch.rand(n, 3, generator=g) * 2 - 1,
        torch.randn(n, 4, generator=g),
        torch.full((n, 3), 0.03),
        torch.full((n,), 0.6),
        torch.rand(n, 3, generator=g),
    )


def _perturb_heads(field, std=1e-2):
    with torch.no_grad():
        for head in (field.head_means, field.head_quats, field.head_scales, field.head_opacity):
            head.weight.normal_(0.0, std)
            head.bias.normal_(0.0, std)


def test_identity_at_init_for_any_time():
    model = _model()
    field = DeformationField(8, spatial_resolutions=(8, 16), channels=4)
    for t in (0.0, 0.37, 1.0, torch.tensor([0.0, 0.5, 1.0])):
        means, quats, scales, opacities = field.deform(model, t)
        assert torch.equal(means, model.means.expand_as(means))
        assert torch.allclose(quats, model.normalized_quats.expand_as(quats), atol=1e-6)
        assert torch.allclose(scales, model.scales.expand_as(scales))
        assert torch.allclose(opacities, model.opacities.expand_as(opacities))


def test_batched_times_match_single_times():
    model = _model()
    field = DeformationField(5, spatial_resolutions=(8,), channels=4)
    _perturb_heads(field)
    with torch.no_grad():
        for p in field.temporal:
            p.add_(torch.randn_like(p) * 0.2)
        batched = field(model.means, torch.tensor([0.1, 0.8]))
        for i, t in enumerate((0.1, 0.8)):
            single = field(model.means, t)
            assert torch.allclose(batched.d_means[i], single.d_means, atol=1e-6)
            assert torch.allclose(batched.d_opacity[i], single.d_opacity, atol=1e-6)


def test_sampling_matches_grid_sample_and_time_rows():
    field = DeformationField(4, spatial_resolutions=(6,), channels=3, time_resolution=4)
    with torch.no_grad():
        for p in field.temporal:
            p.copy_(torch.rand_like(p) + 0.5)
    pts = torch.rand(50, 3) * 2.4 - 1.2
    feat = field.features(pts, torch.tensor([frame_time(2, 4)]))[0]  # (N, C)
    x = field.normalise(pts)
    expected = torch.ones(50, 3)
    for k, (a, c) in enumerate(((0, 1), (0, 2), (1, 2))):
        grid = x[:, [a, c]][None, :, None, :]
        expected = expected * F.grid_sample(field.spatial[0][k : k + 1], grid, align_corners=True)[0, :, :, 0].t()
    for axis in range(3):
        # Frame 2 of 4 lies exactly on row 2 of the time planes: linear along the spatial axis only.
        row = field.temporal[0][axis, :, 2, :]  # (C, R)
        u = (x[:, axis] + 1) / 2 * (row.shape[-1] - 1)
        i0 = u.floor().clamp(max=row.shape[-1] - 2).long()
        w = (u - i0)[:, None]
        expected = expected * (row[:, i0].t() * (1 - w) + row[:, i0 + 1].t() * w)
    assert torch.allclose(feat, expected, atol=1e-5)


def test_space_time_planes_read_like_grid_sample_between_rows():
    # Times between rows and at both ends, points inside and outside the box: the matrix-product reading of the
    # space-time planes gives grid_sample's bilinear values, and the same gradients.
    field = DeformationField(5, spatial_resolutions=(7,), channels=2)
    with torch.no_grad():
        field.spatial[0].fill_(1.0)
        for p in field.temporal:
            p.copy_(torch.rand_like(p) + 0.5)
    pts = torch.rand(40, 3) * 3.0 - 1.5
    times = torch.tensor([0.0, 0.13, 0.5, 0.91, 1.0])
    feat = field.features(pts, times)  # (B, N, C)
    x = field.normalise(pts)
    tc = times * 2 - 1
    expected = torch.ones(len(times), 40, 2)
    for axis in range(3):
        grid = torch.stack([x[:, axis][None].expand(len(times), -1), tc[:, None].expand(-1, 40)], -1)
        plane = field.temporal[0][axis : axis + 1]  # (1, C, T, R)
        sampled = F.grid_sample(plane, grid.reshape(1, -1, 1, 2), padding_mode="border", align_corners=True)
        expected = expected * sampled[0, :, :, 0].t().reshape(len(times), 40, 2)
    assert torch.allclose(feat, expected, atol=1e-5)
    weights = torch.randn_like(feat)
    (feat * weights).sum().backward()
    ours = field.temporal[0].grad.clone()
    field.temporal[0].grad = None
    (expected * weights).sum().backward()
    assert torch.allclose(ours, field.temporal[0].grad, atol=1e-4)


def test_gradients_reach_planes_and_mlp():
    model = _model()
    field = DeformationField(6, spatial_resolutions=(8, 16), channels=4)
    _perturb_heads(field)
    means, quats, scales, opacities = field.deform(model, torch.tensor([0.2, 0.9]))
    loss = (means**2).sum() + quats[..., 1].sum() + scales.sum() + opacities.sum()
    loss.backward()
    for name, p in field.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert model.means.grad is not None  # the canonical positions are in the graph (a joint fine-tune is possible)


def test_zero_heads_still_learn_after_one_step():
    model = _model()
    field = DeformationField(4, spatial_resolutions=(8,), channels=4)
    opt = torch.optim.Adam(field.parameters(), lr=1e-2)
    target = model.means.detach() + 0.1
    for _ in range(3):
        opt.zero_grad()
        means = field.deform(model, 0.5)[0]
        loss = ((means - target) ** 2).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(((field.deform(model, 0.5)[0] - target) ** 2).mean())
        before = float(((model.means - target) ** 2).mean())
    assert after < before


def test_deform_points_matches_deform_means():
    model = _model()
    field = DeformationField(6, spatial_resolutions=(8,), channels=4)
    _perturb_heads(field, 0.1)
    with torch.no_grad():
        for t in (0.0, 0.5, torch.tensor([0.3, 1.0])):
            assert torch.allclose(field.deform_points(model.means, t), field.deform(model, t)[0], atol=1e-6)


@torch.no_grad()
def test_regularisers_are_zero_for_constant_planes_and_positive_otherwise():
    field = DeformationField(6, spatial_resolutions=(8,), channels=2)
    with torch.no_grad():
        field.spatial[0].fill_(0.3)
    assert float(field.total_variation()) == 0.0
    assert float(field.time_smoothness()) == 0.0
    assert float(field.time_sparsity()) == 0.0
    with torch.no_grad():
        field.temporal[0].add_(torch.randn_like(field.temporal[0]))
    assert float(field.total_variation()) > 0 and float(field.time_smoothness()) > 0
    assert float(field.time_sparsity()) > 0


def test_config_rebuilds_the_field():
    field = DeformationField(7, spatial_resolutions=(8, 12), channels=3, hidden=16)
    _perturb_heads(field)
    clone = DeformationField(**field.config())
    clone.load_state_dict(field.state_dict())
    pts = torch.rand(10, 3)
    assert torch.allclose(clone.deform_points(pts, 0.4), field.deform_points(pts, 0.4))


def _moving_field(time_resolution: int | None = None) -> DeformationField:
    """A field over 8 frames whose heads and space-time planes are perturbed, so every frame moves differently."""
    field = DeformationField(8, spatial_resolutions=(8, 16), channels=4, time_resolution=time_resolution)
    _perturb_heads(field, std=0.1)
    with torch.no_grad():
        for plane in field.temporal:
            plane.add_(torch.randn_like(plane) * 0.5)
    return field


def test_hold_gap_to_the_end_makes_later_times_move_as_the_held_time():
    model = _model()
    for time_resolution in (None, 5):  # rows on frames, and rows between frames
        field = _moving_field(time_resolution)
        times = torch.tensor([frame_time(i, 8) for i in range(8)])
        before = field(model.means, times).d_means
        field.hold_gap(float(times[3]), None)
        after = field(model.means, times).d_means
        if time_resolution is None:
            assert torch.equal(after[:4], before[:4])  # up to the held frame nothing changes
            assert torch.allclose(after[4:], after[3].expand_as(after[4:]), atol=1e-6)
        else:  # the held time falls between rows: every later row holds its interpolated value
            assert torch.allclose(after[4:], after[4].expand_as(after[4:]), atol=1e-6)
        assert not torch.allclose(before[4:], before[3].expand_as(before[4:]), atol=1e-3)


def test_log_scale_bound_squashes_scale_changes_and_is_saved():
    model = _model()
    bounded = DeformationField(8, spatial_resolutions=(8, 16), channels=4, log_scale_bound=0.7)
    free = DeformationField(8, spatial_resolutions=(8, 16), channels=4)
    _perturb_heads(bounded, std=5.0)
    free.load_state_dict(bounded.state_dict())
    d_bounded = bounded(model.means, 0.5).d_log_scales
    d_free = free(model.means, 0.5).d_log_scales
    assert d_free.abs().max() > 2.0  # the heads ask for large changes
    assert d_bounded.abs().max() <= 0.7
    assert torch.allclose(d_bounded, 0.7 * torch.tanh(d_free / 0.7))
    assert DeformationField(**bounded.config()).log_scale_bound == 0.7
    old = {k: v for k, v in free.config().items() if k != "log_scale_bound"}  # a field saved before the bound
    assert DeformationField(**old).log_scale_bound is None
    with pytest.raises(ValueError, match="log_scale_bound"):
        DeformationField(8, log_scale_bound=0.0)


def _with_parts(parts=6, seed=1):
    model = _model(n=400, seed=seed)
    field = DeformationField(6, spatial_resolutions=(8,), channels=4, parts=parts)
    field.part_motion.place(model.means)
    return model, field


def test_part_motion_is_the_identity_at_init_and_at_frame_zero():
    model, field = _with_parts()
    with torch.no_grad():
        means, quats, _, _ = field.deform(model, torch.tensor([0.0, 0.6, 1.0]))
        assert torch.allclose(means, model.means.expand_as(means), atol=1e-6)
        assert torch.allclose(quats, model.normalized_quats.expand_as(quats), atol=1e-6)
        field.part_motion.rotations.normal_()
        field.part_motion.translations.normal_()
        means, quats, _, _ = field.deform(model, 0.0)  # row 0 is held at rest: frame 0 is the canonical pose
        assert torch.allclose(means, model.means, atol=1e-6)
        assert torch.allclose(quats, model.normalized_quats, atol=1e-6)


def test_part_motion_moves_a_part_rigidly_and_turns_its_gaussians():
    from pla4d.deform.parts import quaternion_matrix

    model, field = _with_parts(parts=1)
    angle = 0.8
    with torch.no_grad():
        field.part_motion.rotations[1:, 0] = torch.tensor([0.0, 0.0, angle])
        field.part_motion.translations[1:, 0] = torch.tensor([0.1, -0.2, 0.3])
        means, quats, _, _ = field.deform(model, 1.0)
    c = field.part_motion.centres[0]
    cos, sin = math.cos(angle), math.sin(angle)
    rot = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    expected = (model.means.detach() - c) @ rot.T + c + torch.tensor([0.1, -0.2, 0.3])
    assert torch.allclose(means, expected, atol=1e-5)
    # Each Gaussian's orientation turns with the part: its rotation matrix is the part's times its own.
    assert torch.allclose(quaternion_matrix(quats), rot @ quaternion_matrix(model.normalized_quats), atol=1e-5)
    assert torch.allclose(field.deform_points(model.means.detach(), 1.0), means, atol=1e-6)


def test_part_motion_blends_at_borders_holds_rows_and_is_saved():
    model, field = _with_parts(parts=5)
    idx, w = field.part_motion.weights(model.means)
    assert torch.allclose(w.sum(1), torch.ones(len(w)))
    label = torch.cdist(model.means, field.part_motion.centres).argmin(1)
    assert torch.equal(idx[:, 0], label)  # the nearest part weighs most
    assert (w[:, 0] >= w[:, 1:].max(1).values - 1e-6).all()
    with torch.no_grad():
        field.part_motion.rotations.normal_(0, 0.3)
        field.part_motion.translations.normal_(0, 0.1)
    clone = DeformationField(**field.config())
    clone.load_state_dict(field.state_dict())
    assert torch.allclose(clone.deform_points(model.means, 0.7), field.deform_points(model.means, 0.7))
    times = torch.tensor([frame_time(i, 6) for i in range(6)])
    field.hold_gap(float(times[2]), None)
    after = field(model.means, times).d_means
    assert torch.allclose(after[3:], after[2].expand_as(after[3:]), atol=1e-6)
    assert field.time_smoothness() > 0
    names = {id(p) for p in field.part_parameters()}
    assert names and not names & {id(p) for p in [*field.mlp_parameters(), *field.grid_parameters()]}
    old = {k: v for k, v in DeformationField(6).config().items() if not k.startswith("part")}  # saved before parts
    assert DeformationField(**old).part_motion is None


def test_part_motion_learns_a_turn_the_fine_field_is_not_given():
    # A part turned 40 degrees: Adam on the part rows alone brings the Gaussians there.
    model, field = _with_parts(parts=1)
    c = field.part_motion.centres[0]
    angle = torch.tensor(0.7)
    rot = torch.tensor([[1.0, 0, 0], [0, torch.cos(angle), -torch.sin(angle)], [0, torch.sin(angle), torch.cos(angle)]])
    target = (model.means.detach() - c) @ rot.T + c
    opt = torch.optim.Adam(field.part_parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        loss = ((field.deform(model, 1.0)[0] - target) ** 2).mean()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 1e-4
    assert float(field.part_motion.rotations[-1, 0, 0]) == pytest.approx(0.7, abs=0.02)


def _u_shape(n=300):
    # Two parallel rods 0.06 apart joined at one end (a forearm raised beside the head): close in space, far along
    # the object.
    s = torch.linspace(0.0, 1.0, n)[:, None]
    left = torch.cat([torch.full_like(s, -0.03), s, torch.zeros_like(s)], 1)
    right = torch.cat([torch.full_like(s, 0.03), s, torch.zeros_like(s)], 1)
    a = torch.linspace(0.0, math.pi, 20)[:, None]
    bend = torch.cat([-0.03 * torch.cos(a), -0.03 * torch.sin(a), torch.zeros_like(a)], 1)
    return torch.cat([left, right, bend])


def test_graph_parts_keep_apart_what_is_close_in_space_but_far_along_the_object():
    from pla4d.deform.parts import PartMotion

    points = _u_shape()
    top = points[:, 1] > 0.5  # the two rods' far halves: 0.06 apart, 1+ apart along the object
    for clustering, mixed_expected in (("kmeans", True), ("graph", False)):
        motion = PartMotion(6, 4, clustering=clustering)
        motion.place(points)
        idx, w = motion.weights(points)
        assert torch.allclose(w.sum(1), torch.ones(len(w)), atol=1e-6)
        label = idx[:, 0]
        rod = (points[:, 0] > 0).long()
        # A part "mixes" the rods when it holds far-half points of both.
        mixed = any(len(set(rod[top & (label == k)].tolist())) > 1 for k in range(6))
        assert mixed == mixed_expected, clustering
        if clustering == "graph":
            # No far-half point of one rod gives weight to a part whose members are on the other rod.
            owner = torch.stack([rod[label == k].float().mean() if (label == k).any() else torch.tensor(0.5)
                                 for k in range(6)])  # fmt: skip
            other = (owner[idx] - rod[:, None].float()).abs() > 0.5
            assert float((w * other)[top].sum(1).max()) < 1e-3


def test_graph_parts_are_saved_and_move_other_points_as_their_nearest_gaussian():
    model = _model(n=400, seed=3)
    field = DeformationField(6, spatial_resolutions=(8,), channels=4, parts=5, part_clustering="graph")
    field.part_motion.place(model.means)
    with torch.no_grad():
        field.part_motion.rotations.normal_(0, 0.3)
        field.part_motion.translations.normal_(0, 0.1)
    clone = DeformationField(**field.config())
    assert clone.part_motion.clustering == "graph"
    clone.load_state_dict(field.state_dict())
    assert torch.allclose(clone.deform_points(model.means, 0.7), field.deform_points(model.means, 0.7))
    near = model.means.detach() + 1e-4  # a mesh vertex beside a Gaussian moves with that Gaussian's parts
    idx, w = field.part_motion.weights(near)
    idx0, w0 = field.part_motion.weights(model.means)
    assert torch.equal(idx, idx0) and torch.allclose(w, w0)
    old = {k: v for k, v in field.config().items() if k != "part_clustering"}  # saved before the option
    assert DeformationField(**old).part_motion.clustering == "kmeans"
    with pytest.raises(ValueError, match="clustering"):
        DeformationField(6, parts=2, part_clustering="spectral")


def test_hold_gap_fills_the_gap_from_its_nearer_end():
    model = _model()
    field = _moving_field()
    times = torch.tensor([frame_time(i, 8) for i in range(8)])
    before = field(model.means, times).d_means
    field.hold_gap(float(times[1]), float(times[6]))  # frames 2, 3 take frame 1's motion; 4, 5 frame 6's
    after = field(model.means, times).d_means
    for kept in (0, 1, 6, 7):
        assert torch.equal(after[kept], before[kept])
    for frame, source in ((2, 1), (3, 1), (4, 6), (5, 6)):
        assert torch.allclose(after[frame], before[source], atol=1e-6), frame
