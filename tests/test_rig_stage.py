"""The rig stage in a run (issue 23): after motion, before asset; the asset carries the rig block and the exports
rigged.glb; ``--no-rig`` leaves both out; ``--rig-bones`` reruns the rig and what follows it, not the motion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pla4d.asset.format import read_asset
from pla4d.cli import main

ARGV = ["demo", "--frames", "3", "--resolution", "48", "--iterations", "2", "--motion-iterations", "2"]


def _stages(events_file: Path) -> dict:
    return json.loads(events_file.read_text())["stages"]


def test_a_run_rigs_its_motion_and_the_settings_reach_the_stage(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([*ARGV, "--out", str(tmp_path), "--rig-bones", "6"]) == 0
    capsys.readouterr()
    run = tmp_path / "run"
    summary = _stages(run / "summary.json")
    assert list(summary)[-3:] == ["rig", "asset", "exports"]
    asset = read_asset(run / "asset")
    rig = asset.rig
    assert rig is not None and rig.num_bones == 6 and rig.transforms.shape[:2] == (asset.num_frames, 6)
    assert rig.gaussian_weights.shape == (asset.num_gaussians, 4)
    assert rig.mesh_joints.shape[0] == asset.mesh.num_vertices
    assert np.allclose(rig.gaussian_weights.sum(1), 1.0, atol=1e-5) and rig.info["mesh"]["mean"] < 0.05
    assert (run / "exports" / "rigged.glb").stat().st_size > 1000
    assert json.loads((run / "rig" / "rig.json").read_text())["names"] == rig.names
    # More bones: the rig and what follows it run again, the motion does not.
    assert main([*ARGV, "--out", str(tmp_path), "--rig-bones", "5"]) == 0
    capsys.readouterr()
    stages = _stages(run / "summary.json")
    assert stages["motion"] == {"cached": True} and "seconds" in stages["rig"] and "seconds" in stages["asset"]
    assert read_asset(run / "asset").rig.num_bones == 5
    # Off: no rig block, no rigged.glb.
    assert main([*ARGV, "--out", str(tmp_path), "--no-rig"]) == 0
    capsys.readouterr()
    assert read_asset(run / "asset").rig is None and not (run / "exports" / "rigged.glb").exists()


def test_pla4d_rig_refreshes_the_stage_folder_the_asset_and_the_glb(tmp_path: Path, capsys: pytest.CaptureFixture
                                                                    ) -> None:  # fmt: skip
    """``pla4d rig RUN`` writes the same rig to rig/, the asset and rigged.glb; the stage cache stays truthful: a run
    with the same bones reuses it (only asset and exports run again), one with other bones fits again."""
    from pygltflib import GLTF2

    assert main([*ARGV, "--out", str(tmp_path), "--rig-bones", "6"]) == 0
    capsys.readouterr()
    run = tmp_path / "run"
    assert main(["rig", str(run), "--bones", "5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rig_stage"] is not None
    rig = read_asset(run / "asset").rig
    assert rig.num_bones == 5 and json.loads((run / "rig" / "rig.json").read_text())["names"] == rig.names
    with np.load(run / "rig" / "rig.npz") as saved:
        assert np.array_equal(saved["transforms"], rig.transforms)
        assert np.array_equal(saved["gaussian_weights"], rig.gaussian_weights)
    assert len(GLTF2().load(str(run / "exports" / "rigged.glb")).skins[0].joints) == 5
    assert json.loads((run / "config.json").read_text())["preset"]["rig"]["bones"] == 5
    # The same settings through the runner: the rig stage is cached; its rig reaches the asset unchanged.
    assert main([*ARGV, "--out", str(tmp_path), "--rig-bones", "5"]) == 0
    capsys.readouterr()
    stages = _stages(run / "summary.json")
    assert stages["rig"] == {"cached": True} and "seconds" in stages["asset"] and "seconds" in stages["exports"]
    assert np.array_equal(read_asset(run / "asset").rig.transforms, rig.transforms)
    # Other settings: fitted again.
    assert main([*ARGV, "--out", str(tmp_path), "--rig-bones", "6"]) == 0
    capsys.readouterr()
    assert "seconds" in _stages(run / "summary.json")["rig"] and read_asset(run / "asset").rig.num_bones == 6


def test_eval_method_rig_scores_the_rig_driven_splats(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from pla4d.example.clip import ExampleSettings, write_example_clip

    clip = write_example_clip(tmp_path / "clip", ExampleSettings(num_frames=3, fps=8.0, resolution=48, supersample=1,
                                                                 novel_azimuths=(90.0,)))  # fmt: skip
    argv = ["eval", str(clip), "--iterations", "2", "--motion-iterations", "2", "--frames", "all", "--out",
            str(tmp_path / "ev")]  # fmt: skip
    assert main(argv) == 0
    field = json.loads(capsys.readouterr().out.splitlines()[0])
    assert main([*argv, "--method", "rig"]) == 0
    rig = json.loads(capsys.readouterr().out.splitlines()[0])
    assert field["stage"] == "4d" and rig["stage"] == "rig" and rig["frames"] == [0, 1, 2]
    assert 5 < rig["psnr"] < 100 and abs(rig["psnr"] - field["psnr"]) < 3  # same run, splats driven by its bones
    assert rig["seconds"] < field["seconds"]  # the run came from the stage cache
