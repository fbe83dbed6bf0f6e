"""Tiny randomly initialised models in the real on-disk layouts, for tests of the mechanics.

Each is built from a configuration (a few thousand parameters, in-memory tokenizers) and saved with
``save_pretrained``, so tests load it through the same code as the real model, with ``HF_HUB_OFFLINE=1``. Their
output is noise; the plumbing (tokenizer, encoders, denoiser, scheduler, decoder, frames or mesh out) is the real one.
These lived beside the loaders in the engine; they are test fixtures, so they live here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from pla4d.clipscore import CLIP_MEAN, CLIP_STD
from pla4d.guidance.zero123 import CameraProjection
from pla4d.image_to_mesh.shap_e import _load_latent_params, _query, grid_points

_CHARS = "▁abcdefghijklmnopqrstuvwxyz0123456789.,-'"


def tiny_t5_tokenizer():  # -> transformers.T5TokenizerFast
    """A T5 (SentencePiece-Unigram) tokenizer built in memory: special tokens plus one piece per character."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(c, -float(i + 1)) for i, c in enumerate(_CHARS)]
    backend = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    return T5TokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0
    )


def save_tiny_random_wan(folder: str | os.PathLike[str], seed: int = 0) -> Path:
    """A tiny WanPipeline (UMT5 encoder, Wan transformer, Wan VAE, UniPC flow scheduler) saved to ``folder``."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = tiny_t5_tokenizer()
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(
        UMT5Config(vocab_size=len(tokenizer), d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2,
                   relative_attention_num_buckets=8)
    )  # fmt: skip
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])  # fmt: skip
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=16, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )  # fmt: skip
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                       scheduler=scheduler)  # fmt: skip
    folder = Path(folder)
    pipe.save_pretrained(folder)
    return folder


def save_tiny_random_cogvideox(folder: str | os.PathLike[str], seed: int = 0) -> Path:
    """A tiny CogVideoXPipeline (T5 encoder, CogVideoX transformer and VAE, CogVideoX DDIM) saved to ``folder``."""
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXPipeline,
        CogVideoXTransformer3DModel,
    )
    from transformers import T5Config, T5EncoderModel

    tokenizer = tiny_t5_tokenizer()
    torch.manual_seed(seed)
    text_encoder = T5EncoderModel(
        T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=37, num_layers=1, num_heads=4,
                 relative_attention_num_buckets=8)
    )  # fmt: skip
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=4, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=2,
        text_embed_dim=32, num_layers=1, sample_width=8, sample_height=8, sample_frames=9, patch_size=2,
        temporal_compression_ratio=4, max_text_seq_length=16,
    )  # fmt: skip
    vae = AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4, up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=2,
        temporal_compression_ratio=4,
    )  # fmt: skip
    scheduler = CogVideoXDDIMScheduler()
    pipe = CogVideoXPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                             scheduler=scheduler)  # fmt: skip
    folder = Path(folder)
    pipe.save_pretrained(folder)
    return folder


def save_tiny_random_shap_e(folder: str | os.PathLike[str], seed: int = 0) -> Path:
    """A tiny randomly initialised ShapEImg2ImgPipeline in the real layout (tests of the mechanics). The signed
    distance head's bias is set to the median of the field over random latents, so its surface exists."""
    from diffusers import HeunDiscreteScheduler, PriorTransformer, ShapEImg2ImgPipeline
    from diffusers.pipelines.shap_e import ShapERenderer
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    embedding, rows = 16, 8
    prior = PriorTransformer(
        num_attention_heads=2, attention_head_dim=8, embedding_dim=embedding, num_embeddings=4 * rows,
        embedding_proj_dim=16, time_embed_dim=32, num_layers=1, clip_embed_dim=2 * embedding,
        additional_embeddings=0, time_embed_act_fn="gelu", norm_in_type="layer",
        embedding_proj_norm_type="layer", encoder_hid_proj_type=None, added_emb_type=None,
    )  # fmt: skip
    encoder = CLIPVisionModel(
        CLIPVisionConfig(hidden_size=16, image_size=32, projection_dim=16, intermediate_size=24,
                         num_attention_heads=2, num_channels=3, num_hidden_layers=1, patch_size=8)
    )  # fmt: skip
    processor = CLIPImageProcessor(
        crop_size={"height": 32, "width": 32}, do_center_crop=True, do_normalize=True, do_resize=True,
        image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711],
        resample=3, size={"shortest_edge": 32},
    )  # fmt: skip
    renderer = ShapERenderer(param_shapes=((rows, 93), (rows, rows), (rows, rows), (rows, rows)),
                             d_latent=embedding, d_hidden=rows, n_output=12, background=(0.1, 0.1, 0.1))  # fmt: skip
    scheduler = HeunDiscreteScheduler(beta_schedule="exp", num_train_timesteps=1024, prediction_type="sample",
                                      use_karras_sigmas=True, clip_sample=True, clip_sample_range=1.0)  # fmt: skip
    center_sdf(renderer, (4 * rows, embedding))
    pipe = ShapEImg2ImgPipeline(prior=prior, image_encoder=encoder, image_processor=processor, scheduler=scheduler,
                                shap_e_renderer=renderer)  # fmt: skip
    folder = Path(folder)
    pipe.save_pretrained(folder)
    return folder


def center_sdf(renderer: torch.nn.Module, latent_shape: tuple[int, int]) -> None:
    """Shift a random Shap-E renderer's signed-distance head by the median of its field over random latents, so
    that its zero level set (the surface marching cubes meshes) exists for a random latent."""
    points, _, _ = grid_points(renderer, 16)
    medians = []
    for k in range(4):
        latent = torch.randn(*latent_shape, generator=torch.Generator().manual_seed(k))
        _load_latent_params(renderer, latent)
        sdf, _ = _query(renderer, points)
        medians.append(float(torch.atanh(sdf.clamp(-0.999, 0.999)).median()))
    with torch.no_grad():
        renderer.mlp.mlp[-1].bias[0] -= float(np.median(medians))


def save_tiny_random_clip(folder: str | Path, seed: int = 0) -> Path:
    """A tiny randomly initialised CLIPModel with an in-memory BPE tokenizer, saved in the transformers layout
    (tests of the mechanics: real loading code, meaningless similarities)."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in letters:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    merges = [("a", "n</w>"), ("p", "an</w>")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 77, "bos_token_id": 0, "eos_token_id": 1,
                     "pad_token_id": 1},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=8,
    )  # fmt: skip
    folder = Path(folder)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"crop_size": {"height": 32, "width": 32}, "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD),
         "size": {"shortest_edge": 32}, "image_processor_type": "CLIPImageProcessor"}, indent=1))  # fmt: skip
    return folder


def save_tiny_random_zero123(folder: str | os.PathLike[str], seed: int = 0, *, embedding_dim: int = 16) -> Path:
    """Write a tiny randomly initialised Zero123 in the real diffusers layout (for tests of the mechanics: it
    runs on the CPU in a fraction of a second and predicts nothing meaningful). 256 x 256 images, 32 x 32
    latents, as the real models; returns the folder."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=8,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=embedding_dim,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(4, 4, 4, 4),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        sample_size=256,
    )
    clip_config = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        projection_dim=embedding_dim,
    )
    image_encoder = CLIPVisionModelWithProjection(clip_config)
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
    )
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    image_encoder.save_pretrained(folder / "image_encoder")
    scheduler.save_pretrained(folder / "scheduler")
    CameraProjection(embedding_dim, 4).save_folder(folder / "clip_camera_projection")
    (folder / "feature_extractor").mkdir(exist_ok=True)
    preprocessor = {
        "crop_size": {"height": 32, "width": 32},
        "do_center_crop": True,
        "do_normalize": True,
        "do_resize": True,
        "image_mean": list(CLIP_MEAN),
        "image_std": list(CLIP_STD),
        "image_processor_type": "CLIPImageProcessor",
        "resample": 3,
        "size": {"shortest_edge": 32},
    }
    (folder / "feature_extractor" / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")
    model_index = {
        "_class_name": "Zero123Pipeline",
        "clip_camera_projection": ["zero123", "CLIPCameraProjection"],
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(model_index, indent=2) + "\n")
    return folder
