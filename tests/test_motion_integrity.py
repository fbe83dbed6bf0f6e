"""Motion integrity (issue 21): the diagnostics' arithmetic on tiny inputs, and (slow) the built-in example's
waving arm kept whole and followed."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from pla4d.diagnostics.integrity import (
    FrameState,
    assign_parts,
    depth_blind,
    knn_indices,
    neighbour_ratio,
    opacity_mass,
    part_figures,
    region_share,
    scale_growth,
)
from pla4d.diagnostics.parts import CREATURE_PARTS, creature_vertex_parts


def _grid(n: int = 4) -> np.ndarray:
    axis = np.arange(n, dtype=np.float64) * 0.1
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)


def test_opacity_mass_sums_the_masked_opacities():
    opacities = np.array([0.5, 0.25, 1.0, 0.0])
    assert opacity_mass(opacities) == pytest.approx(1.75)
    assert opacity_mass(opacities, np.array([True, False, True, False])) == pytest.approx(1.5)
    assert opacity_mass(opacities, np.zeros(4, dtype=bool)) == 0.0


def test_scale_growth_is_the_largest_axis_ratio():
    before = np.array([[1.0, 1.0, 1.0], [0.1, 0.2, 0.4]])
    after = np.array([[1.0, 3.0, 0.5], [0.05, 0.1, 0.2]])
    np.testing.assert_allclose(scale_growth(after, before), [3.0, 0.5])


def test_neighbour_ratio_is_one_under_rigid_motion_and_tracks_stretch():
    points = _grid()
    neighbours = knn_indices(points, 6)
    assert neighbours.shape == (len(points), 6)
    assert not (neighbours == np.arange(len(points))[:, None]).any()  # a point is not its own neighbour
    angle = 0.7
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    moved = points @ rot.T + np.array([0.3, -1.0, 2.0])
    np.testing.assert_allclose(neighbour_ratio(moved, points, neighbours), 1.0, atol=1e-9)
    np.testing.assert_allclose(neighbour_ratio(points * 2.0, points, neighbours), 2.0, atol=1e-9)
    torn = points.copy()
    torn[0] += 5.0  # one point leaves: its own ratio is large, a far point's is untouched
    ratio = neighbour_ratio(torn, points, neighbours)
    assert ratio[0] > 10.0
    far = int(np.argmax(np.linalg.norm(points - points[0], axis=1)))
    assert ratio[far] == pytest.approx(1.0)


def test_parts_follow_the_nearest_vertex():
    vertices = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    labels = np.array([2, 0, 1])
    points = np.array([[0.1, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 0.8, 0.1], [0.45, 0.0, 0.0]])
    np.testing.assert_array_equal(assign_parts(points, vertices, labels), [2, 0, 1, 2])


def test_region_share_splits_the_opacity_on_a_surface_by_owner():
    means = np.array([[0.0, 0.0, 0.0], [0.01, 0.0, 0.0], [0.0, 0.02, 0.0], [1.0, 1.0, 1.0]])
    opacities = np.array([0.5, 0.5, 1.0, 1.0])
    own = np.array([True, True, False, True])
    total, share = region_share(means, opacities, own, np.array([[0.0, 0.0, 0.0]]), radius=0.05)
    assert total == pytest.approx(2.0)  # the far Gaussian is off the surface
    assert share == pytest.approx(0.5)


def test_part_figures_flag_each_mechanism():
    points = _grid()
    neighbours = knn_indices(points, 8)
    ones = np.ones(len(points))
    scales = np.full((len(points), 3), 0.01)
    mask = np.arange(len(points)) < 32
    state0 = FrameState(points, scales, ones * 0.8)
    same = part_figures(state0, state0, mask, neighbours, (2.0, 0.9), (2.0, 0.9))
    assert same["opacity_mass"] == 1.0 and same["scale_growth"] == 1.0 and same["neighbour_ratio"] == 1.0
    assert same["flags"] == []
    faded = part_figures(FrameState(points, scales, np.where(mask, 0.4, 0.8)), state0, mask, neighbours)
    assert faded["opacity_mass"] == pytest.approx(0.5) and faded["flags"] == ["faded"]
    stretched = scales.copy()
    stretched[:, 0] *= 2.0
    grown = part_figures(FrameState(points, stretched, ones * 0.8), state0, mask, neighbours)
    assert grown["scale_growth"] == pytest.approx(2.0) and grown["flags"] == ["stretched"]
    torn = part_figures(FrameState(points * 2.0, scales, ones * 0.8), state0, mask, neighbours)
    assert torn["neighbour_ratio"] == pytest.approx(2.0) and torn["flags"] == ["torn"]
    replaced = part_figures(state0, state0, mask, neighbours, (2.0, 0.3), (2.0, 0.9))
    assert replaced["flags"] == ["replaced"]


def test_depth_blind_truth_keeps_the_input_pixel_and_the_rest_depth():
    viewmat = np.eye(4)
    viewmat[:3, :3] = [[1, 0, 0], [0, -1, 0], [0, 0, -1]]  # OpenCV camera at z = 3 looking down -z
    viewmat[2, 3] = 3.0
    rest = np.array([[0.0, 0.0, 0.0], [0.5, 0.2, 0.3]])
    moved = rest + np.array([[0.2, 0.1, 0.5], [-0.1, 0.0, -0.4]])
    blind = depth_blind(moved, rest, viewmat)

    def camera(x):
        return x @ viewmat[:3, :3].T + viewmat[:3, 3]

    np.testing.assert_allclose(camera(blind)[:, 2], camera(rest)[:, 2])  # the depth of rest
    pixel = camera(blind)[:, :2] / camera(blind)[:, 2:]
    np.testing.assert_allclose(pixel, camera(moved)[:, :2] / camera(moved)[:, 2:])  # the pixel of the motion
    np.testing.assert_allclose(depth_blind(rest, rest, viewmat), rest)  # no motion, nothing to slide


def test_creature_parts_put_the_waving_paw_in_the_left_arm():
    parts, names = creature_vertex_parts()
    assert names == tuple(CREATURE_PARTS)
    from pla4d.example.creature import build_creature

    rig = build_creature()
    assert len(parts) == len(rig.vertices)
    arm = names.index("arm_l")
    paw = np.linalg.norm(rig.vertices - np.array([0.80, 0.04, 0.08]), axis=1) < 0.06  # the left paw's centre
    assert paw.any() and (parts[paw] == arm).all()
    tail = rig.vertices[:, 2] < -0.5  # only the tail reaches that far back
    assert (parts[tail] == names.index("tail")).all()
    assert set(np.unique(parts)) == set(range(len(names)))  # every part has vertices


@pytest.mark.slow
def test_waving_arm_stays_whole_and_followed(tmp_path):
    """The built-in example as a user runs it (``pla4d demo``, draft preset: 32 frames at 256 px): the waving arm
    (arm_l, with its paw) keeps at least 90% of its frame-0 opacity mass at every frame, and its true vertices,
    moved by the field, land within the stated pixel error of the truth in the input view, and on average over
    the novel views within the same error or the depth-blind floor, whichever is larger."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from motion_integrity import measure

    from pla4d.cli import main

    assert main(["demo", "--out", str(tmp_path), "--preset", "draft"]) == 0
    result = measure(tmp_path / "run", None, every=1, sheets=None)
    arm = [record["parts"]["arm_l"] for record in result["frames"]]
    masses = [a["opacity_mass"] for a in arm]
    front = [a["track_error_px"]["input"] for a in arm]
    novel = [round(float(np.mean([e for v, e in a["track_error_px"].items() if v != "input"])), 2) for a in arm]
    floor = [round(float(np.mean([e for v, e in a["depth_blind_px"].items() if v != "input"])), 2) for a in arm]
    print("arm_l opacity mass", masses, "input px", front, "novel px", novel, "depth-blind novel px", floor)
    assert min(masses) >= 0.9, f"the waving arm faded: opacity mass {min(masses):.2f} of frame 0"
    assert max(front) <= INPUT_PX, f"the arm is not followed in the input view: {max(front):.1f} px"
    over = [(t, n, f) for t, (n, f) in enumerate(zip(novel, floor, strict=True)) if n > max(NOVEL_PX, f)]
    assert not over, f"the arm is not followed in the novel views (frame, px, depth-blind px): {over}"


# Pixel errors (at 256 px, mean over the arm's vertices, every frame) the arm's tracking must stay within: 6 px is
# 2.3% of the frame (3 px at 128, as first stated); the arm's true motion reaches 35 px in the input view. The
# novel views may instead come within the depth-blind floor (the error of the true motion with its depth along
# the input rays taken out, pla4d/diagnostics/integrity.py): part of the arm's true motion runs along the input
# rays (0.045 world units rms against 0.18 across), so even a motion that matches the input view exactly misses
# by up to 10 px averaged over the novel views (frame 8), and no term on the CPU path (no Zero123 offline) sees
# that depth.
INPUT_PX = 6.0
NOVEL_PX = 6.0
