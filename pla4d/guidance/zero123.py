"""Zero123 score distillation for the reference refinement of the 4D stage (paper section 3.4, eq. 11).

A render of the deformed model from a random view is pushed towards what Zero123 predicts for that view,
conditioned on the static model's render from the same view (the "reference"):

    grad_z L_ref = w(t) (eps_hat(z_t; z_ref, c_ref, t) - eps),   w(t) = 1 - alpha_bar_t,

with ``z`` the VAE latents of the render, ``z_ref`` the reference's VAE latents, ``c_ref`` its CLIP image
embedding joined with the relative camera, and ``eps_hat`` the classifier-free-guided noise prediction.

The model is assembled from diffusers / transformers components in the layout of the public diffusers ports
(``ashawkey/stable-zero123-diffusers``, ``ashawkey/zero123-xl-diffusers``)::

    model_index.json
    unet/                    UNet2DConditionModel, 8 input channels (4 noisy latent + 4 reference latent)
    vae/                     AutoencoderKL
    image_encoder/           CLIPVisionModelWithProjection
    clip_camera_projection/  Linear(embedding_dim + 4 -> embedding_dim) as ``proj`` (also ``cc_projection/``)
    scheduler/               DDIM configuration
    feature_extractor/       CLIP preprocessing (size, mean, std; applied here in torch)

It loads by model id from the local Hugging Face cache, or from a local folder with that layout; it never
downloads. diffusers and transformers are imported only when a guidance object is built, so the engine runs
without them; with no weights :func:`load_zero123_or_none` says so in one line and the refinement is off.

Camera convention: the project's (``pla4d.cameras``): elevation positive above the equator, azimuth growing
from the front (+Z) towards +X. Zero123 wants the polar-angle difference, so ``delta_polar = -delta_elevation``;
the azimuth difference has the same sense in both. Original Zero123 / Zero123-XL take the radius difference
as the 4th camera feature; Stable Zero123 takes the conditioning view's absolute polar angle instead.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pla4d.errors import MissingWeightsError

DEFAULT_ZERO123_ID = "ashawkey/stable-zero123-diffusers"
ZERO123_XL_ID = "ashawkey/zero123-xl-diffusers"

PROJECTION_SUBFOLDERS = ("clip_camera_projection", "cc_projection")
REQUIRED_SUBFOLDERS = ("unet", "vae", "image_encoder", "scheduler")
# CLIP ViT-L/14 preprocessing, used when the folder has no feature_extractor/preprocessor_config.json.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    """No "Loading weights" bars while loading (the run prints its own progress); restored afterwards."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _install_hint(model_id: str) -> str:
    return f"run `pla4d models pull {model_id}` (or `hf download {model_id}`, huggingface_hub's CLI)"


def _missing_message(model_id: str, what: str = "") -> str:
    detail = f" ({what})" if what else ""
    return (
        f"Zero123 weights for {model_id} not found in the local cache{detail}: {_install_hint(model_id)}, "
        "or pass a local folder in the diffusers layout; reference refinement is off."
    )


def _import_components() -> dict[str, Any]:
    """diffusers / transformers classes, imported on demand (MissingWeightsError when not installed)."""
    try:
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPVisionModelWithProjection
    except ImportError as exc:  # pragma: no cover - exercised only without the [models] extra
        raise MissingWeightsError(
            f"Zero123 guidance needs diffusers and transformers ({exc.name or exc} is missing): "
            "pip install 'pla4d[models]'; reference refinement is off."
        ) from exc
    return {
        "AutoencoderKL": AutoencoderKL,
        "DDIMScheduler": DDIMScheduler,
        "UNet2DConditionModel": UNet2DConditionModel,
        "CLIPVisionModelWithProjection": CLIPVisionModelWithProjection,
    }


def _is_model_id(name: str) -> bool:
    """``owner/name`` as the Hub spells ids (anything else is taken for a folder)."""
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and "\\" not in name


def resolve_model_folder(
    model_id_or_path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """The folder holding the model: a local folder as given, else the model id's snapshot in the local
    Hugging Face cache (never downloads). Raises MissingWeightsError with the one-line message."""
    name = str(model_id_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        folder = path
    elif not _is_model_id(name):
        raise MissingWeightsError(
            f"Zero123 model folder {name} not found: pass a folder in the diffusers layout "
            f"(model_index.json, unet/, vae/, image_encoder/, clip_camera_projection/, scheduler/) "
            f"or a model id such as {DEFAULT_ZERO123_ID}; reference refinement is off."
        )
    else:
        # The cache's own layout, not huggingface_hub's snapshot lookup: that one calls a snapshot incomplete when
        # files `pla4d models pull` skips on purpose (other weight formats) are absent.
        from pla4d.models.hub import cached_snapshot

        found = cached_snapshot(name, Path(cache_dir) if cache_dir is not None else None)
        if found is None:
            raise MissingWeightsError(_missing_message(name))
        folder = found
    missing = [sub for sub in REQUIRED_SUBFOLDERS if not (folder / sub / _config_name(sub)).is_file()]
    if not any((folder / sub / "config.json").is_file() for sub in PROJECTION_SUBFOLDERS):
        missing.append("clip_camera_projection")
    if missing:
        raise MissingWeightsError(_missing_message(name, "missing " + ", ".join(missing)))
    return folder


def _config_name(sub: str) -> str:
    return "scheduler_config.json" if sub == "scheduler" else "config.json"


class CameraProjection(nn.Module):
    """Zero123's ``cc_projection``: [CLIP image embedding, 4 camera features] -> cross-attention context."""

    def __init__(self, embedding_dim: int = 768, additional_embeddings: int = 4) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.additional_embeddings = additional_embeddings
        self.proj = nn.Linear(embedding_dim + additional_embeddings, embedding_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)

    @classmethod
    def from_folder(cls, folder: Path) -> CameraProjection:
        config = json.loads((folder / "config.json").read_text())
        module = cls(int(config.get("embedding_dim", 768)), int(config.get("additional_embeddings", 4)))
        state = _load_state_dict(folder)
        # The diffusers ports name the layer ``proj``; a bare Linear's checkpoint has ``weight`` / ``bias``.
        if "weight" in state and "proj.weight" not in state:
            state = {f"proj.{k}": v for k, v in state.items()}
        module.load_state_dict(state)
        return module

    def save_folder(self, folder: Path) -> None:
        """Write the module in the ports' layout (config.json + diffusion_pytorch_model.safetensors)."""
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "_class_name": "CLIPCameraProjection",
            "additional_embeddings": self.additional_embeddings,
            "embedding_dim": self.embedding_dim,
        }
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))


def _load_state_dict(folder: Path) -> dict[str, Tensor]:
    for name in ("diffusion_pytorch_model.safetensors", "model.safetensors"):
        if (folder / name).is_file():
            from safetensors.torch import load_file

            return load_file(str(folder / name))
    for name in ("diffusion_pytorch_model.bin", "pytorch_model.bin"):
        if (folder / name).is_file():
            return torch.load(folder / name, map_location="cpu", weights_only=True)
    raise MissingWeightsError(
        f"Zero123 weights incomplete: no diffusion_pytorch_model.safetensors (or .bin) in {folder}; "
        "reference refinement is off."
    )


@dataclass
class ReferenceEncoding:
    """The conditioning computed from a reference image: CLIP embedding (B, 1, D) and VAE latent (B, 4, h, w)."""

    clip_embedding: Tensor
    latent: Tensor

    def __len__(self) -> int:
        return self.latent.shape[0]


class Zero123Guidance:
    """Zero123 score distillation (SDS) with classifier-free guidance and an annealed timestep.

    Build with :meth:`from_pretrained`; every network is frozen, only the render carries a gradient.
    """

    def __init__(
        self,
        unet: nn.Module,
        vae: nn.Module,
        image_encoder: nn.Module,
        camera_projection: CameraProjection,
        scheduler: Any,
        device: torch.device | str,
        dtype: torch.dtype,
        *,
        camera_embedding: str = "stable",
        clip_size: int = 224,
        clip_mean: tuple[float, ...] = CLIP_MEAN,
        clip_std: tuple[float, ...] = CLIP_STD,
        t_range: tuple[float, float] = (0.02, 0.98),
        t_max_final: float = 0.5,
        name: str = "",
    ) -> None:
        if camera_embedding not in ("stable", "zero123"):
            raise ValueError("camera_embedding is 'stable' (Stable Zero123) or 'zero123' (Zero123 / Zero123-XL)")
        self.device = torch.device(device)
        self.dtype = dtype
        self.unet, self.vae, self.image_encoder, self.camera_projection = unet, vae, image_encoder, camera_projection
        camera_projection.to(dtype=dtype)
        for module in (unet, vae, image_encoder, camera_projection):
            if next(module.parameters()).dtype != dtype:  # loaded in another dtype: cast (diffusers warns)
                module.to(dtype=dtype)
            module.to(self.device)
            module.eval()
            module.requires_grad_(False)
        self.scheduler = scheduler
        self.camera_embedding = camera_embedding
        self.name = name
        self.clip_size = int(clip_size)
        self.clip_mean = torch.tensor(clip_mean, device=self.device).view(1, 3, 1, 1)
        self.clip_std = torch.tensor(clip_std, device=self.device).view(1, 3, 1, 1)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        # Zero123 works on 256 x 256 images (32 x 32 latents); a model's own sample size decides it.
        self.image_size = int(unet.config.sample_size) * self.vae_scale_factor
        self.scaling_factor = float(vae.config.scaling_factor)
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        self.alphas_cumprod = scheduler.alphas_cumprod.to(device=self.device, dtype=torch.float32)
        self.min_step = int(round(self.num_train_timesteps * t_range[0]))
        self.max_step = int(round(self.num_train_timesteps * t_range[1]))
        self.max_step_final = max(self.min_step, int(round(self.num_train_timesteps * t_max_final)))

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        model_id_or_path: str | os.PathLike[str] = DEFAULT_ZERO123_ID,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
        *,
        camera_embedding: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> Zero123Guidance:
        """Load by model id (local Hugging Face cache only) or from a local folder in the diffusers layout.

        ``dtype`` defaults to float16 on CUDA and float32 elsewhere. ``camera_embedding`` is ``"stable"`` or
        ``"zero123"``; by default ``"stable"`` when the name contains "stable", as the public ports are named.
        Raises MissingWeightsError (one clear message) when the weights or the libraries are not installed.
        """
        components = _import_components()
        folder = resolve_model_folder(model_id_or_path, cache_dir=cache_dir)
        device = torch.device(device)
        if dtype is None:
            dtype = torch.float16 if device.type == "cuda" else torch.float32
        if camera_embedding is None:
            camera_embedding = "stable" if "stable" in Path(str(model_id_or_path)).name.lower() else "zero123"
        quiet = {"torch_dtype": dtype, "local_files_only": True, "low_cpu_mem_usage": False}
        try:
            with _quiet_progress_bars():
                unet = components["UNet2DConditionModel"].from_pretrained(folder, subfolder="unet", **quiet)
                vae = components["AutoencoderKL"].from_pretrained(folder, subfolder="vae", **quiet)
                image_encoder = components["CLIPVisionModelWithProjection"].from_pretrained(
                    folder / "image_encoder", dtype=dtype, local_files_only=True
                )
            scheduler = components["DDIMScheduler"].from_pretrained(
                folder, subfolder="scheduler", local_files_only=True
            )
        except OSError as exc:  # a component folder without its weights file (partial download)
            raise MissingWeightsError(
                _missing_message(str(model_id_or_path), f"incomplete: {type(exc).__name__}")
            ) from exc
        projection_folder = next(folder / s for s in PROJECTION_SUBFOLDERS if (folder / s / "config.json").is_file())
        camera_projection = CameraProjection.from_folder(projection_folder)
        if unet.config.in_channels != 2 * vae.config.latent_channels:
            raise ValueError(
                f"{model_id_or_path}: a Zero123 UNet takes {2 * vae.config.latent_channels} input channels "
                f"(noisy latent + reference latent), this one takes {unet.config.in_channels}"
            )
        preprocess = _read_preprocessor(folder, default_size=int(image_encoder.config.image_size))
        return cls(
            unet,
            vae,
            image_encoder,
            camera_projection,
            scheduler,
            device,
            dtype,
            camera_embedding=camera_embedding,
            name=str(model_id_or_path),
            **preprocess,
            **kwargs,
        )

    # ------------------------------------------------------------------ pieces
    def timestep_range(self, step_ratio: float | None) -> tuple[int, int]:
        """Inclusive range t is drawn from: [min_step, max], max annealed linearly from 0.98 T to
        ``t_max_final`` T as ``step_ratio`` goes 0 -> 1 (DreamTime-like; the full range when None)."""
        if step_ratio is None:
            return self.min_step, self.max_step
        r = min(max(float(step_ratio), 0.0), 1.0)
        hi = int(round(self.max_step - (self.max_step - self.max_step_final) * r))
        return self.min_step, max(self.min_step, hi)

    def sample_timesteps(
        self, batch: int, step_ratio: float | None, generator: torch.Generator | None = None
    ) -> Tensor:
        lo, hi = self.timestep_range(step_ratio)
        t = torch.randint(lo, hi + 1, (batch,), generator=generator, device="cpu")
        return t.to(self.device)

    def encode_images(self, images: Tensor, *, mode: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """(B, 3, H, W) in [0, 1] -> scaled VAE latents at the model's resolution (differentiable)."""
        x = _resize(images, self.image_size).to(device=self.device, dtype=self.dtype)
        posterior = self.vae.encode(x * 2.0 - 1.0).latent_dist
        latents = posterior.mode() if mode else posterior.sample(generator=generator)
        return latents * self.scaling_factor

    @torch.no_grad()
    def encode_reference(self, reference: Tensor) -> ReferenceEncoding:
        """The conditioning for a reference image (B, 3, H, W) in [0, 1]: CLIP embedding and the unscaled VAE
        latent mode, as Zero123 was trained (cache it when the same reference is used again)."""
        x = _resize(reference, self.image_size).to(device=self.device, dtype=torch.float32)
        clip_in = _resize(x, self.clip_size, mode="bicubic").clamp(0.0, 1.0)
        clip_in = ((clip_in - self.clip_mean) / self.clip_std).to(self.dtype)
        embedding = self.image_encoder(pixel_values=clip_in).image_embeds.unsqueeze(1)
        latent = self.vae.encode((x * 2.0 - 1.0).to(self.dtype)).latent_dist.mode()
        return ReferenceEncoding(clip_embedding=embedding, latent=latent)

    def camera_features(
        self,
        delta_elevation_deg: Tensor,
        delta_azimuth_deg: Tensor,
        delta_radius: Tensor,
        cond_elevation_deg: Tensor | float = 0.0,
    ) -> Tensor:
        """(B, 1, 4) camera features in Zero123's convention from the project's (see the module docstring)."""
        d_el = torch.as_tensor(delta_elevation_deg, dtype=torch.float32, device=self.device).reshape(-1)
        d_az = torch.as_tensor(delta_azimuth_deg, dtype=torch.float32, device=self.device).reshape(-1)
        d_r = torch.as_tensor(delta_radius, dtype=torch.float32, device=self.device).reshape(-1)
        d_polar = torch.deg2rad(-d_el)
        az = torch.deg2rad(d_az)
        if self.camera_embedding == "stable":
            cond_el = torch.as_tensor(cond_elevation_deg, dtype=torch.float32, device=self.device)
            fourth = torch.deg2rad(90.0 - cond_el).expand_as(d_polar)
        else:
            fourth = d_r.expand_as(d_polar)
        return torch.stack([d_polar, torch.sin(az), torch.cos(az), fourth], dim=-1).unsqueeze(1)

    def predict_noise(
        self,
        latents_noisy: Tensor,
        t: Tensor,
        reference: ReferenceEncoding,
        camera: Tensor,
        guidance_scale: float,
    ) -> Tensor:
        """Classifier-free-guided noise prediction: uncond + s (cond - uncond); unconditional = zero image
        embedding and zero reference latent, as Zero123 was trained."""
        B = latents_noisy.shape[0]
        context = self.camera_projection(torch.cat([reference.clip_embedding, camera.to(self.dtype)], dim=-1))
        context = torch.cat([context, torch.zeros_like(context)], dim=0)
        ref_latent = torch.cat([reference.latent, torch.zeros_like(reference.latent)], dim=0)
        x_in = torch.cat([latents_noisy.to(self.dtype)] * 2, dim=0)
        noise_pred = self.unet(
            torch.cat([x_in, ref_latent], dim=1), torch.cat([t, t], dim=0), encoder_hidden_states=context
        ).sample
        cond, uncond = noise_pred[:B].float(), noise_pred[B:].float()
        return uncond + guidance_scale * (cond - uncond)

    # ------------------------------------------------------------------ the loss
    def loss(
        self,
        rendered: Tensor,
        reference: Tensor | ReferenceEncoding,
        delta_elevation_deg: Tensor,
        delta_azimuth_deg: Tensor,
        delta_radius: Tensor,
        step_ratio: float | None = None,
        guidance_scale: float = 5.0,
        *,
        cond_elevation_deg: Tensor | float = 0.0,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
        timesteps: Tensor | None = None,
    ) -> Tensor:
        """SDS loss (scalar, float32) whose gradient w.r.t. the render's latents is the batch mean of
        ``w(t) (eps_hat - eps)``, ``w = 1 - alpha_bar_t``.

        ``rendered`` (B, 3, H, W) in [0, 1] carries the gradient; ``reference`` is the static model's render
        from the same view (or its :meth:`encode_reference`), composited on the same background. The deltas
        (B,) are target view minus reference view in the project's camera convention; ``cond_elevation_deg``
        is the reference view's elevation (Stable Zero123 uses it). ``step_ratio`` in [0, 1] anneals the
        timestep range (:meth:`timestep_range`). ``noise`` / ``timesteps`` may be given to fix the draw.
        """
        B = rendered.shape[0]
        if not isinstance(reference, ReferenceEncoding):
            reference = self.encode_reference(reference)
        if len(reference) == 1 and B > 1:
            reference = ReferenceEncoding(
                reference.clip_embedding.expand(B, -1, -1), reference.latent.expand(B, -1, -1, -1)
            )
        if len(reference) != B:
            raise ValueError(f"reference batch {len(reference)} does not match the render batch {B}")
        latents = self.encode_images(rendered, generator=generator)
        t = self.sample_timesteps(B, step_ratio, generator) if timesteps is None else timesteps.to(self.device).long()
        camera = self.camera_features(delta_elevation_deg, delta_azimuth_deg, delta_radius, cond_elevation_deg)
        if camera.shape[0] == 1 and B > 1:
            camera = camera.expand(B, -1, -1)
        with torch.no_grad():
            if noise is None:
                noise = torch.randn(latents.shape, generator=generator, device="cpu").to(self.device)
            noise = noise.to(device=self.device, dtype=torch.float32)
            a = self.alphas_cumprod[t].view(B, 1, 1, 1)
            latents_noisy = a.sqrt() * latents.detach().float() + (1.0 - a).sqrt() * noise
            eps_hat = self.predict_noise(latents_noisy, t, reference, camera, guidance_scale)
            grad = torch.nan_to_num((1.0 - a) * (eps_hat - noise))
            target = latents.detach().float() - grad
        # d/d latents of 0.5 * ||latents - target||^2 / B is grad / B.
        return 0.5 * F.mse_loss(latents.float(), target, reduction="sum") / B


def _read_preprocessor(folder: Path, default_size: int) -> dict[str, Any]:
    path = folder / "feature_extractor" / "preprocessor_config.json"
    out: dict[str, Any] = {"clip_size": default_size}
    if not path.is_file():
        return out
    config = json.loads(path.read_text())
    crop = config.get("crop_size", default_size)
    out["clip_size"] = int(crop.get("height", default_size) if isinstance(crop, dict) else crop)
    if "image_mean" in config:
        out["clip_mean"] = tuple(float(v) for v in config["image_mean"])
    if "image_std" in config:
        out["clip_std"] = tuple(float(v) for v in config["image_std"])
    return out


def _resize(images: Tensor, size: int, mode: str = "bilinear") -> Tensor:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images (B, 3, H, W), got {tuple(images.shape)}")
    if images.shape[-2:] == (size, size):
        return images
    antialias = images.shape[-1] > size or images.shape[-2] > size
    return F.interpolate(images, (size, size), mode=mode, align_corners=False, antialias=antialias)


def load_zero123_or_none(
    model_id: str | os.PathLike[str] = DEFAULT_ZERO123_ID,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    **kwargs: Any,
) -> tuple[Zero123Guidance | None, str]:
    """(guidance, "") when the model loads; (None, one-line message) when diffusers/transformers or the weights
    are missing, so a run can say once that reference refinement is off."""
    try:
        guidance = Zero123Guidance.from_pretrained(model_id, device, dtype, **kwargs)
    except MissingWeightsError as exc:
        return None, str(exc).splitlines()[0] if str(exc) else _missing_message(str(model_id))
    return guidance, ""


__all__ = [
    "DEFAULT_ZERO123_ID",
    "ZERO123_XL_ID",
    "CameraProjection",
    "ReferenceEncoding",
    "Zero123Guidance",
    "load_zero123_or_none",
    "resolve_model_folder",
]
