"""Presets: every number a stage uses, in one config object per preset, printed into the run folder.

``paper`` follows the PLA4D paper (appendix A): 1000 iterations, batch 6, resolution 128 -> 256 at 50% ->
512 at 70%, initial fov 49.1 degrees, lambda_t 0.98 -> 0.02. ``draft`` is sized for a 2-core CPU (minutes);
``standard`` sits between the two.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FocalConfig:
    radius: float = 3.0  # camera distance of the front view; the object is normalised to the unit sphere
    init_fov_deg: float = 49.1  # Zero-1-to-3's fov, the paper's starting point
    enabled: bool = True  # off: keep init_fov_deg (the ablation "without focal alignment")


@dataclass(frozen=True)
class StaticConfig:
    """Frame-to-3D (paper section 3.3, Algorithm 1)."""

    iterations: int = 1000
    batch_views: int = 6  # random views per iteration for GS-mesh contrastive learning (besides the front view)
    resolutions: tuple[int, ...] = (128, 256, 512)
    resolution_steps: tuple[float, ...] = (0.5, 0.7)  # fraction of training where the next resolution starts
    lambda_start: float = 0.98  # lambda_t: weight of the MSE and mask losses, decayed linearly
    lambda_end: float = 0.02
    perceptual_weight: float = 0.2  # gamma: weight of the LPIPS loss
    perceptual_net: str = "vgg"  # "vgg" (paper) or "alex" (faster)
    perceptual_max_size: int | None = None  # LPIPS sees renders downsampled to at most this size (None: full)
    geometry_weight: float = 1.0  # weight of the GS-mesh (random view) losses against the front-view losses
    num_gaussians: int = 50_000  # initial Gaussians sampled on the mesh surface
    view_pool: int = 96  # random cameras whose mesh renders are cached (the mesh never changes)
    elevation_range_deg: tuple[float, float] = (-30.0, 60.0)
    focal_jitter: float = 0.05  # relative random perturbation of the focal for random views (paper: "slight")
    # Renders and targets are composited over a random colour per view and iteration, so a transparent
    # Gaussian never matches a target pixel by accident (a white object on a fixed white background would).
    # A fixed (r, g, b) is possible too.
    background: str | tuple[float, float, float] = "random"
    # Adam learning rates per parameter (3DGS's values, scaled for a unit-sphere object and short runs).
    lr_means: float = 1.6e-4
    lr_sh0: float = 2.5e-3
    lr_opacity: float = 2.5e-2
    lr_scales: float = 5e-3
    lr_quats: float = 1e-3
    lr_means_final_ratio: float = 0.01  # means' learning rate decays exponentially to this fraction
    # Densification (3DGS style): clone small / split large Gaussians with large screen-space gradients.
    densify_from: float = 0.1  # fraction of training
    densify_until: float = 0.6
    densify_every: int = 100
    densify_grad_threshold: float = 2e-4
    # World units: larger Gaussians split, smaller ones clone. 3DGS uses 1% of the scene extent (camera radius
    # x 1.1), about 0.033 here; mesh-initialised Gaussians are mostly smaller, so they clone.
    densify_size_threshold: float = 0.033
    prune_opacity: float = 0.01
    max_gaussians: int = 200_000
    preview_views: int = 8


@dataclass(frozen=True)
class PresetConfig:
    name: str
    focal: FocalConfig = field(default_factory=FocalConfig)
    static: StaticConfig = field(default_factory=StaticConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def replace_static(self, **changes: Any) -> PresetConfig:
        """A copy with some static-stage numbers changed (checked against the known fields)."""
        known = {f.name for f in dataclasses.fields(StaticConfig)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown static settings: {sorted(unknown)}")
        return dataclasses.replace(self, static=dataclasses.replace(self.static, **changes))


PRESETS: dict[str, PresetConfig] = {
    "draft": PresetConfig(
        name="draft",
        static=StaticConfig(
            iterations=300,
            batch_views=4,
            resolutions=(128, 256),
            # 256 px (the scoring size) from 30%: edges trained only at 128 px end up ~1 px eroded at 256.
            resolution_steps=(0.3,),
            perceptual_net="alex",
            perceptual_max_size=128,
            num_gaussians=20_000,
            view_pool=48,
            lr_means=4e-4,
            densify_every=50,
            densify_from=0.15,
            densify_until=0.6,
            max_gaussians=40_000,
        ),
    ),
    "standard": PresetConfig(
        name="standard",
        static=StaticConfig(
            iterations=600,
            batch_views=6,
            resolutions=(128, 256),
            resolution_steps=(0.3,),
            perceptual_net="vgg",
            perceptual_max_size=128,
            num_gaussians=40_000,
            view_pool=96,
            lr_means=3e-4,
            max_gaussians=120_000,
        ),
    ),
    "paper": PresetConfig(name="paper"),
}


def get_preset(name: str) -> PresetConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
