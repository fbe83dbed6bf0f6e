"""The one settings table: CLI flags, checks, the capabilities rows and the preset mapping derive from it."""

from __future__ import annotations

import argparse

import pytest

from pla4d import settings
from pla4d.config import PRESETS, get_preset
from pla4d.settings import Setting, SettingError


def test_a_new_knob_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from pla4d.cli import _preset, build_parser

    knob = Setting("motion.rigidity_weight", "float", "weight of the local rigidity term", 0.0, 1e6)
    monkeypatch.setattr(settings, "SETTINGS", [*settings.SETTINGS, knob])
    # the CLI: a flag with the range in its help, on the commands whose stages read it
    args = build_parser().parse_args(["run", "--video", "v", "--mesh", "m", "--out", "o", "--motion-rigidity-weight",
                                      "250"])  # fmt: skip
    assert _preset(args).motion.rigidity_weight == 250.0
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    assert "--motion-rigidity-weight" in capsys.readouterr().out
    assert not any(a.dest == "set:motion.rigidity_weight" for a in _subparser("lift")._actions)
    # the server's bounds
    assert settings.check({"motion.rigidity_weight": 3}, "video") == {"motion.rigidity_weight": 3.0}
    with pytest.raises(SettingError, match=r"motion.rigidity_weight must be a number from 0 to 1000000 \(got -1\)"):
        settings.check({"motion.rigidity_weight": -1}, "text")
    # the capabilities table, with every preset's default
    row = next(r for r in settings.wire_table(PRESETS.values()) if r["path"] == "motion.rigidity_weight")
    assert row["min"] == 0.0 and row["max"] == 1e6 and row["kinds"] == ["example", "video", "text"]
    assert row["defaults"] == {name: p.motion.rigidity_weight for name, p in PRESETS.items()}


def _subparser(name: str) -> argparse.ArgumentParser:
    from pla4d.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def test_checks_name_the_range_and_refuse_wrong_types() -> None:
    with pytest.raises(SettingError, match=r"video.num_frames must be an integer from 2 to 129 \(got 500\)"):
        settings.check({"video.num_frames": 500}, "text")
    with pytest.raises(SettingError, match="must be an integer"):
        settings.check({"static.iterations": True}, "lift")
    with pytest.raises(SettingError, match="must be a number"):
        settings.check({"asset.fps": float("nan")}, "video")
    with pytest.raises(SettingError, match="unknown setting 'motion.iterations' for lift"):
        settings.check({"motion.iterations": 5}, "lift")
    with pytest.raises(SettingError, match="list of 1 to 8 values"):
        settings.check({"static.resolutions": []}, "lift")
    # local-only knobs (a model to load, a command to run) are refused from the wire
    with pytest.raises(SettingError, match="unknown setting 'mesh.command'"):
        settings.check({"mesh.command": "rm -rf /"}, "text")
    assert settings.check({"mesh.command": "run {image}"}, "generate", remote=False) == {"mesh.command": "run {image}"}


def test_apply_sets_the_preset_and_what_goes_with_it() -> None:
    values = settings.check({"motion.iterations": 30, "mesh.command": "x {image} {mesh}", "static.resolutions": [64],
                             "static.resolution_steps": [], "asset.fps": 12}, "generate", remote=False)  # fmt: skip
    preset = settings.apply(get_preset("standard"), values)
    assert preset.motion.iterations == 30 and preset.motion.epochs is None  # iterations win over epochs
    assert preset.mesh.model == "external" and preset.mesh.command == "x {image} {mesh}"
    assert preset.static.resolutions == (64,) and preset.static.resolution_steps == ()
    assert preset.video == get_preset("standard").video  # nothing else changed
    assert settings.run_values(values, "generate") == {"job.seed": 0, "asset.fps": 12.0, "asset.exports": "spz"}
    assert (
        settings.apply(
            get_preset("draft"), settings.check({"motion.guidance_model": "None"}, "run", remote=False)
        ).motion.guidance_model
        is None
    )


def test_older_protocol_maps_become_paths() -> None:
    body = {"overrides": {"iterations": 5, "motion_iterations": 3}, "generate": {"mesh_grid": 64},
            "example": {"frames": 4}, "fps": 10}  # fmt: skip
    assert settings.from_legacy(body) == {"static.iterations": 5, "motion.iterations": 3, "mesh.grid_size": 64,
                                          "example.frames": 4, "asset.fps": 10}  # fmt: skip
    with pytest.raises(SettingError, match="unknown overrides setting 'lr'"):
        settings.from_legacy({"overrides": {"lr": 1}})


def test_every_setting_is_well_formed() -> None:
    paths = [s.path for s in settings.SETTINGS]
    assert len(paths) == len(set(paths))
    for s in settings.SETTINGS:
        assert s.type in settings.TYPES and s.help, s.path
        if s.section not in settings.RUN_SECTIONS:
            settings.preset_value(get_preset("draft"), s.path)  # the field exists
        for scope in settings.SCOPES:
            flags = [x.cli_flag for x in settings.settings_for(scope)]
            assert len(flags) == len(set(flags)), (scope, flags)
