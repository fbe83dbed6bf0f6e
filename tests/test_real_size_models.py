"""The default models at their published size, on the CPU: shapes, dtypes and our code path, not the weights.

Each network is built from its real configuration (tests/data/model_configs/*.json, with the public sources named
there) with random weights, handed to OUR loader in place of ``from_pretrained`` (so the loader's own decisions run:
dtype, offload, casts, checks), and runs one step of our code at the smallest valid size: Wan's frame-count and
resolution rules and frames out, Shap-E's latent to a mesh, one Zero123 SDS step with its gradient, one CLIP score.
Parameter counts come from a build on the ``meta`` device (no memory, no init).

Each model runs in its own child process, so its peak resident memory (``ru_maxrss``) is its own; it is reported
with the figures (``pytest -m slow -s`` prints them). A model whose step cannot fit in the memory this machine has
free is skipped with the figure. ``slow``: run one at a time (``-m slow -k wan``), never beside another big job.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = Path(__file__).resolve().parent / "data" / "model_configs"
GB = 1e9

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------------------------- the parent side


def _child(name: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.test_real_size_models", name],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=3000,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    result = json.loads(lines[-1][len("RESULT ") :])
    print(f"\n{name}: {json.dumps(result, indent=1)}")
    if "skip" in result:
        pytest.skip(result["skip"])
    return result


def test_wan_t2v_1_3b() -> None:
    r = _child("wan")
    assert 1.2e9 < r["params"]["transformer"] < 1.5e9  # "1.3B"
    assert 5.5e9 < r["params"]["text_encoder"] < 5.9e9  # UMT5-XXL's encoder
    assert r["load"] == {"dtype": "torch.float32", "offload_hooks": False, "vae_tiling": True}
    assert r["generated_frames"] == 5 and r["frames_shape"] == [2, 32, 32, 3]  # 2 asked -> 4k + 1 = 5 made
    assert r["frames_dtype"] == "float32" and 0.0 <= r["frames_min"] <= r["frames_max"] <= 1.0


def test_wan_text_encoder_in_bf16() -> None:
    """UMT5-XXL does not fit in float32 (the CPU dtype) here; in bfloat16 it does: built at its real size (random
    weights, no init cost: meta, then to_empty) and run on one prompt padded to Wan's 512 tokens."""
    r = _child("wan_text_encoder")
    assert 5.5e9 < r["params"] < 5.9e9 and r["bf16_gb"] < 12.0
    assert r["output_shape"] == [1, 512, 4096] and r["output_finite"]  # what Wan's transformer takes (text_dim)


def test_shap_e_img2img() -> None:
    r = _child("shap_e")
    assert 2.5e8 < r["params"]["prior"] < 3.5e8 and 2.9e8 < r["params"]["image_encoder"] < 3.1e8
    assert r["load"] == {"dtype": "torch.float32", "pipeline": "ShapEImg2ImgPipeline"}
    assert r["vertices"] > 100 and r["faces"] > 100 and r["vertex_colours"] == r["vertices"]
    assert r["latent_shape"] == [1024, 1024]  # the prior's 1024 tokens of 1024


def test_zero123() -> None:
    r = _child("zero123")
    assert 8.5e8 < r["params"]["unet"] < 8.7e8  # SD 1.x UNet with 8 input channels
    assert 8.0e7 < r["params"]["vae"] < 8.5e7 and 3.0e8 < r["params"]["image_encoder"] < 3.1e8
    assert r["load"]["dtype"] == "torch.float32" and r["image_size"] == 256
    assert r["grad_finite"] and r["grad_abs_mean"] > 0 and r["grad_shape"] == [1, 3, 128, 128]


def test_clip_vit_l14() -> None:
    r = _child("clip")
    assert 4.2e8 < r["params"]["clip"] < 4.4e8
    assert r["size"] == 224 and r["scores_shape"] == [2] and all(-1.0 <= s <= 1.0 for s in r["scores"])


# --------------------------------------------------------------------------------------------- the child side


def _config(name: str) -> dict[str, Any]:
    return json.loads((CONFIGS / name).read_text())


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024 / GB
    return float("inf")


def _meta_params(build: Any) -> int:
    import torch

    with torch.device("meta"):
        module = build()
    return sum(p.numel() for p in module.parameters())


def _needs(gb: float, what: str) -> None:
    free = _available_gb()
    if free < gb:
        _emit({"skip": f"{what} needs ~{gb:.0f} GB free, {free:.1f} GB available now (this machine is shared)"})
        sys.exit(0)


def _emit(result: dict[str, Any]) -> None:
    print("RESULT " + json.dumps(result), flush=True)


def _finish(result: dict[str, Any], base_mb: float, start: float) -> None:
    result.update(
        peak_rss_mb=round(_rss_mb()),
        peak_over_imports_mb=round(_rss_mb() - base_mb),
        seconds=round(time.perf_counter() - start, 1),
    )
    _emit(result)


def run_wan() -> None:
    import torch
    from diffusers import (
        AutoencoderKLWan,
        DiffusionPipeline,
        UniPCMultistepScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )
    from transformers import UMT5Config, UMT5EncoderModel

    from pla4d.config import VideoConfig
    from pla4d.textvideo import load_text_to_video
    from tests.tiny_models import tiny_t5_tokenizer

    cfg = _config("wan2.1_t2v_1.3b.json")
    base, start = _rss_mb(), time.perf_counter()
    params = {
        "transformer": _meta_params(lambda: WanTransformer3DModel(**cfg["transformer"])),
        "vae": _meta_params(lambda: AutoencoderKLWan(**cfg["vae"])),
        "text_encoder": _meta_params(lambda: UMT5EncoderModel(UMT5Config(**cfg["text_encoder"]))),
    }
    fp32_gb = {k: round(v * 4 / GB, 1) for k, v in params.items()}
    # Our CPU path loads every component in float32: the UMT5-XXL encoder alone is ~23 GB, so the whole pipeline
    # (~29 GB) cannot be loaded on this 24 GB machine. The encoder is measured on `meta` only; its output, the
    # (1, 512, 4096) prompt embedding, is stood in for by random numbers of that shape.
    _needs(fp32_gb["transformer"] + fp32_gb["vae"] + 2.5, "Wan's transformer + VAE in float32")
    torch.manual_seed(0)
    pipe = WanPipeline(
        tokenizer=tiny_t5_tokenizer(),
        text_encoder=None,
        vae=AutoencoderKLWan(**cfg["vae"]),
        transformer=WanTransformer3DModel(**cfg["transformer"]),
        scheduler=UniPCMultistepScheduler(**cfg["scheduler"]),
    )
    length, width = cfg["max_sequence_length"], cfg["text_encoder"]["d_model"]

    def encode_prompt(
        prompt: Any,
        negative_prompt: Any = None,
        do_classifier_free_guidance: bool = True,
        max_sequence_length: int = 512,
        **_: Any,
    ) -> tuple[Any, Any]:
        assert max_sequence_length == length, max_sequence_length
        embeds = torch.randn(1, length, width, generator=torch.Generator().manual_seed(1))
        return embeds, (torch.zeros_like(embeds) if do_classifier_free_guidance else None)

    pipe.encode_prompt = encode_prompt
    asked: dict[str, Any] = {}

    def from_pretrained(folder: str, dtype: Any = None, **_: Any) -> Any:
        asked["dtype"] = str(dtype)
        return pipe

    built_mb = _rss_mb()
    with (
        tempfile.TemporaryDirectory() as folder,
        mock.patch.object(DiffusionPipeline, "from_pretrained", from_pretrained),
    ):
        model = load_text_to_video("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", folder, "cpu")
    load = {
        "dtype": asked["dtype"],
        "offload_hooks": any(
            hasattr(m, "_hf_hook") for m in pipe.components.values() if isinstance(m, torch.nn.Module)
        ),
        "vae_tiling": bool(getattr(pipe.vae, "use_tiling", False)),
    }
    step_start = time.perf_counter()
    result = model.generate("a panda dancing", VideoConfig(num_frames=2, width=40, height=40, steps=1), seed=0)
    frames = result.frames
    _finish(
        {
            "params": params,
            "fp32_gb": fp32_gb,
            "load": load,
            "generated_frames": result.generated_frames,
            "frames_shape": list(frames.shape),
            "frames_dtype": str(frames.dtype),
            "frames_min": float(frames.min()),
            "frames_max": float(frames.max()),
            "built_rss_mb": round(built_mb),
            "step_seconds": round(time.perf_counter() - step_start, 1),
            "skipped": f"UMT5-XXL text encoder ({params['text_encoder'] / 1e9:.2f} B parameters, "
            f"{fp32_gb['text_encoder']} GB in float32, the CPU dtype) not built here; "
            "test_wan_text_encoder_in_bf16 runs it",
        },
        base,
        start,
    )


def run_wan_text_encoder() -> None:
    import torch
    from transformers import UMT5Config, UMT5EncoderModel

    cfg = _config("wan2.1_t2v_1.3b.json")
    base, start = _rss_mb(), time.perf_counter()
    config = UMT5Config(**cfg["text_encoder"])
    params = _meta_params(lambda: UMT5EncoderModel(config))
    _needs(params * 2 / GB + 2.0, "the UMT5-XXL text encoder in bfloat16")
    with torch.device("meta"):
        encoder = UMT5EncoderModel(config).to(torch.bfloat16)  # still no memory: cast on meta, then allocate
    encoder = encoder.to_empty(device="cpu").eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in encoder.parameters():  # small random weights: finite activations through 24 layers
            parameter.normal_(0.0, 0.02, generator=generator)
        for name, module in encoder.named_modules():
            if "layer_norm" in name and hasattr(module, "weight"):
                module.weight.fill_(1.0)
    built_mb = _rss_mb()
    length = cfg["max_sequence_length"]
    ids = torch.randint(0, config.vocab_size, (1, length), generator=generator)
    mask = torch.zeros(1, length, dtype=torch.long)
    mask[:, :12] = 1  # a short prompt, padded to 512 as Wan's pipeline pads it
    step_start = time.perf_counter()
    with torch.no_grad():
        out = encoder(ids, attention_mask=mask).last_hidden_state
    _finish(
        {
            "params": params,
            "bf16_gb": round(params * 2 / GB, 1),
            "fp32_gb": round(params * 4 / GB, 1),
            "output_shape": list(out.shape),
            "output_finite": bool(torch.isfinite(out.float()).all()),
            "built_rss_mb": round(built_mb),
            "step_seconds": round(time.perf_counter() - step_start, 1),
        },
        base,
        start,
    )


def run_shap_e() -> None:
    import numpy as np
    import torch
    from diffusers import DiffusionPipeline, HeunDiscreteScheduler, PriorTransformer, ShapEImg2ImgPipeline
    from diffusers.pipelines.shap_e import ShapERenderer
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    from pla4d.image_to_mesh.shap_e import ShapEImageToMesh, decode_mesh
    from tests.tiny_models import center_sdf

    cfg = _config("shap_e_img2img.json")
    base, start = _rss_mb(), time.perf_counter()
    renderer_cfg = {
        **cfg["renderer"],
        "param_shapes": tuple(tuple(s) for s in cfg["renderer"]["param_shapes"]),
        "background": tuple(cfg["renderer"]["background"]),
    }
    params = {
        "prior": _meta_params(lambda: PriorTransformer(**cfg["prior"])),
        "image_encoder": _meta_params(lambda: CLIPVisionModel(CLIPVisionConfig(**cfg["image_encoder"]))),
        "renderer": _meta_params(lambda: ShapERenderer(**renderer_cfg)),
    }
    _needs(sum(params.values()) * 4 / GB + 3.0, "Shap-E in float32")
    torch.manual_seed(0)
    renderer = ShapERenderer(**renderer_cfg)
    center_sdf(renderer, (cfg["prior"]["num_embeddings"], cfg["prior"]["embedding_dim"]))
    pipe = ShapEImg2ImgPipeline(
        prior=PriorTransformer(**cfg["prior"]),
        image_encoder=CLIPVisionModel(CLIPVisionConfig(**cfg["image_encoder"])),
        image_processor=CLIPImageProcessor(**cfg["image_processor"]),
        scheduler=HeunDiscreteScheduler(**cfg["scheduler"]),
        shap_e_renderer=renderer,
    )
    asked: dict[str, Any] = {}

    def from_pretrained(folder: str, dtype: Any = None, **_: Any) -> Any:
        asked["dtype"] = str(dtype)
        return pipe

    with (
        tempfile.TemporaryDirectory() as folder,
        mock.patch.object(DiffusionPipeline, "from_pretrained", from_pretrained),
    ):
        model = ShapEImageToMesh.load("openai/shap-e-img2img", folder, "cpu", steps=1, grid_size=32)
    latents: list[list[int]] = []

    def decode(renderer_: Any, latent: Any, grid_size: int) -> Any:
        latents.append(list(latent.shape))
        return decode_mesh(renderer_, latent, grid_size)

    image = np.zeros((64, 64, 4), np.float32)
    image[16:48, 16:48] = (0.8, 0.3, 0.2, 1.0)
    step_start = time.perf_counter()
    with mock.patch("pla4d.image_to_mesh.shap_e.decode_mesh", decode):
        mesh = model(image, seed=0)
    _finish(
        {
            "params": params,
            "load": {"dtype": asked["dtype"], "pipeline": type(pipe).__name__},
            "latent_shape": latents[0],
            "vertices": int(mesh.vertices.shape[0]),
            "faces": int(mesh.faces.shape[0]),
            "vertex_colours": int(mesh.vertex_colors.shape[0]),
            "step_seconds": round(time.perf_counter() - step_start, 1),
        },
        base,
        start,
    )


def run_zero123() -> None:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from pla4d.guidance.zero123 import CameraProjection, load_zero123_or_none

    cfg = _config("stable_zero123.json")
    base, start = _rss_mb(), time.perf_counter()
    params = {
        "unet": _meta_params(lambda: UNet2DConditionModel(**cfg["unet"])),
        "vae": _meta_params(lambda: AutoencoderKL(**cfg["vae"])),
        "image_encoder": _meta_params(lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg["image_encoder"]))),
    }
    _needs(sum(params.values()) * 4 / GB + 3.0, "Zero123 in float32")
    torch.manual_seed(0)
    built = {
        "unet": UNet2DConditionModel(**cfg["unet"]),
        "vae": AutoencoderKL(**cfg["vae"]),
        "image_encoder": CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg["image_encoder"])),
    }
    asked: dict[str, str] = {}

    def loader(name: str) -> Any:
        def from_pretrained(folder: Any, subfolder: str | None = None, **kwargs: Any) -> Any:
            asked[name] = str(kwargs.get("torch_dtype", kwargs.get("dtype")))
            return built[name]

        return from_pretrained

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "stable-zero123"
        built["image_encoder"].config.save_pretrained(folder / "image_encoder")
        built["unet"].save_config(folder / "unet")
        built["vae"].save_config(folder / "vae")
        DDIMScheduler(**cfg["scheduler"]).save_pretrained(folder / "scheduler")
        CameraProjection(**cfg["camera_projection"]).save_folder(folder / "clip_camera_projection")
        (folder / "model_index.json").write_text(json.dumps({"_class_name": "Zero123Pipeline"}))
        with (
            mock.patch.object(UNet2DConditionModel, "from_pretrained", loader("unet")),
            mock.patch.object(AutoencoderKL, "from_pretrained", loader("vae")),
            mock.patch.object(CLIPVisionModelWithProjection, "from_pretrained", loader("image_encoder")),
        ):
            guidance, why = load_zero123_or_none(folder, "cpu")
    assert guidance is not None, why
    rendered = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    reference = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    step_start = time.perf_counter()
    loss = guidance.loss(
        rendered,
        reference,
        torch.tensor([10.0]),
        torch.tensor([30.0]),
        torch.tensor([0.0]),
        step_ratio=0.5,
        generator=torch.Generator().manual_seed(4),
    )
    loss.backward()
    grad = rendered.grad
    _finish(
        {
            "params": params,
            "load": {"dtype": asked["unet"], "dtypes_asked": asked},
            "image_size": guidance.image_size,
            "loss": float(loss),
            "grad_shape": list(grad.shape),
            "grad_finite": bool(torch.isfinite(grad).all()),
            "grad_abs_mean": float(grad.abs().mean()),
            "step_seconds": round(time.perf_counter() - step_start, 1),
        },
        base,
        start,
    )


def run_clip() -> None:
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    from pla4d.clipscore import CLIP_MEAN, CLIP_STD, ClipScorer

    cfg = _config("clip_vit_large_patch14.json")
    base, start = _rss_mb(), time.perf_counter()
    config = CLIPConfig(
        text_config=cfg["text_config"],
        vision_config=cfg["vision_config"],
        projection_dim=cfg["projection_dim"],
        logit_scale_init_value=cfg["logit_scale_init_value"],
    )
    params = {"clip": _meta_params(lambda: CLIPModel(config))}
    _needs(params["clip"] * 4 / GB + 2.0, "CLIP ViT-L/14 in float32")
    torch.manual_seed(0)
    clip = CLIPModel(config)
    # The real BPE vocabulary is not here; a letters-only one with the real special-token ids stands in.
    vocab = {
        c + end: i for i, (c, end) in enumerate((c, e) for c in "abcdefghijklmnopqrstuvwxyz" for e in ("", "</w>"))
    }
    vocab.update({"<|startoftext|>": 49406, "<|endoftext|>": 49407})
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "clip-vit-large-patch14"
        config.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        (folder / "model.safetensors").write_bytes(b"")  # the loader below is handed the network built above
        (folder / "preprocessor_config.json").write_text(
            json.dumps({"crop_size": {"height": 224, "width": 224}, "image_mean": CLIP_MEAN, "image_std": CLIP_STD})
        )
        with mock.patch.object(CLIPModel, "from_pretrained", lambda *a, **k: clip):
            scorer = ClipScorer.load(str(folder), "cpu")
    images = torch.rand(2, 96, 128, 3, generator=torch.Generator().manual_seed(5))
    step_start = time.perf_counter()
    scores = scorer.scores(images, "a panda dancing")
    _finish(
        {
            "params": params,
            "size": scorer.size,
            "scores_shape": list(scores.shape),
            "scores": [float(s) for s in scores],
            "step_seconds": round(time.perf_counter() - step_start, 1),
        },
        base,
        start,
    )


if __name__ == "__main__":
    runs = {"wan": run_wan, "wan_text_encoder": run_wan_text_encoder, "shap_e": run_shap_e, "zero123": run_zero123}
    {**runs, "clip": run_clip}[sys.argv[1]]()
