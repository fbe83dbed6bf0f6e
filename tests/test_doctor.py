"""`pla4d doctor`: missing models, a busy backend port, the GPU rows and the exit codes."""

from __future__ import annotations

import argparse
import json
import socket
from pathlib import Path

import pytest

from pla4d import doctor
from pla4d.config import get_preset
from pla4d.models import needed_models


@pytest.fixture(autouse=True)
def empty_caches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net"))
    return cache


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    """The doctor as the CLI will call it: its own subparser, then its handler."""
    parser = argparse.ArgumentParser(prog="pla4d")
    doctor.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["doctor", "--json", *argv])
    code = args.handler(args)
    return code, json.loads(capsys.readouterr().out)


def _row(report: dict, name: str) -> dict:
    return next(r for r in report["checks"] if r["check"] == name)


def _install_draft_models(cache: Path, u2net: Path) -> None:
    """The draft preset's required models in the layouts the registry checks (config and weight files)."""
    for spec in needed_models(get_preset("draft")):
        if spec.optional:
            continue
        if spec.source == "rembg":
            u2net.mkdir(parents=True, exist_ok=True)
            (u2net / f"{spec.id}.onnx").write_bytes(b"onnx")
            continue
        repo = cache / ("models--" + spec.id.replace("/", "--"))
        snapshot = repo / "snapshots" / ("c" * 40)
        (snapshot / "unet").mkdir(parents=True)
        (snapshot / "model_index.json").write_text(json.dumps({"_class_name": "X", "unet": ["diffusers", "U"]}))
        (snapshot / "unet" / "config.json").write_text("{}")
        (snapshot / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"w")
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text("c" * 40)


def test_missing_models_fail_the_chosen_preset(capsys) -> None:
    code, report = _run(capsys)
    assert code == 1 and report["can_run"] is False and report["preset"] == "draft"
    row = _row(report, "models: draft")
    assert row["status"] == "fail"
    assert "missing Wan-AI/Wan2.1-T2V-1.3B-Diffusers, u2net, openai/shap-e-img2img" in row["value"]
    assert "ashawkey/stable-zero123-diffusers (that refinement is off)" in row["value"]  # optional: not a failure
    assert row["fix"].startswith("pla4d models pull --preset draft (~")
    assert _row(report, "models: standard")["status"] == "warn"  # not the chosen preset


def test_present_models_and_a_busy_port(capsys, empty_caches: Path, tmp_path: Path) -> None:
    _install_draft_models(empty_caches, tmp_path / "u2net")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, report = _run(capsys, "--port", str(port))
        row = _row(report, "backend port")
        assert (
            row["status"] == "warn"
            and row["value"] == f"127.0.0.1:{port} in use (a backend already running, or another program)"
        )
        assert "pla4d-backend --bind" in row["fix"]
    assert code == 0 and report["can_run"] is True  # a busy port does not stop the CLI from running the preset
    assert _row(report, "models: draft")["status"] == "info"  # only the optional Zero123 is missing

    code, report = _run(capsys, "--port", str(port))
    assert _row(report, "backend port") == {
        "check": "backend port",
        "status": "ok",
        "value": f"127.0.0.1:{port} free",
        "fix": "",
    }

    # --gpu: the same machine fails without a working CUDA device and gsplat kernels.
    code, report = _run(capsys, "--gpu")
    assert code == (0 if report["gpu_ready"] else 1)


def test_table_output_and_exit_code(capsys) -> None:
    parser = argparse.ArgumentParser(prog="pla4d")
    doctor.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["doctor", "--preset", "standard"])
    assert args.handler(args) == 1
    out = capsys.readouterr().out
    assert "models: standard  fail" in out and "fix: pla4d models pull --preset standard" in out
    assert out.rstrip().endswith("text-to-4D with the standard preset cannot run here: fix the 'fail' rows")


def _cuda_facts(probe: dict) -> dict:
    known = doctor.facts(kernels=False)
    known["cuda"] = {
        "available": True,
        "torch_cuda": "12.8",
        "arch_list": ["sm_80", "sm_90"],
        "devices": [{"index": 0, "name": "NVIDIA H100", "capability": "9.0", "memory_gb": 85.0}],
    }
    known["gsplat"] = {"version": "1.5.3", "installed": True}
    known["probe"] = probe
    return known


def test_gpu_rows_from_the_probe() -> None:
    ok = {"torch": {"ok": True}, "gsplat": {"ok": True}, "nvdiffrast": {"ok": False, "error": "ImportError: x"}}
    rows = doctor.checks(_cuda_facts(ok), "draft", "127.0.0.1", 1)
    cuda = next(r for r in rows if r["check"] == "cuda")
    assert cuda["status"] == "ok" and "cuda:0 NVIDIA H100 (sm_90, 85.0 GB)" in cuda["value"]
    assert next(r for r in rows if r["check"] == "gsplat")["status"] == "ok"
    assert doctor.verdict(rows, gpu=True)[1] is True

    error = "RuntimeError: CUDA error: no kernel image is available for execution on the device"
    broken = {"torch": {"ok": True}, "gsplat": {"ok": False, "error": error}}
    rows = doctor.checks(_cuda_facts(broken), "draft", "127.0.0.1", 1)
    gsplat = next(r for r in rows if r["check"] == "gsplat")
    assert gsplat["status"] == "fail" and "no kernel image" in gsplat["value"]
    assert 'TORCH_CUDA_ARCH_LIST="9.0" pip install --force-reinstall' in gsplat["fix"]
    assert doctor.verdict(rows, gpu=False) == (False, False)  # --device auto would pick the GPU and fail

    no_torch = {"torch": {"ok": False, "error": "RuntimeError: no kernel image"}}
    rows = doctor.checks(_cuda_facts(no_torch), "draft", "127.0.0.1", 1)
    cuda = next(r for r in rows if r["check"] == "cuda")
    assert cuda["status"] == "fail" and "install a torch 2.13.0 build" in cuda["fix"]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("no kernel image is available for execution on the device", "built for another GPU architecture"),
        (
            "gsplat: No CUDA toolkit found. 'NoneType' object has no attribute 'rasterize'",
            "needs the CUDA toolkit 12.8",
        ),
        ("ImportError: gsplat_cuda.so: undefined symbol: _ZN3c10", "built against another torch"),
        (
            "The detected CUDA version (12.1) mismatches the version that was used to compile PyTorch (12.8)",
            "is not torch's CUDA 12.8",
        ),
    ],
)
def test_gsplat_fix_names_the_cause(error: str, expected: str) -> None:
    fix = doctor.gsplat_fix(error, ["9.0", "8.0"], "12.8")
    assert expected in fix and 'TORCH_CUDA_ARCH_LIST="9.0;8.0"' in fix


def test_facts_are_json() -> None:
    known = doctor.facts(kernels=False)
    assert json.loads(json.dumps(known)) == known
    assert known["addon"]["protocol_version"] == 1 and known["models"]["draft"]


def test_a_working_probe_is_cached_and_a_failed_one_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = [{"error": "the CUDA probe crashed"}, {"torch": {"ok": True}}, {"torch": {"ok": False}}]
    monkeypatch.setattr(doctor, "_PROBED", {})
    monkeypatch.setattr(doctor, "_probe_child", lambda timeout: answers.pop(0))
    assert doctor._run_probe(1.0) == {"error": "the CUDA probe crashed"}
    assert doctor._run_probe(1.0) == {"torch": {"ok": True}}
    assert doctor._run_probe(1.0) == {"torch": {"ok": True}} and len(answers) == 1
