"""The model registry: what each preset needs, presence checks, verify, and the CLI (offline)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from pla4d.config import PRESETS, get_preset
from pla4d.errors import MissingWeightsError
from pla4d.models import KNOWN, needed_models
from pla4d.models.registry import ModelSpec, describe, locate, require, spec_for, verify


@pytest.fixture(autouse=True)
def empty_caches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net"))


def test_every_preset_model_is_described() -> None:
    for preset in PRESETS.values():
        for spec in needed_models(preset):
            assert spec.id in KNOWN, spec.id
            assert spec.size != "unknown" and spec.licence and spec.purpose
    ids = [s.id for s in needed_models(get_preset("standard"))]
    assert ids == ["Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "isnet-general-use", "openai/shap-e-img2img",
                   "ashawkey/stable-zero123-diffusers"]  # fmt: skip
    external = get_preset("draft").replace_mesh(model="external", command="x {image} {mesh}")
    assert "openai/shap-e-img2img" not in [s.id for s in needed_models(external)]


def test_require_names_every_missing_model_and_the_pull_command() -> None:
    specs = needed_models(get_preset("draft"))
    with pytest.raises(MissingWeightsError) as info:
        require(specs)
    text = str(info.value)
    for spec in specs:
        if not spec.optional:
            assert spec.id in text
    assert "ashawkey/stable-zero123-diffusers" not in text  # optional: the run goes on without it
    assert "pla4d models pull Wan-AI/Wan2.1-T2V-1.3B-Diffusers u2net openai/shap-e-img2img" in text


def test_rembg_file_is_found_and_verified(tmp_path: Path) -> None:
    spec = KNOWN["u2netp"]
    assert locate(spec)[0] is None
    home = tmp_path / "u2net"
    home.mkdir()
    (home / "u2netp.onnx").write_bytes(b"not the model")
    assert locate(spec)[0] == home / "u2netp.onnx"
    assert verify(spec)["ok"] is False  # wrong md5
    from tests.model_files import u2netp_onnx

    real = u2netp_onnx()
    if real is not None:
        shutil.copy(real, home / "u2netp.onnx")
        assert verify(spec)["ok"] is True


def test_local_folders_and_cache_layout(tmp_path: Path) -> None:
    folder = tmp_path / "pipe"
    (folder / "transformer").mkdir(parents=True)
    index = {"_class_name": "WanPipeline", "transformer": ["diffusers", "X"], "safety_checker": [None, None]}
    (folder / "model_index.json").write_text(json.dumps(index))
    (folder / "transformer" / "config.json").write_text("{}")
    spec = spec_for(str(folder), "text-to-video")
    path, why = locate(spec)
    assert path is None and "transformer/ weights" in why
    (folder / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    assert locate(spec)[0] == folder
    assert describe(spec)["installed"] is True

    # A model id in the Hugging Face cache layout (snapshot files linked to blobs named by their sha256).
    data = b"weights"
    sha = hashlib.sha256(data).hexdigest()
    repo = tmp_path / "hf" / "models--owner--clip"
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / sha).write_bytes(data)
    snap = repo / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    (snap / "config.json").write_text("{}")
    (snap / "model.safetensors").symlink_to(repo / "blobs" / sha)
    clip = ModelSpec("owner/clip", "clip", layout="transformers")
    assert locate(clip)[0] == snap
    assert verify(clip) == {"id": "owner/clip", "ok": True, "present": True, "path": str(snap), "files_hashed": 1,
                            "bad": []}  # fmt: skip
    (repo / "blobs" / sha).write_bytes(b"corrupted")
    assert verify(clip)["bad"] == ["model.safetensors"]


def test_models_cli(capsys: pytest.CaptureFixture[str]) -> None:
    from pla4d.cli import main

    assert main(["models", "list", "--preset", "draft", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["id"] for r in rows} >= {"Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "u2net", "openai/shap-e-img2img"}
    assert all(not r["installed"] and r["location"] for r in rows)
    assert main(["models", "list"]) == 0
    assert "Apache-2.0" in capsys.readouterr().out
    assert main(["models", "verify", "u2netp"]) == 1
    assert json.loads(capsys.readouterr().out)["present"] is False
    assert main(["models", "pull"]) == 2
    assert "name the models" in capsys.readouterr().err


def test_unknown_rembg_session_is_a_user_error() -> None:
    with pytest.raises(ValueError, match="unknown rembg session"):
        spec_for("u3net", "matting")
