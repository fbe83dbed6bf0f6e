"""Tiny randomly initialised text-to-video pipelines in the real diffusers layouts, for tests of the mechanics.

They are built from configs (a few thousand parameters, an in-memory T5 tokenizer) and saved with
``save_pretrained``, so tests load them through the same code as the real models, with ``HF_HUB_OFFLINE=1``.
Their output is noise; the plumbing (tokenizer, text encoder, transformer, scheduler, VAE decode, frames out) is
the real one.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

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
