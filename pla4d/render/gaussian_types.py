"""What the Gaussian rasteriser's dispatcher (:mod:`pla4d.render.gaussians`) and its backends share: the
tiling and alpha constants of gsplat's classic kernels, and the projected Gaussians and render result types.

The backends import these from here, never from the dispatcher, so the dependence runs one way
(dispatcher -> backend -> these types).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

__all__ = ["ALPHA_THRESHOLD", "MAX_SH_DEGREE", "TILE_SIZE", "GaussianRender", "ProjectedGaussians"]

TILE_SIZE = 16
ALPHA_THRESHOLD = 1.0 / 255.0
MAX_SH_DEGREE = 4


@dataclass
class GaussianRender:
    """Rendered images of ``C`` cameras.

    ``rgb``: (C, H, W, 3) colours composited over the background (with a black background they are
    premultiplied by ``alpha``); ``alpha``: (C, H, W, 1) accumulated opacity; ``depth``: (C, H, W, 1) expected
    camera-space z (accumulated z / alpha, 0 where nothing was drawn); ``info``: per-view projection results
    (``radii`` (C, N, 2) int32, 0 where culled; ``means2d`` (C, N, 2), which stays in the autograd graph so that
    ``info["means2d"].retain_grad()`` before ``backward()`` yields screen-space gradients for densification;
    ``depths`` (C, N); ``conics`` (C, N, 3)), the number of tile intersections and the backend's name.
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProjectedGaussians:
    """Per-view screen-space Gaussians; entries with ``radii == 0`` are culled and hold arbitrary finite values."""

    means2d: Tensor  # (C, N, 2) pixels
    conics: Tensor  # (C, N, 3) upper triangle (a, b, c) of the inverse 2D covariance
    depths: Tensor  # (C, N) camera-space z
    radii: Tensor  # (C, N, 2) int32, no gradient
