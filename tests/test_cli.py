import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pla4d.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert "pla4d" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [["demo", "--frames", "0"], ["demo", "--fps", "-1"], ["demo", "--resolution", "3"]],
)
def test_bad_demo_settings_are_one_line_errors(argv, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pla4d: error:") and "Traceback" not in err


def test_unknown_command_is_a_usage_error():
    result = subprocess.run([sys.executable, "-m", "pla4d", "frobnicate"], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_build_addon_zip(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "build_addon.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    path = Path(result.stdout.strip())
    assert path.is_file()
    with zipfile.ZipFile(path) as archive:
        assert {"blender_manifest.toml", "__init__.py"} <= set(archive.namelist())


def test_ablation_flags_reach_the_preset():
    from pla4d.cli import _preset, build_parser

    parser = build_parser()
    plain = _preset(parser.parse_args(["eval", "clip"]))
    assert plain.motion.first_frame_consistency and plain.static.batch_views > 0 and plain.focal.enabled
    ablated = _preset(
        parser.parse_args(["eval", "clip", "--no-first-frame-consistency", "--no-contrastive", "--no-focal-alignment"])
    )
    assert not ablated.motion.first_frame_consistency
    assert ablated.static.batch_views == 0 and not ablated.focal.enabled
    assert ablated.motion.iterations == plain.motion.iterations  # nothing else changed
