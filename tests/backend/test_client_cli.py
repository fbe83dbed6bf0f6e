"""The command-line client: settings flags from the table, checked before sending; one clean line per error;
truthful queue and cancel lines. The end-to-end tests run real backends (conftest.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from backend_helpers import REPO

from backend import client_cli
from pla4d import settings as table

# A tiny example job as submit flags (a few seconds on 2 cores, most of it the worker importing torch).
TINY_FLAGS = ["--example", "--preset", "draft", "--frames", "2", "--resolution", "32", "--example-supersample", "1",
              "--iterations", "4", "--motion-iterations", "2", "--static-num-gaussians", "2000",
              "--static-max-gaussians", "4000", "--static-resolutions", "32,48", "--static-view-pool", "4",
              "--static-batch-views", "1"]  # fmt: skip


def request(*argv: str) -> tuple[str, dict]:
    """What ``pla4d submit ARGV`` would send (kind, settings), without a backend."""
    args = client_cli.build_parser().parse_args(["submit", *argv])
    return client_cli.job_request(args, list(argv))


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pla4d: error: ") and "Traceback" not in err, err
    return err


@pytest.fixture
def no_connect(monkeypatch):
    """Fails the test if the client would connect."""

    def refuse(args):
        raise AssertionError("connected to a backend")

    monkeypatch.setattr(client_cli, "_client", refuse)


def test_bad_endpoint_is_one_clean_line():
    out = subprocess.run([sys.executable, "-m", "backend.console", "submit", "--example", "--server", "localhost:5555"],
                         capture_output=True, text=True, cwd=REPO, timeout=60)  # fmt: skip
    assert out.returncode == 2, out
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("pla4d: error: --server 'localhost:5555'") and "tcp://localhost:5555" in out.stderr


@pytest.mark.parametrize("command", [["jobs"], ["fetch", "j1"], ["cancel", "j1"]])
@pytest.mark.parametrize("server", ["tcp://localhost", "127.0.0.1:5555", "http://x", "ipc://"])
def test_bad_endpoint_every_command(command, server, capsys, no_connect):
    assert client_cli.main([*command, "--server", server]) == 2
    assert "write tcp://HOST:PORT" in error_line(capsys)


def test_zmq_errors_are_one_clean_line(capsys):
    too_long = "ipc:///tmp/" + "x" * 200  # a valid address that ZeroMQ refuses (socket paths are short)
    assert client_cli.main(["jobs", "--server", too_long]) == 2
    assert "cannot talk to the backend" in error_line(capsys)


def test_submit_flags_come_from_the_table():
    flags = client_cli.setting_flags()
    for kind in client_cli.KINDS:
        for setting in table.settings_for(kind, remote_only=True):
            assert flags[setting.cli_flag][kind] is setting
    assert not [s.cli_flag for s in table.SETTINGS if not s.remote and s.cli_flag in flags]  # local-only knobs
    # One flag, the setting the job's kind reads.
    assert {k: s.path for k, s in flags["--frames"].items()} == {
        "example": "example.frames", "video": "video.num_frames", "text": "video.num_frames"}  # fmt: skip
    help_text = client_cli.build_parser()._subparsers._group_actions[0].choices["submit"].format_help()
    assert "example.frames" in help_text and "video.num_frames" in help_text and "kind reads" in help_text
    for flag in ("--iterations", "--motion-iterations", "--frames", "--resolution", "--fps", "--seed", "--preset"):
        assert flag in help_text


def test_settings_are_sent_as_table_paths():
    kind, settings = request("--example", "--frames", "5", "--iterations", "7", "--seed", "3", "--preset", "draft",
                             "--static-resolutions", "32,64", "--no-contrastive", "--fps", "12")  # fmt: skip
    assert kind == "example"
    assert settings == {"preset": "draft", "seed": 3, "values": {
        "example.frames": 5, "static.iterations": 7, "static.resolutions": [32, 64], "static.batch_views": 0,
        "asset.fps": 12.0}}  # fmt: skip
    assert request("a fox", "--frames", "100", "--motion-iterations", "9") == (
        "text", {"values": {"video.num_frames": 100, "motion.iterations": 9}})  # fmt: skip
    assert request("--example") == ("example", {"values": {}})


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--example", "--static-view-pool", "0"], "static.view_pool must be an integer from 1 to 1024 (got 0)"),
        (["--example", "--frames", "100"], "example.frames must be an integer from 1 to 64"),  # 100 is fine for text
        (["a fox", "--frames", "1"], "video.num_frames must be an integer from 2 to 129"),
        (["--example", "--motion-iterations", "-1"], "motion.iterations must be an integer from 1 to 100000"),
        (["--example", "--seed", "x"], "must be an integer from 0 to 2147483647"),
        (["--example", "--width", "512"], "--width does not act on example jobs, only on video and text jobs"),
        (["a fox", "--example"], "several jobs"),
        ([], "no job"),
    ],
)
def test_bad_settings_are_refused_before_connecting(argv, expected, capsys, no_connect):
    assert client_cli.main(["submit", *argv, "--server", "tcp://127.0.0.1:9"]) == 2
    assert expected in error_line(capsys)


def test_a_knob_added_to_the_table_becomes_a_submit_flag(monkeypatch, capsys, no_connect):
    knob = table.Setting("motion.test_knob", "int", "a knob this test adds", 1, 9)
    monkeypatch.setattr(table, "SETTINGS", [*table.SETTINGS, knob])
    assert client_cli.main(["submit", "--help"]) == 0
    assert "--motion-test-knob" in capsys.readouterr().out
    assert request("--example", "--motion-test-knob", "4") == ("example", {"values": {"motion.test_knob": 4}})
    assert client_cli.main(["submit", "--example", "--motion-test-knob", "10"]) == 2
    assert "motion.test_knob must be an integer from 1 to 9 (got 10)" in error_line(capsys)


def test_help_synopsis_and_every_flag_has_help(capsys):
    assert client_cli.main(["submit", "--help"]) == 0
    usage = capsys.readouterr().out.split("\n\n")[0]
    for part in ("PROMPT", "--example", "--video FRAMES --mesh M", "--image I --mesh M", "--server tcp://HOST:PORT"):
        assert part in usage
    subparsers = client_cli.build_parser()._subparsers._group_actions[0].choices
    assert set(subparsers) == {"submit", "jobs", "fetch", "cancel"}
    for name, parser in subparsers.items():
        for action in parser._actions:
            assert action.help and action.help.strip(), (name, action.option_strings or action.dest)


def test_submit_follow_fetch_then_cancel_a_finished_job(backend_factory, tmp_path, capsys):
    backend = backend_factory("--rate", "0")
    out = tmp_path / "result"
    code = client_cli.main(["submit", *TINY_FLAGS, "--server", backend.endpoint, "--out", str(out), "--timeout", "120"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.err.splitlines()
    job_id = lines[0].split()[1]
    assert lines[0] == f"job {job_id} submitted: running now", lines
    assert not [line for line in lines if "queue" in line], lines  # an idle backend: no queue line at all
    assert f"[{job_id}] done" in lines and lines[-1].startswith("saved ")
    assert captured.out.strip() == str(out) and (out / "summary.json").exists()

    assert client_cli.main(["cancel", job_id, "--server", backend.endpoint]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"pla4d: error: job {job_id} had already finished (done); nothing was cancelled\n"


def test_one_truthful_queue_line(backend_factory, capsys):
    backend = backend_factory("--rate", "0")
    server = ["--server", backend.endpoint]
    long_job = [*TINY_FLAGS, "--iterations", "100000"]  # stays running until cancelled
    lines = []
    for _ in range(3):
        assert client_cli.main(["submit", *long_job, "--detach", *server]) == 0
        captured = capsys.readouterr()
        assert captured.err.count("\n") == 1, captured.err  # one line each, nothing contradicting it
        lines.append(captured.err.strip().split(" ", 2)[1:])
        assert captured.out.strip() == lines[-1][0]
    (first, running), (second, next_in_line), (third, behind) = lines
    assert running == "submitted: running now"
    assert next_in_line == "submitted: queued: next in line, waiting for a free worker"
    assert behind == "submitted: queued behind 1 waiting job"

    assert client_cli.main(["cancel", third, *server]) == 0
    assert capsys.readouterr().out == "cancelled\n"
    assert client_cli.main(["cancel", first, *server]) == 0
    assert capsys.readouterr().out == "cancelling\n"
    assert client_cli.main(["cancel", third, *server]) == 1
    assert "had already finished (cancelled); nothing was cancelled" in error_line(capsys)
