import numpy as np
import pytest

from pla4d.example.creature import animate_creature, build_creature, pose_at, skin


def test_rig_is_well_formed():
    rig = build_creature()
    assert rig.faces.min() >= 0 and rig.faces.max() < len(rig.vertices)
    assert np.allclose(rig.weights.sum(axis=1), 1.0)
    assert (rig.weights >= 0).all()
    for i, bone in enumerate(rig.bones):
        assert bone.parent < i  # parents come first, so forward kinematics runs in one pass
    assert np.abs(skin(rig, {}) - rig.vertices).max() < 1e-12


def test_animation_is_normalised_and_deterministic():
    a = animate_creature(12, fps=12)
    b = animate_creature(12, fps=12)
    assert np.array_equal(a.vertices, b.vertices)
    radius = np.linalg.norm(a.vertices, axis=-1)
    assert radius.max() == pytest.approx(1.0, abs=1e-5)
    flat = a.vertices.reshape(-1, 3)
    assert np.allclose((flat.min(0) + flat.max(0)) / 2, 0.0, atol=1e-5)
    assert a.times[1] == pytest.approx(1 / 12)
    # The creature faces +Z: its nose (the frontmost vertex) is near the top, at positive z.
    front = a.vertices[0][np.argmax(a.vertices[0][:, 2])]
    assert front[1] > 0.2


def test_motion_is_non_rigid():
    anim = animate_creature(16)
    rest, moved = anim.vertices[0].astype(np.float64), anim.vertices[5].astype(np.float64)
    # Best rigid fit (Kabsch) leaves a large residual: the motion is not one rigid transform.
    a, b = rest - rest.mean(0), moved - moved.mean(0)
    u, _, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1, 1, d]) @ vt
    residual = np.linalg.norm(a @ rot - b, axis=1)
    assert residual.max() > 0.1
    # Limbs bend: the per-vertex displacement varies smoothly within the waving arm rather than in one jump.
    rig = build_creature()
    lower = rig.bone_index("arm_l_lower")
    blended = (rig.weights[:, lower] > 0.05) & (rig.weights[:, lower] < 0.95)
    assert blended.sum() > 20


def test_motion_loops():
    first, after_cycle = pose_at(0.0), pose_at(1.0)
    for name in first:
        assert np.allclose(first[name], after_cycle[name], atol=1e-9)


@pytest.mark.parametrize("frames, fps", [(0, 16.0), (4, 0.0)])
def test_bad_arguments(frames, fps):
    with pytest.raises(ValueError):
        animate_creature(frames, fps)
