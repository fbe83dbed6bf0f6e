"""Text-to-video behind one interface: tiny random Wan and CogVideoX loaded through the real loading code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pla4d.config import VideoConfig
from pla4d.errors import Cancelled
from pla4d.textvideo import full_prompt, load_text_to_video, valid_frame_count, valid_size

pytest.importorskip("diffusers")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("family", ["wan", "cogvideox"])
def test_tiny_pipelines_generate_frames(tmp_path: Path, family: str) -> None:
    from tests import tiny_models as tiny

    folder = getattr(tiny, f"save_tiny_random_{family}")(tmp_path / family)
    model = load_text_to_video(family, folder, "cpu")
    settings = VideoConfig(num_frames=4, width=64, height=64, steps=2)
    steps: list[tuple[int, int]] = []
    result = model.generate("a panda dancing", settings, seed=3, on_step=lambda i, n: steps.append((i, n)))
    assert result.frames.shape == (4, 64, 64, 3) and result.frames.dtype == np.float32
    # Both ask for 4k + 1 frames (5 here); what the VAE decodes from them may be more. The preset's 4 are kept.
    assert result.generated_frames >= 5
    assert 0.0 <= result.frames.min() and result.frames.max() <= 1.0 and result.frames.std() > 0
    assert steps == [(1, 2), (2, 2)]
    again = model.generate("a panda dancing", settings, seed=3).frames
    np.testing.assert_array_equal(result.frames, again)  # same seed, same video
    other = model.generate("a panda dancing", settings, seed=4).frames
    assert not np.array_equal(result.frames, other)
    with pytest.raises(Cancelled):
        model.generate("a panda dancing", settings, should_cancel=lambda: True)
    model.release()
    with pytest.raises(RuntimeError, match="released"):
        model.generate("x", settings)


def test_prompt_suffix_and_constraints() -> None:
    on = VideoConfig()
    assert full_prompt("A panda dancing.", on).startswith("A panda dancing, a single object")
    assert full_prompt("A panda dancing", VideoConfig(use_prompt_suffix=False)) == "A panda dancing"
    with pytest.raises(ValueError, match="empty"):
        full_prompt("  ", on)
    assert valid_frame_count("WanPipeline", 8) == 9 and valid_frame_count("WanPipeline", 33) == 33
    assert valid_frame_count("LTXPipeline", 10) == 17 and valid_frame_count("AnimateDiffPipeline", 10) == 10
    assert valid_size("LTXPipeline", 500, 700) == (512, 704) and valid_size("WanPipeline", 480, 832) == (480, 832)


def test_not_a_video_pipeline_is_refused(tmp_path: Path) -> None:
    from tests.tiny_models import save_tiny_random_shap_e

    folder = save_tiny_random_shap_e(tmp_path / "shap-e")
    with pytest.raises(ValueError, match="not a text-to-video pipeline"):
        load_text_to_video("shap-e", folder, "cpu")
