"""diffusers' Shap-E image-to-3D (``openai/shap-e-img2img``, MIT) as the in-process image-to-mesh model.

Why Shap-E: it is the one image-to-3D model that installs from PyPI and loads by id through a library the project
already uses (diffusers), with a permissive licence and a few GB of weights; it returns an implicit function
(signed distance + colour) that decodes to a vertex-coloured mesh in seconds on a GPU. Its meshes are coarser than
CRM's (the paper's model), which runs through the external-command adapter instead (docs/text-to-4d.md). The
static stage only needs the mesh for initialisation, the focal search and the GS-mesh views, and the texture
alignment to frame 1 recovers detail.

The latents come from the pipeline (``output_type="latent"``); the mesh is decoded here: the renderer's MLP is
given the latent's parameters, its signed distance is sampled on a ``grid_size``^3 grid and meshed with
scikit-image's marching cubes (Lewiner), and the colour head is read at the vertices. That is what diffusers'
``decode_to_mesh`` does, with the grid size a setting and without its stored marching-cubes tables.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pla4d.errors import Cancelled, MissingWeightsError
from pla4d.image_to_mesh import mesh_from_decoded
from pla4d.render.mesh import Mesh

SHAP_E_ID = "openai/shap-e-img2img"


class ShapEImageToMesh:
    up = "z"  # Shap-E's objects stand on the xy-plane (the diffusers docs turn them -90 degrees about x)

    def __init__(
        self,
        pipe: Any,
        name: str,
        device: torch.device,
        steps: int = 64,
        guidance_scale: float = 3.0,
        grid_size: int = 128,
        image_size: int = 256,
    ) -> None:
        self.pipe, self.name, self.device = pipe, name, device
        self.steps, self.guidance_scale, self.grid_size, self.image_size = steps, guidance_scale, grid_size, image_size

    @classmethod
    def load(
        cls, name: str, folder: str | Path, device: torch.device | str = "cpu", dtype: str = "fp16", **settings: Any
    ) -> ShapEImageToMesh:
        try:
            from diffusers import DiffusionPipeline
        except ImportError as exc:  # pragma: no cover - only without the [models] extra
            raise MissingWeightsError("image-to-mesh needs diffusers: pip install 'pla4d[models]'") from exc
        from pla4d.guidance.zero123 import _quiet_progress_bars
        from pla4d.textvideo import torch_dtype

        device = torch.device(device)
        try:
            with _quiet_progress_bars():
                pipe = DiffusionPipeline.from_pretrained(
                    str(folder), dtype=torch_dtype(dtype, device), local_files_only=True
                )
        except OSError as exc:
            raise MissingWeightsError(
                f"image-to-mesh model {name} is incomplete ({exc}): `pla4d models pull {name}`"
            ) from exc
        if type(pipe).__name__ != "ShapEImg2ImgPipeline":
            raise ValueError(f"{name} is a {type(pipe).__name__}; the in-process adapter runs ShapEImg2ImgPipeline")
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe, name, device, **settings)

    def __call__(self, image_rgba: np.ndarray, seed: int = 0, should_cancel: Any = None) -> Mesh:
        from PIL import Image

        if self.pipe is None:
            raise RuntimeError("this image-to-mesh model was released")
        # Shap-E was trained on renders on white: composite the matted frame on white.
        rgb = image_rgba[..., :3] * image_rgba[..., 3:] + (1.0 - image_rgba[..., 3:])
        image = Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)).resize(
            (self.image_size, self.image_size), Image.Resampling.BICUBIC
        )
        latents = self.pipe(
            image, num_inference_steps=self.steps, guidance_scale=self.guidance_scale, output_type="latent",
            generator=torch.Generator("cpu").manual_seed(seed),
        ).images  # fmt: skip
        if should_cancel is not None and should_cancel():
            raise Cancelled("cancelled during image-to-mesh")
        verts, faces, colours = decode_mesh(self.pipe.shap_e_renderer, latents[0], self.grid_size)
        return mesh_from_decoded(verts, faces, colours)

    def release(self) -> None:
        self.pipe = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


@torch.no_grad()
def _load_latent_params(renderer: Any, latent: torch.Tensor) -> None:
    params = renderer.params_proj(latent[None].to(next(renderer.parameters()).dtype))
    for name, param in renderer.mlp.state_dict().items():
        if f"nerstf.{name}" in params:
            param.copy_(params[f"nerstf.{name}"].squeeze(0))


@torch.no_grad()
def _query(renderer: Any, points: torch.Tensor, batch: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """(signed distance (N,), colour (N, 3) sRGB) of the renderer's MLP at ``points`` (N, 3)."""
    device = next(renderer.parameters()).device
    dtype = renderer.mlp.dtype if hasattr(renderer.mlp, "dtype") else torch.float32
    sdf, channels = [], []
    for i in range(0, points.shape[0], batch):
        out = renderer.mlp(position=points[None, i : i + batch].to(device, dtype), direction=None, ts=None,
                           nerf_level="fine", rendering_mode="stf")  # fmt: skip
        sdf.append(out.signed_distance[0, :, 0].float().cpu())
        channels.append(out.channels[0].float().cpu())
    return torch.cat(sdf), torch.cat(channels)


def grid_points(renderer: Any, grid_size: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    lo = renderer.volume.bbox_min.float().cpu().numpy()
    hi = renderer.volume.bbox_max.float().cpu().numpy()
    axes = [torch.linspace(float(lo[k]), float(hi[k]), grid_size) for k in range(3)]
    points = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    return points, lo, hi


def decode_mesh(renderer: Any, latent: torch.Tensor, grid_size: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A Shap-E latent -> (vertices, faces, linear vertex colours) via marching cubes on the signed distance."""
    from skimage.measure import marching_cubes

    from pla4d.colour import srgb_to_linear

    _load_latent_params(renderer, latent)
    points, lo, hi = grid_points(renderer, grid_size)
    sdf, _ = _query(renderer, points)
    field = sdf.reshape(grid_size, grid_size, grid_size).numpy()
    # Positive inside (Shap-E's convention); a border of "outside" closes every surface.
    padded = np.pad(field, 1, constant_values=-1.0)
    if not (padded > 0).any():
        raise ValueError("the image-to-mesh model produced no surface for this image (try another seed or model)")
    spacing = (hi - lo) / (grid_size - 1)
    verts, faces, _, _ = marching_cubes(padded, level=0.0, spacing=tuple(float(s) for s in spacing))
    verts = verts - spacing + lo  # undo the padding offset
    # marching_cubes orients faces towards decreasing values (outwards here); keep that winding.
    _, colour = _query(renderer, torch.from_numpy(verts.astype(np.float32)))
    linear = srgb_to_linear(colour.clamp(0, 1)).numpy()
    return verts.astype(np.float32), faces.astype(np.int64), linear.astype(np.float32)
