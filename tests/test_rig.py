"""The rig (issue 23): the skinning decomposition recovers known motion, its weights are sparse, non-negative and
sum to one, the bone tree is a tree, Gaussians follow the bones, the asset's rig block round-trips, and bad input
ends with one clear line and nothing written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pla4d.cli import main
from pla4d.formats.asset import AssetError, read_asset, write_asset
from pla4d.rig.fit import build_rig, rigged_gaussians
from pla4d.rig.skinning import blend_rotations, matrix_to_quaternion, quaternion_multiply
from pla4d.rig.ssdr import RigError, fit_skinning, project_simplex, reconstruct


def bending_bar(frames: int = 12, points: int = 1500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A bar along x in [0, 2] whose right half bends about z at the joint x = 1 by up to 90 degrees, with the
    two bones blended linearly over x in [0.8, 1.2] (ground-truth LBS); returns (T, P, 3) and the weights."""
    rng = np.random.default_rng(seed)
    rest = np.column_stack([rng.uniform(0, 2, points), rng.uniform(-0.1, 0.1, points), rng.uniform(-0.1, 0.1, points)])
    w = np.clip((rest[:, 0] - 0.8) / 0.4, 0.0, 1.0)
    out = []
    for t in range(frames):
        a = 0.5 * math.pi * t / max(frames - 1, 1)
        r = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
        moved = (rest - [1.0, 0.0, 0.0]) @ r.T + [1.0, 0.0, 0.0]
        out.append((1 - w)[:, None] * rest + w[:, None] * moved)
    return np.stack(out), w


def _check_weights(joints: np.ndarray, weights: np.ndarray, bones: int, most: int = 4) -> None:
    assert joints.shape == weights.shape and weights.shape[1] <= most
    assert (weights >= 0).all() and np.allclose(weights.sum(1), 1.0, atol=1e-5)
    assert joints.min() >= 0 and joints.max() < bones


def _diagonal(points: np.ndarray) -> float:
    flat = points.reshape(-1, 3)
    return float(np.linalg.norm(flat.max(0) - flat.min(0)))


def test_project_simplex_gives_the_nearest_point_on_the_simplex() -> None:
    v = np.random.default_rng(1).normal(size=(200, 5))
    p = project_simplex(v)
    assert (p >= 0).all() and np.allclose(p.sum(1), 1.0)
    # Optimality: no random point of the simplex is nearer.
    others = project_simplex(np.random.default_rng(2).normal(size=(200, 5)) * 3)
    assert (((v - p) ** 2).sum(1) <= ((v - others) ** 2).sum(1) + 1e-12).all()


def test_two_bone_bending_bar_is_recovered() -> None:
    y, truth = bending_bar()
    fit = fit_skinning(y, bones=2, iterations=20)
    _check_weights(fit.joints, fit.weights, 2)
    recon = reconstruct(y[0], fit.transforms, fit.joints, fit.weights)
    err = np.linalg.norm(recon - y, axis=-1)
    assert err.mean() / _diagonal(y) < 0.003 and np.percentile(err, 95) / _diagonal(y) < 0.01
    assert np.allclose(fit.transforms[0], np.eye(3, 4)) and np.abs(recon[0] - y[0]).max() < 1e-9  # rest = frame 0
    # The bones are rigid and one of them turns by the bar's 90 degrees at the last frame.
    r = fit.transforms[-1, :, :, :3]
    assert np.allclose(r @ np.swapaxes(r, 1, 2), np.eye(3), atol=1e-9) and np.allclose(np.linalg.det(r), 1.0)
    angles = sorted(np.degrees(np.arccos(np.clip((np.trace(r, axis1=1, axis2=2) - 1) / 2, -1, 1))))
    assert angles[0] < 5 and abs(angles[1] - 90) < 5
    # The weights of the moving bone follow the true blend.
    moving = int(np.argmax([abs(a) for a in np.trace(r, axis1=1, axis2=2) - 3]))
    dense = np.zeros((y.shape[1], 2))
    np.add.at(dense, (np.arange(y.shape[1])[:, None], fit.joints), fit.weights)
    assert np.abs(dense[:, moving] - truth).mean() < 0.05


def test_bar_rig_has_a_root_a_child_and_the_joint_at_the_bend() -> None:
    y, _ = bending_bar()
    rig = build_rig(y, bones=2, iterations=20)
    assert list(rig.parents) == [-1, 0] and rig.names[0] == "bone_00_root" and rig.names[1].startswith("bone_01")
    head = rig.rest[1, :3, 3]
    assert np.linalg.norm(head[:2] - [1.0, 0.0]) < 0.15  # the joint found where the two motions agree
    assert rig.info["gaussians"]["mean"] < 0.003


def test_the_built_in_creature_is_recovered_within_the_targets() -> None:
    from pla4d.example.creature import animate_creature

    anim = animate_creature(12)
    rig = build_rig(np.zeros((12, 0, 3)), anim.vertices, bones=24, iterations=8)
    assert rig.info["mesh"]["mean"] <= 0.01 and rig.info["mesh"]["p95"] <= 0.03
    _check_weights(rig.mesh_joints.astype(np.int64), rig.mesh_weights, 24)
    parents = rig.parents
    assert parents[0] == -1 and all(0 <= p < j for j, p in enumerate(parents[1:], 1))  # a tree, parents first
    assert len(set(rig.names)) == 24 and rig.names[0] == "bone_00_root"
    # The stored transforms reproduce every frame's vertices from frame 0 within the reported error.
    fitted = reconstruct(anim.vertices[0], rig.transforms, rig.mesh_joints.astype(np.int64), rig.mesh_weights)
    err = np.linalg.norm(fitted - anim.vertices, axis=-1).mean() / _diagonal(anim.vertices)
    assert abs(err - rig.info["mesh"]["mean"]) < 1e-4


def test_gaussians_follow_their_bones_centres_and_rotations() -> None:
    y, _ = bending_bar(frames=6, points=600)
    rig = build_rig(y, bones=2, iterations=10)
    q0 = np.random.default_rng(3).normal(size=(600, 4))
    positions, rotations = rigged_gaussians(rig, y[0], q0)
    assert positions.shape == y.shape and rotations.shape == (6, 600, 4)
    # A Gaussian bound to one bone alone turns exactly as that bone turns.
    single = np.flatnonzero(rig.gaussian_weights[:, 1:].sum(1) == 0)
    assert single.size > 100
    bone = rig.gaussian_joints[single, 0]
    bone_q = matrix_to_quaternion(rig.transforms[-1, bone, :, :3].astype(np.float64))
    assert np.allclose(rotations[-1, single], quaternion_multiply(bone_q, q0[single]), atol=1e-5)
    assert np.allclose(np.linalg.norm(rotations, axis=-1), np.linalg.norm(q0, axis=-1)[None], atol=1e-5)
    assert np.allclose(rotations[0], q0, atol=1e-6)


def test_rotation_blend_takes_each_bone_on_the_first_bones_side() -> None:
    """Bones turned by +170 and -170 degrees about z: their quaternions (w >= 0) lie in opposite hemispheres. A point
    halfway between them turns by 180 degrees (the second bone's quaternion flipped to the first's side), not by 0
    (their plain sum); the blend is the same whichever bone comes first."""

    def turn(degrees: float) -> np.ndarray:
        c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
        return np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0]], np.float64)

    transforms = np.stack([turn(170), turn(-170)])[None]
    joints = np.array([[0, 1], [1, 0], [0, 1], [1, 0]])
    weights = np.array([[0.5, 0.5], [0.5, 0.5], [1.0, 0.0], [0.75, 0.25]])
    q = blend_rotations(transforms, joints, weights)[0]
    assert np.allclose(np.abs(q[:2]), [0, 0, 0, 1], atol=1e-9)
    assert np.allclose(q[2], matrix_to_quaternion(transforms[0, 0, :, :3]), atol=1e-9)
    half = math.radians(185 / 2)  # 0.75 x 190 (= -170) + 0.25 x 170: a turn by 185 degrees
    assert np.allclose(np.abs(q[3]), np.abs([math.cos(half), 0, 0, math.sin(half)]), atol=0.02)


@pytest.mark.parametrize(
    ("points", "bones", "message"),
    [(np.zeros((1, 50, 3)), 4, "at least 2 are needed"),
     (np.random.default_rng(0).normal(size=(4, 10, 3)), 24, "24 bones asked for but the motion has only 10 points"),
     (np.full((3, 10, 3), np.nan), 2, "non-finite")],
)  # fmt: skip
def test_motion_that_cannot_be_rigged_says_why(points: np.ndarray, bones: int, message: str) -> None:
    with pytest.raises(RigError, match=message):
        build_rig(points, bones=bones)


def _asset_arrays(t: int, n: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    canonical = {"positions": rng.normal(size=(n, 3)).astype(np.float32), "sh_dc": np.zeros((n, 3), np.float32),
                 "opacities": np.zeros(n, np.float32), "scales": np.full((n, 3), -4.0, np.float32),
                 "rotations": np.tile(np.array([1, 0, 0, 0], np.float32), (n, 1))}  # fmt: skip
    return canonical, {"positions": np.repeat(canonical["positions"][None], t, 0)}


def test_asset_rig_block_round_trips_and_is_checked(tmp_path: Path) -> None:
    from pla4d.formats.asset import MeshData

    y, _ = bending_bar(frames=5, points=300)
    faces = np.array([[0, 1, 2], [2, 3, 4]], np.uint32)
    rig = build_rig(y[:, :200], y[:, 200:], bones=3, iterations=4)
    canonical, arrays = _asset_arrays(5, 200)
    arrays["positions"] = y[:, :200].astype(np.float32)
    mesh = MeshData(faces, y[:, 200:].astype(np.float32))
    path = write_asset(tmp_path / "a", canonical, arrays, fps=8.0, mesh=mesh, rig=rig)
    back = read_asset(path)
    assert back.rig is not None and back.rig.names == rig.names and list(back.rig.parents) == list(rig.parents)
    for name in ("rest", "tails", "transforms", "gaussian_joints", "gaussian_weights", "mesh_joints", "mesh_weights"):
        assert np.allclose(np.asarray(getattr(back.rig, name)), np.asarray(getattr(rig, name)), atol=1e-6), name
    meta = json.loads((path / "asset.json").read_text())
    assert meta["format_version"] == "1.1" and meta["rig"]["transforms"]["shape"] == [5, 3, 3, 4]
    assert read_asset(write_asset(tmp_path / "b", canonical, arrays, fps=8.0)).rig is None  # the block is optional
    # A corrupted rig file is refused by name; wrong weights are refused before anything is written.
    (path / "rig_transforms.bin").write_bytes(b"\0" * (path / "rig_transforms.bin").stat().st_size)
    with pytest.raises(AssetError, match="rig transforms file rig_transforms.bin is corrupted"):
        read_asset(path)
    rig.gaussian_weights = rig.gaussian_weights * 2
    with pytest.raises(ValueError, match="sum to one"):
        write_asset(tmp_path / "c", canonical, arrays, fps=8.0, mesh=mesh, rig=rig)
    assert not (tmp_path / "c").exists() and not list(tmp_path.glob(".c.tmp-*"))


def _cli_asset(tmp_path: Path, frames: int) -> Path:
    y, _ = bending_bar(frames=frames, points=120)
    canonical, arrays = _asset_arrays(frames, 120)
    arrays["positions"] = y.astype(np.float32)
    return write_asset(tmp_path / "run" / "asset", canonical, arrays, fps=8.0)


@pytest.mark.parametrize(
    ("frames", "argv", "message"),
    [(None, [], "holds no 4D asset"), (1, [], "at least 2 are needed"),
     (4, ["--bones", "500"], "500 bones asked for but the motion has only 120 points")],
)  # fmt: skip
def test_pla4d_rig_bad_input_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], frames: int | None, argv: list[str], message: str
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    if frames is not None:
        _cli_asset(tmp_path, frames)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in run.rglob("*"))
    assert main(["rig", str(run), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pla4d: error: pla4d rig:") and message in err and "Traceback" not in err
    assert sorted((p.name, p.stat().st_mtime_ns) for p in run.rglob("*")) == before


def test_pla4d_rig_writes_the_rig_into_the_asset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _cli_asset(tmp_path, 6)
    assert main(["rig", str(tmp_path / "run"), "--bones", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    rig = read_asset(path).rig
    assert rig is not None and rig.num_bones == 2 and out["fit"]["gaussians"]["mean"] < 0.01
    assert out["rigged_glb"] is None  # no mesh in this asset: nothing to skin in glTF


def test_held_appearance_is_the_mean_log_scale_and_mean_opacity() -> None:
    from pla4d.rig.fit import held_appearance

    log_scales = np.stack([np.full((5, 3), -4.0), np.full((5, 3), -2.0)])
    logits = np.stack([np.full(5, 0.0), np.full(5, np.log(3.0))])  # opacities 0.5 and 0.75
    scales, opacities = held_appearance(log_scales, logits)
    assert np.allclose(scales, -3.0) and np.allclose(1 / (1 + np.exp(-opacities)), 0.625)
