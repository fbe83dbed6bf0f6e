"""CLIP score: a tiny random CLIP (in-memory BPE tokenizer) loaded through the real code; run scoring via the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf"))


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import save_tiny_random_clip

    return save_tiny_random_clip(tmp_path_factory.mktemp("clip"))


def test_scores_are_cosines_of_the_model_embeddings(tiny_clip: Path) -> None:
    from transformers import CLIPModel

    from pla4d.clipscore import ClipScorer

    scorer = ClipScorer.load(str(tiny_clip))
    assert scorer.size == 32 and scorer.tokenizer.model_max_length == 77
    images = torch.rand(3, 48, 40, 3, generator=torch.Generator().manual_seed(0))
    cos = scorer.scores(images, "a panda dancing")
    assert cos.shape == (3,) and bool((cos.abs() <= 1).all())
    # The same number from the model by hand: its own projections, normalised, dotted.
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    tokens = scorer.tokenizer(["a panda dancing"], padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        t = model.text_projection(model.text_model(**tokens).pooler_output)
        # Shortest side to 32 (bicubic, antialiased), centre crop, CLIP mean/std.
        x = torch.nn.functional.interpolate(images.permute(0, 3, 1, 2), size=(38, 32), mode="bicubic",
                                            antialias=True).clamp(0, 1)[..., 3:35, :]  # fmt: skip
        mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
        std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
        v = model.visual_projection(model.vision_model(pixel_values=(x - mean) / std).pooler_output)
    expected = torch.nn.functional.normalize(v, dim=-1) @ torch.nn.functional.normalize(t, dim=-1)[0]
    torch.testing.assert_close(cos, expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(scorer.scores(images, "a cat"), cos)  # the text matters


def test_missing_clip_model_is_one_clear_message(tmp_path: Path) -> None:
    from pla4d.clipscore import ClipScorer
    from pla4d.errors import MissingWeightsError

    with pytest.raises(MissingWeightsError, match="pla4d models pull openai/clip-vit-large-patch14"):
        ClipScorer.load("openai/clip-vit-large-patch14")


def test_eval_prompt_on_a_run_folder(tmp_path: Path, tiny_clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pla4d.cli import main
    from pla4d.example.clip import ExampleSettings, write_example_clip
    from pla4d.runner import run_generate
    from tests.test_generate import tiny_preset

    clip = write_example_clip(tmp_path / "clip", ExampleSettings(num_frames=2, resolution=64, novel_azimuths=()))
    run = tmp_path / "run"
    run_generate("a creature", run, tiny_preset().replace_motion(guidance_model=None), device="cpu",
                 video=clip / "input", mesh=clip / "first_frame.glb", show_progress=False)  # fmt: skip
    capsys.readouterr()
    code = main(["eval", str(run), "--prompt", "a creature", "--clip-model", str(tiny_clip), "--clip-views", "3"])
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert record["renders"] == 3 * 2 and -1 <= record["clip_score"] <= 1
    assert record["clip_score_min"] <= record["clip_score"] <= record["clip_score_max"]
    # Without the model: exit 2, one message, no traceback.
    assert main(["eval", str(run), "--prompt", "a creature"]) == 2
    err = capsys.readouterr().err
    assert "pla4d models pull openai/clip-vit-large-patch14" in err and "Traceback" not in err
    assert np.isfinite(record["clip_score"])
