"""Zero123 score distillation: the mechanics, on a tiny random model saved and loaded in the real layout."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from pla4d.errors import MissingWeightsError  # noqa: E402
from pla4d.guidance.zero123 import (  # noqa: E402
    ReferenceEncoding,
    Zero123Guidance,
    load_zero123_or_none,
)
from tests.tiny_models import save_tiny_random_zero123  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_random_zero123(tmp_path_factory.mktemp("zero123") / "tiny-stable-zero123")


@pytest.fixture(scope="module")
def guidance(tiny_folder: Path) -> Zero123Guidance:
    return Zero123Guidance.from_pretrained(tiny_folder, "cpu")


def _images(B: int, size: int = 24, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 3, size, size, generator=g)


def _deltas(B: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.linspace(-10, 10, B), torch.linspace(-30, 30, B), torch.zeros(B)


def test_layout_loads_with_shapes(tiny_folder: Path, guidance: Zero123Guidance) -> None:
    for sub in ("model_index.json", "unet", "vae", "image_encoder", "clip_camera_projection", "scheduler"):
        assert (tiny_folder / sub).exists(), sub
    assert guidance.dtype == torch.float32 and guidance.camera_embedding == "stable"
    assert guidance.image_size == 256 and guidance.clip_size == 32
    assert guidance.unet.config.in_channels == 8
    B = 2
    latents = guidance.encode_images(_images(B))
    assert latents.shape == (B, 4, 32, 32)
    ref = guidance.encode_reference(_images(B, seed=1))
    assert ref.clip_embedding.shape == (B, 1, 16) and ref.latent.shape == (B, 4, 32, 32)
    camera = guidance.camera_features(*_deltas(B))
    assert camera.shape == (B, 1, 4)
    loss = guidance.loss(_images(B), _images(B, seed=1), *_deltas(B), step_ratio=0.3, guidance_scale=3.0)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.item() > 0
    assert not any(p.requires_grad for p in guidance.unet.parameters())


def test_gradient_reaches_the_render(guidance: Zero123Guidance) -> None:
    """A finite non-zero gradient reaches the parameters that produced the render; none reaches the model."""
    pixels = torch.zeros(1, 3, 16, 16, requires_grad=True)
    rendered = torch.sigmoid(pixels + _images(1, 16))
    g = torch.Generator().manual_seed(0)
    loss = guidance.loss(rendered, _images(1, seed=3), *_deltas(1), step_ratio=0.0, generator=g)
    loss.backward()
    assert pixels.grad is not None and torch.isfinite(pixels.grad).all()
    assert pixels.grad.abs().sum() > 0
    assert all(p.grad is None for p in guidance.vae.parameters())


def test_latent_gradient_is_the_sds_formula(guidance: Zero123Guidance, monkeypatch: pytest.MonkeyPatch) -> None:
    """d loss / d latents = w(t) (eps_hat - eps) / B with w = 1 - alpha_bar_t."""
    B = 2
    latents = torch.randn(B, 4, 32, 32, requires_grad=True)
    monkeypatch.setattr(guidance, "encode_images", lambda images, **kw: latents)
    noise = torch.randn(B, 4, 32, 32)
    t = torch.tensor([100, 700])
    ref = guidance.encode_reference(_images(B, seed=4))
    deltas = _deltas(B)
    loss = guidance.loss(_images(B), ref, *deltas, guidance_scale=4.0, noise=noise, timesteps=t)
    loss.backward()
    a = guidance.alphas_cumprod[t].view(B, 1, 1, 1)
    noisy = a.sqrt() * latents.detach() + (1 - a).sqrt() * noise
    eps_hat = guidance.predict_noise(noisy, t, ref, guidance.camera_features(*deltas), 4.0)
    expected = (1 - a) * (eps_hat - noise) / B
    torch.testing.assert_close(latents.grad, expected, rtol=1e-4, atol=1e-6)


def test_zero_when_the_prediction_is_the_noise(guidance: Zero123Guidance, monkeypatch: pytest.MonkeyPatch) -> None:
    B = 2
    noise = torch.randn(B, 4, 32, 32)

    def unet_returns_the_noise(sample, timestep, encoder_hidden_states, **kwargs):
        assert sample.shape == (2 * B, 8, 32, 32) and encoder_hidden_states.shape == (2 * B, 1, 16)
        return SimpleNamespace(sample=torch.cat([noise, noise]))

    monkeypatch.setattr(guidance.unet, "forward", unet_returns_the_noise)
    pixels = torch.zeros(B, 3, 16, 16, requires_grad=True)
    loss = guidance.loss(
        torch.sigmoid(pixels), _images(B), *_deltas(B), step_ratio=0.5, guidance_scale=7.5, noise=noise
    )
    loss.backward()
    assert loss.item() == 0.0
    assert torch.count_nonzero(pixels.grad) == 0


def test_cfg_scale_one_is_the_conditional_prediction(guidance: Zero123Guidance) -> None:
    B = 2
    ref = guidance.encode_reference(_images(B, seed=5))
    camera = guidance.camera_features(*_deltas(B))
    noisy = torch.randn(B, 4, 32, 32)
    t = torch.tensor([50, 900])
    with torch.no_grad():
        context = guidance.camera_projection(torch.cat([ref.clip_embedding, camera], dim=-1))
        cond = guidance.unet(torch.cat([noisy, ref.latent], 1), t, encoder_hidden_states=context).sample
        zeros = torch.zeros_like
        uncond = guidance.unet(torch.cat([noisy, zeros(ref.latent)], 1), t, encoder_hidden_states=zeros(context)).sample
        one = guidance.predict_noise(noisy, t, ref, camera, 1.0)
        zero = guidance.predict_noise(noisy, t, ref, camera, 0.0)
        five = guidance.predict_noise(noisy, t, ref, camera, 5.0)
    torch.testing.assert_close(one, cond, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(zero, uncond, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(five, uncond + 5.0 * (cond - uncond), rtol=1e-4, atol=1e-4)
    assert (cond - uncond).abs().max() > 1e-6  # the conditioning reaches the prediction


def test_timestep_range_anneals(guidance: Zero123Guidance) -> None:
    ranges = [guidance.timestep_range(r) for r in (0.0, 0.25, 0.5, 1.0)]
    assert ranges[0] == (20, 980) and ranges[-1] == (20, 500)
    highs = [hi for _, hi in ranges]
    assert highs == sorted(highs, reverse=True) and len(set(highs)) == len(highs)
    assert guidance.timestep_range(None) == (20, 980)
    g = torch.Generator().manual_seed(0)
    t = guidance.sample_timesteps(500, 1.0, g)
    assert t.min() >= 20 and t.max() <= 500


def test_camera_features_follow_the_conventions(tiny_folder: Path, guidance: Zero123Guidance) -> None:
    cam = guidance.camera_features(torch.tensor([30.0]), torch.tensor([90.0]), torch.tensor([0.5]), 20.0)[0, 0]
    torch.testing.assert_close(cam, torch.tensor([-torch.pi / 6, 1.0, 0.0, torch.deg2rad(torch.tensor(70.0))]))
    original = Zero123Guidance.from_pretrained(tiny_folder, "cpu", camera_embedding="zero123")
    cam = original.camera_features(torch.tensor([30.0]), torch.tensor([90.0]), torch.tensor([0.5]))[0, 0]
    torch.testing.assert_close(cam, torch.tensor([-torch.pi / 6, 1.0, 0.0, 0.5]))


def test_reference_encoding_can_be_cached_and_broadcast(guidance: Zero123Guidance) -> None:
    ref = guidance.encode_reference(_images(1, seed=6))
    assert isinstance(ref, ReferenceEncoding)
    noise = torch.randn(3, 4, 32, 32)
    t = torch.tensor([300, 300, 300])
    kwargs = {"noise": noise, "timesteps": t, "guidance_scale": 2.0}
    torch.manual_seed(0)
    a = guidance.loss(_images(3), ref, *_deltas(3), **kwargs)
    torch.manual_seed(0)
    b = guidance.loss(_images(3), _images(1, seed=6).expand(3, -1, -1, -1), *_deltas(3), **kwargs)
    torch.testing.assert_close(a, b)


def test_loads_by_model_id_from_the_local_cache(tiny_folder: Path, tmp_path: Path) -> None:
    repo = tmp_path / "hub" / "models--someone--stable-zero123-tiny"
    shutil.copytree(tiny_folder, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    guidance, message = load_zero123_or_none("someone/stable-zero123-tiny", "cpu", cache_dir=tmp_path / "hub")
    assert message == "" and guidance is not None
    assert guidance.camera_embedding == "stable" and guidance.name == "someone/stable-zero123-tiny"


def test_missing_weights_give_one_clear_line(tiny_folder: Path, tmp_path: Path) -> None:
    guidance, message = load_zero123_or_none("ashawkey/stable-zero123-diffusers", "cpu", cache_dir=tmp_path)
    assert guidance is None
    assert "\n" not in message and "Traceback" not in message
    assert "Zero123 weights for ashawkey/stable-zero123-diffusers not found in the local cache" in message
    assert "hf download ashawkey/stable-zero123-diffusers" in message and "refinement is off" in message
    with pytest.raises(MissingWeightsError, match="not found"):
        Zero123Guidance.from_pretrained("ashawkey/zero123-xl-diffusers", "cpu", cache_dir=tmp_path)
    guidance, message = load_zero123_or_none(tmp_path / "no-such-folder", "cpu")
    assert guidance is None and "not found" in message and "\n" not in message
    partial = tmp_path / "partial"
    shutil.copytree(tiny_folder, partial)
    shutil.rmtree(partial / "vae")
    guidance, message = load_zero123_or_none(partial, "cpu")
    assert guidance is None and "missing vae" in message and "\n" not in message
    (partial / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    shutil.copytree(tiny_folder / "vae", partial / "vae")
    guidance, message = load_zero123_or_none(partial, "cpu")
    assert guidance is None and "incomplete" in message and "\n" not in message


def test_importing_the_module_does_not_import_diffusers() -> None:
    code = (
        "import sys, pla4d.guidance, pla4d.guidance.zero123; "
        "bad = [m for m in ('diffusers', 'transformers') if m in sys.modules]; "
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_cc_projection_folder_and_bin_weights_load(tiny_folder: Path, tmp_path: Path) -> None:
    """The projection may sit in ``cc_projection/`` and ship as a pickled ``.bin`` (older ports)."""
    from safetensors.torch import load_file

    folder = tmp_path / "zero123-xl-like"
    shutil.copytree(tiny_folder, folder)
    (folder / "clip_camera_projection").rename(folder / "cc_projection")
    weights = folder / "cc_projection" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(str(weights)), folder / "cc_projection" / "diffusion_pytorch_model.bin")
    weights.unlink()
    guidance = Zero123Guidance.from_pretrained(folder, "cpu")
    assert guidance.camera_embedding == "zero123"
    expected = load_file(str(tiny_folder / "clip_camera_projection" / "diffusion_pytorch_model.safetensors"))
    torch.testing.assert_close(guidance.camera_projection.proj.weight, expected["proj.weight"])
