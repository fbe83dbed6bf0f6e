"""`pla4d lift` and `pla4d eval` end to end on a tiny built-in example clip (a few iterations)."""

import json
from pathlib import Path

import numpy as np
import pytest

from pla4d.cameras import focal_from_fov
from pla4d.cli import main
from pla4d.example.clip import ExampleSettings, write_example_clip
from pla4d.gaussians.ply import load_ply
from pla4d.media import save_png

SETTINGS = ExampleSettings(num_frames=2, fps=8.0, resolution=64, supersample=3, novel_azimuths=(90.0, 200.0))


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return write_example_clip(tmp_path_factory.mktemp("clip"), SETTINGS)


def test_lift_writes_a_complete_run_folder(tiny_clip, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["lift", "--image", str(tiny_clip / "input" / "000.png"), "--mesh", str(tiny_clip / "first_frame.glb")]
    assert main([*argv, "--out", str(run), "--iterations", "6"]) == 0
    summary = json.loads(capsys.readouterr().out)
    for name in ("static/canonical.ply", "focal/camera.json", "static/preview.png", "static/losses.jsonl",
                 "static/stage.json", "focal/stage.json", "config.json", "summary.json"):  # fmt: skip
        assert (run / name).is_file(), name
    model = load_ply(run / "static" / "canonical.ply")
    assert model.num_gaussians == summary["gaussians"] > 1000
    camera = json.loads((run / "focal" / "camera.json").read_text())
    # The example is rendered at fov 40; focal alignment finds it from the image alone.
    assert camera["focal_px"] == pytest.approx(focal_from_fov(40.0, 64), rel=0.03)
    losses = [json.loads(line) for line in (run / "static" / "losses.jsonl").read_text().splitlines()]
    assert len(losses) == 6 and losses[0]["texture_lpips"] > 0  # the perceptual network really ran
    config = json.loads((run / "config.json").read_text())
    assert config["preset"]["static"]["iterations"] == 6
    assert set(summary["stages"]) == {"focal", "static"} and summary["timings"]["static_s"] > 0


def test_eval_prints_one_json_line_per_method(tiny_clip, tmp_path, capsys):
    argv = ["eval", str(tiny_clip), "--preset", "draft", "--iterations", "4", "--frames", "all", "--baseline"]
    argv += ["--method", "static"]
    assert main([*argv, "--out", str(tmp_path / "ev")]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["method"] for r in lines] == ["pla4d", "static"]
    ours, static = lines
    for record in lines:
        assert {"psnr", "ssim", "lpips", "iou", "seconds", "peak_mb", "views"} <= set(record)
        assert set(record["views"]) == {"novel/090", "novel/200"}
        assert record["frames"] == [0, 1]
    assert 10 < ours["psnr"] < 60 and 0 < ours["iou"] <= 1 and ours["seconds"] > 0
    # The static baseline equals the ground truth at frame 0 and differs at frame 1.
    assert static["psnr"] < 100 and static["iou"] > 0.5
    assert (tmp_path / "ev" / "side_by_side.png").is_file()


def test_lift_user_errors_are_one_line(tmp_path, capsys, tiny_clip):
    mesh = str(tiny_clip / "first_frame.glb")
    assert main(["lift", "--image", str(tmp_path / "missing.png"), "--mesh", mesh, "--out", str(tmp_path)]) == 2
    opaque = tmp_path / "opaque.png"
    save_png(opaque, np.ones((32, 32, 3)))
    assert main(["lift", "--image", str(opaque), "--mesh", mesh, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "no transparent background" in err and "Traceback" not in err
    assert main(["eval", str(tmp_path / "nope"), "--preset", "draft"]) == 2
    assert main(["eval", str(tiny_clip), "--preset", "ultra"]) == 2


def test_lift_reports_events_and_can_be_cancelled(tiny_clip, tmp_path):
    from pla4d.config import get_preset
    from pla4d.errors import Cancelled
    from pla4d.runner import run_lift

    events = []
    preset = get_preset("draft").replace_static(iterations=5)
    image, mesh = tiny_clip / "input" / "000.png", tiny_clip / "first_frame.glb"
    run_lift(image, mesh, tmp_path / "a", preset, on_event=events.append, show_progress=False)
    kinds = [(e["type"], e.get("stage")) for e in events]
    assert kinds[0] == ("stage_started", "focal") and ("stage_finished", "static") in kinds
    progress = [e for e in events if e["type"] == "progress"]
    assert [e["iteration"] for e in progress] == [1, 2, 3, 4, 5] and progress[-1]["eta_s"] == 0
    previews = [e for e in events if e["type"] == "preview"]
    assert previews and previews[-1]["points"]["positions"].shape[1] == 3

    with pytest.raises(Cancelled):
        run_lift(image, mesh, tmp_path / "b", preset, should_cancel=lambda: True, show_progress=False)
    assert (tmp_path / "b" / "config.json").is_file()  # what was written before the cancel stays


def test_video_psnr_pools_the_mse_over_frames():
    from pla4d.evaluate import _aggregate

    exact = {"mse": 0.0, "psnr": 100.0, "ssim": 1.0, "lpips": 0.0, "iou": 1.0}
    off = {"mse": 0.01, "psnr": 20.0, "ssim": 0.5, "lpips": 0.2, "iou": 0.5}
    mean, views = _aggregate({"v": [exact, off]})
    # Pooled MSE 0.005 -> 23.01 dB; averaging per-frame PSNR would have given 60 dB.
    assert views["v"]["psnr"] == pytest.approx(23.0103, abs=1e-3)
    assert views["v"]["ssim"] == pytest.approx(0.75) and mean["psnr"] == views["v"]["psnr"]


def test_run_and_eval_4d_with_stage_cache(tiny_clip, tmp_path, capsys):
    from pla4d.asset.format import read_asset

    run = tmp_path / "run"
    argv = ["run", "--video", str(tiny_clip / "input"), "--mesh", str(tiny_clip / "first_frame.glb")]
    argv += ["--out", str(run), "--iterations", "4", "--motion-iterations", "4"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    asset = read_asset(run / "asset")
    assert asset.positions.shape == (2, first["gaussians"], 3)
    assert asset.mesh is not None and asset.mesh.positions.shape[0] == 2
    for path in first["exports"]:
        assert Path(path).stat().st_size > 0
    names = {Path(path).name for path in first["exports"]}
    assert {"animated_mesh.glb", "preview.mp4", "contact_sheet.png", "canonical.spz"} <= names  # default exports
    assert "static_s" in first["timings"] and "motion_s" in first["timings"]
    # Unchanged inputs and settings: every stage comes from the cache.
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert set(again["timings"]) == {"total_s"}
    # --force motion redoes motion and what follows, not the static stage.
    assert main([*argv, "--force", "motion"]) == 0
    forced = json.loads(capsys.readouterr().out)
    assert "motion_s" in forced["timings"] and "static_s" not in forced["timings"]

    renders = tmp_path / "renders"
    argv = ["eval", str(tiny_clip), "--preset", "draft", "--iterations", "3", "--motion-iterations", "3"]
    argv += ["--frames", "all", "--out", str(tmp_path / "ev"), "--save-renders", str(renders)]
    assert main(argv) == 0
    record = json.loads(capsys.readouterr().out.splitlines()[0])
    assert record["stage"] == "4d" and record["frames"] == [0, 1]
    assert 0 <= record["vertex_error"] < 0.5 and record["match_error"] < 0.05
    assert sorted(p.name for p in (renders / "090").iterdir()) == ["000.png", "001.png"]


def test_run_rejects_a_video_file_and_missing_frames(tmp_path, tiny_clip):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not really")
    mesh = str(tiny_clip / "first_frame.glb")
    assert main(["run", "--video", str(video), "--mesh", mesh, "--out", str(tmp_path / "r")]) == 2
    assert main(["run", "--video", str(tmp_path / "none"), "--mesh", mesh, "--out", str(tmp_path / "r")]) == 2
