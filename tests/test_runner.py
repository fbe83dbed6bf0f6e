"""The one runner: each stage's cache key changes when, and only when, what it depends on changes; inputs are
checked before the first stage; settings are checked before any work."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from pla4d.cli import main
from pla4d.config import get_preset
from pla4d.media import save_png
from pla4d.runner import STAGES, RunContext
from pla4d.runner.core import stage_key

ARTIFACTS = ("prompt", "user_video", "video_frames", "image", "matted_image", "user_mesh", "frames", "frame0",
             "mesh", "front", "canonical", "field", "rig", "asset")  # fmt: skip
SECTIONS = {"focal": "radius", "static": "iterations", "motion": "iterations", "video": "steps", "matte": "size",
            "mesh": "steps", "rig": "bones"}  # fmt: skip
# What each stage's result depends on, written out by hand: the test fails if a declaration drifts from it.
DEPENDS = {
    "example": {"example.frames", "example.resolution", "example.supersample", "asset.fps", "novel_views"},
    "video": {"cfg.video", "seed", "prompt", "user_video"},
    "matte": {"cfg.matte", "video_frames", "image"},
    "mesh": {"cfg.mesh", "cfg.focal", "seed", "frame0", "matted_image", "user_mesh"},
    "focal": {"cfg.focal", "frame0", "mesh"},
    "static": {"cfg.static", "seed", "frame0", "mesh", "front"},
    "motion": {"cfg.motion", "seed", "canonical", "front", "frames"},
    "rig": {"cfg.rig", "motion.export_frame_factor", "seed", "field", "canonical", "mesh", "frames"},
    "asset": {
        "motion.export_frame_factor",
        "asset.fps",
        "prompt_text",
        "preset_name",
        "field",
        "canonical",
        "mesh",
        "front",
        "frames",
        "rig",
    },
    "exports": {"asset", "front"},
}


def _context(change: str | None = None) -> RunContext:
    preset = get_preset("draft")
    values = {"example.frames": 8, "example.resolution": 128, "example.supersample": 2, "asset.fps": 12.0}
    inputs = {"prompt": "a fox", "example_novel_views": False}
    keys = {a: f"key-{a}" for a in ARTIFACTS}
    seed = 0
    if change is not None and change.startswith("cfg."):
        name = change[4:]
        field, section = SECTIONS[name], getattr(preset, name)
        bumped = dataclasses.replace(section, **{SECTIONS[name]: getattr(section, field) + 1})
        preset = dataclasses.replace(preset, **{name: bumped})
    elif change == "motion.export_frame_factor":
        preset = preset.replace_motion(export_frame_factor=2)
    elif change == "preset_name":
        preset = dataclasses.replace(preset, name="other")
    elif change == "seed":
        seed = 1
    elif change in values:
        values[change] += 1
    elif change == "novel_views":
        inputs["example_novel_views"] = True
    elif change == "prompt_text":
        inputs["prompt"] = "a cat"
    elif change in keys:
        keys[change] = "changed"
    elif change is not None:
        raise AssertionError(change)
    return RunContext(out=Path("/nonexistent"), preset=preset, seed=seed, values=values, inputs=inputs, keys=keys)


CHANGES = sorted({*(f"cfg.{s}" for s in SECTIONS), "seed", "example.frames", "example.resolution", "asset.fps",
                  "example.supersample", "novel_views", "prompt_text", "preset_name", "motion.export_frame_factor",
                  *ARTIFACTS})  # fmt: skip


@pytest.mark.parametrize("name", list(DEPENDS))
def test_stage_key_changes_when_and_only_when_its_dependencies_change(name: str) -> None:
    stage = STAGES[name]
    base = stage_key(_context(), stage)
    assert stage_key(_context(), stage) == base  # deterministic
    changed = {c for c in CHANGES if stage_key(_context(c), stage) != base}
    # A change of a whole preset section (motion.iterations) counts for a stage that reads only one of its fields
    # (asset: motion.export_frame_factor) only through that field.
    assert changed == DEPENDS[name], (name, sorted(changed ^ DEPENDS[name]))


def test_every_stage_is_declared_once_in_order() -> None:
    assert tuple(STAGES) == ("example", "video", "matte", "mesh", "focal", "static", "motion", "rig", "asset",
                            "exports")  # fmt: skip
    assert set(STAGES) == set(DEPENDS)  # every stage has its row in the dependency table
    made = [a for s in STAGES.values() for a in s.makes]
    # frames/frame0/mesh come from the example, the matte or the mesh stage: alternatives, never in one run.
    assert sorted(a for a in made if made.count(a) > 1) == ["frame0", "frame0", "frames", "frames", "mesh", "mesh"]


def _clip(tmp_path: Path, frames: int = 3) -> tuple[Path, Path]:
    from pla4d.example.clip import ExampleSettings, write_example_clip

    clip = write_example_clip(tmp_path / "clip", ExampleSettings(num_frames=frames, resolution=48, supersample=1,
                                                                 novel_azimuths=()))  # fmt: skip
    return clip / "input", clip / "first_frame.glb"


def test_a_bad_frame_ends_the_run_before_any_stage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frames, mesh = _clip(tmp_path)
    (frames / "001.png").write_bytes(b"\x89PNG\r\n\x1a\n not a picture")
    out = tmp_path / "run"
    assert main(["run", "--video", str(frames), "--mesh", str(mesh), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "001.png is not a readable image" in err and "Traceback" not in err
    assert not out.exists()  # nothing ran, nothing was written
    save_png(frames / "001.png", np.ones((48, 48, 4), np.float32))  # readable, but opaque: not matted
    assert main(["run", "--video", str(frames), "--mesh", str(mesh), "--out", str(out)]) == 2
    assert "001.png has no transparent background" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [("--motion-iterations", "-1", "motion.iterations must be an integer from 1 to 100000 (got -1)"),
     ("--fps", "0", "asset.fps must be a number from 1 to 240 (got 0.0)"),
     ("--iterations", "many", "must be an integer from 1 to 100000 (got 'many')")],
)  # fmt: skip
def test_settings_are_checked_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, message: str
) -> None:
    out = tmp_path / "run"
    argv = ["run", "--video", str(tmp_path / "frames"), "--mesh", str(tmp_path / "m.glb"), "--out", str(out)]
    assert main([*argv, flag, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pla4d: error:") and message in err and "Traceback" not in err
    assert not out.exists()


def test_lift_help_lists_only_what_lift_reads(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["lift", "--help"])
    text = capsys.readouterr().out
    assert "--iterations" in text and "--no-focal-alignment" in text
    assert "--motion-iterations" not in text and "--fps" not in text and "--frames" not in text


def test_bench_help_works(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--help"])
    assert exit_info.value.code == 0 and "raster" in capsys.readouterr().out


def test_a_rerun_skips_cached_stages_and_a_changed_setting_reruns_only_downstream(tmp_path: Path) -> None:
    from pla4d.runner import run_lift

    frames, mesh = _clip(tmp_path)
    preset = get_preset("draft").replace_static(iterations=2, num_gaussians=500, max_gaussians=1000)
    events: list[dict] = []
    run_lift(frames / "000.png", mesh, tmp_path / "run", preset, show_progress=False, on_event=events.append)
    assert [e["stage"] for e in events if e["type"] == "stage_finished"] == ["focal", "static"]
    events.clear()
    run_lift(frames / "000.png", mesh, tmp_path / "run", preset, show_progress=False, on_event=events.append)
    assert [e["stage"] for e in events if e["type"] == "stage_skipped"] == ["focal", "static"]
    events.clear()
    run_lift(frames / "000.png", mesh, tmp_path / "run", preset.replace_static(iterations=3), show_progress=False,
             on_event=events.append)  # fmt: skip
    assert [(e["type"], e["stage"]) for e in events if e["type"].startswith("stage_")] == [
        ("stage_skipped", "focal"), ("stage_started", "static"), ("stage_finished", "static")]  # fmt: skip
