"""A set of 3D Gaussians as trainable parameters, in the storage convention of 3DGS / gsplat.

Stored (raw, trainable) values and their activations:

* ``means`` (N, 3) world positions;
* ``quats`` (N, 4) rotations as (w, x, y, z), normalised where used (the rasterizer normalises);
* ``log_scales`` (N, 3) -> ``scales = exp(log_scales)``;
* ``opacity_logits`` (N,) -> ``opacities = sigmoid(opacity_logits)``;
* ``sh0`` (N, 3) degree-0 SH coefficients and ``sh_rest`` (N, (d+1)^2 - 1, 3) the higher degrees (empty for
  degree 0). The colour seen from direction ``v`` is ``max(0, sum_k Y_k(v) c_k + 0.5)``; at degree 0 that is
  ``max(0, SH_C0 * sh0 + 0.5)``, as gsplat and every 3DGS viewer evaluate it. Colours are display sRGB values.

Pruning and densification return new models (``keep``, ``select``, ``extend``); an optimiser over the old
parameters must be rebuilt or have its state carried over by the caller.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from pla4d.cameras import Cameras
from pla4d.render.gaussians import MAX_SH_DEGREE, GaussianRender, render_gaussians

__all__ = ["PARAM_NAMES", "SH_C0", "GaussianModel", "rgb_to_sh0", "sh0_to_rgb"]

SH_C0 = 0.28209479177387814
PARAM_NAMES = ("means", "quats", "log_scales", "opacity_logits", "sh0", "sh_rest")


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    """Degree-0 SH coefficients whose colour is ``rgb`` (display values, as 3DGS's ``RGB2SH``)."""
    return (rgb - 0.5) / SH_C0


def sh0_to_rgb(sh0: Tensor) -> Tensor:
    """The colour of degree-0 coefficients, clamped at 0 as the rasterizer does (not clamped above 1)."""
    return torch.clamp_min(SH_C0 * sh0 + 0.5, 0.0)


def _logit(p: Tensor, eps: float = 1e-6) -> Tensor:
    p = p.clamp(eps, 1.0 - eps)
    return torch.log(p) - torch.log1p(-p)


def _num_rest(degree: int) -> int:
    return (degree + 1) ** 2 - 1


class GaussianModel(nn.Module):
    """N 3D Gaussians with trainable parameters (see the module docstring for the storage convention)."""

    means: nn.Parameter
    quats: nn.Parameter
    log_scales: nn.Parameter
    opacity_logits: nn.Parameter
    sh0: nn.Parameter
    sh_rest: nn.Parameter

    def __init__(
        self,
        means: Tensor,
        quats: Tensor,
        log_scales: Tensor,
        opacity_logits: Tensor,
        sh0: Tensor,
        sh_rest: Tensor | None = None,
    ) -> None:
        super().__init__()
        if means.ndim != 2 or means.shape[1] != 3:
            raise ValueError(f"means must be (N, 3), got {tuple(means.shape)}")
        n = means.shape[0]
        if sh_rest is None:
            sh_rest = means.new_zeros(n, 0, 3)
        expected = {
            "quats": (quats, (n, 4)),
            "log_scales": (log_scales, (n, 3)),
            "opacity_logits": (opacity_logits, (n,)),
            "sh0": (sh0, (n, 3)),
        }
        for name, (t, shape) in expected.items():
            if tuple(t.shape) != shape:
                raise ValueError(f"{name} must be {shape}, got {tuple(t.shape)}")
        k = sh_rest.shape[1] if sh_rest.ndim == 3 else -1
        degree = round(math.sqrt(k + 1)) - 1 if k >= 0 else -1
        if sh_rest.ndim != 3 or sh_rest.shape[0] != n or sh_rest.shape[2] != 3 or _num_rest(degree) != k:
            raise ValueError(f"sh_rest must be (N, (d+1)^2 - 1, 3) with N={n}, got {tuple(sh_rest.shape)}")
        if degree > MAX_SH_DEGREE:
            raise ValueError(f"SH degree {degree} exceeds the rasterizer's maximum {MAX_SH_DEGREE}")
        values = (means, quats, log_scales, opacity_logits, sh0, sh_rest)
        if any(not t.is_floating_point() for t in values):
            raise ValueError("Gaussian parameters must be floating point")
        if len({t.dtype for t in values}) != 1 or len({t.device for t in values}) != 1:
            raise ValueError("Gaussian parameters must share one dtype and one device")
        for name, t in zip(PARAM_NAMES, values, strict=True):
            setattr(self, name, nn.Parameter(t.detach().clone()))

    # ------------------------------------------------------------------------------------------ construction

    @classmethod
    def from_activated(
        cls,
        means: Tensor,
        quats: Tensor,
        scales: Tensor,
        opacities: Tensor,
        rgb: Tensor,
        sh_degree: int = 0,
    ) -> GaussianModel:
        """A model from activated values: real ``scales``, ``opacities`` in (0, 1), ``rgb`` display colours
        (higher SH coefficients, if ``sh_degree`` > 0, start at zero)."""
        if not 0 <= sh_degree <= MAX_SH_DEGREE:
            raise ValueError(f"sh_degree must lie in [0, {MAX_SH_DEGREE}], got {sh_degree}")
        if bool((scales <= 0).any()):
            raise ValueError("scales must be positive")
        n = means.shape[0]
        return cls(
            means,
            quats,
            torch.log(scales),
            _logit(opacities),
            rgb_to_sh0(rgb),
            means.new_zeros(n, _num_rest(sh_degree), 3),
        )

    @classmethod
    def empty(cls, sh_degree: int = 0, dtype: torch.dtype = torch.float32) -> GaussianModel:
        """A model with no Gaussians (a start for :meth:`extend`)."""
        z = torch.zeros(0, 3, dtype=dtype)
        return cls(
            z,
            torch.zeros(0, 4, dtype=dtype),
            z,
            torch.zeros(0, dtype=dtype),
            z,
            torch.zeros(0, _num_rest(sh_degree), 3, dtype=dtype),
        )

    # ---------------------------------------------------------------------------------------------- values

    @property
    def num_gaussians(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> int:
        return round(math.sqrt(self.sh_rest.shape[1] + 1)) - 1

    @property
    def scales(self) -> Tensor:
        return torch.exp(self.log_scales)

    @property
    def opacities(self) -> Tensor:
        return torch.sigmoid(self.opacity_logits)

    @property
    def rgb(self) -> Tensor:
        """View-independent (degree-0) colour, clamped at 0 as rendered."""
        return sh0_to_rgb(self.sh0)

    @property
    def normalized_quats(self) -> Tensor:
        return self.quats / self.quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    @property
    def sh(self) -> Tensor:
        """(N, (d+1)^2, 3) all SH coefficients, degree 0 first (gsplat's layout)."""
        return torch.cat([self.sh0[:, None, :], self.sh_rest], dim=1)

    def render(
        self,
        cameras: Cameras,
        background: Tensor | None = None,
        backend: str = "auto",
        sh_degree: int | None = None,
        **kwargs,
    ) -> GaussianRender:
        """Render into ``cameras`` with :func:`pla4d.render.gaussians.render_gaussians` (differentiable).

        ``sh_degree`` (default: the model's) may be lower than the model's to render with fewer SH bands, as
        3DGS does while it warms up; ``kwargs`` go to the rasterizer (``near_plane``, ``eps2d``, ...).
        """
        degree = self.sh_degree if sh_degree is None else sh_degree
        if not 0 <= degree <= self.sh_degree:
            raise ValueError(f"sh_degree must lie in [0, {self.sh_degree}], got {degree}")
        coeffs = self.sh[:, : (degree + 1) ** 2]
        if background is not None:
            background = torch.as_tensor(background, dtype=self.means.dtype, device=self.means.device)
        return render_gaussians(
            self.means,
            self.quats,
            self.scales,
            self.opacities,
            coeffs,
            cameras,
            background=background,
            sh_degree=degree,
            backend=backend,
            **kwargs,
        )

    # ------------------------------------------------------------------------------------- new models

    def _raw(self) -> list[Tensor]:
        return [getattr(self, name) for name in PARAM_NAMES]

    def clone(self) -> GaussianModel:
        """An independent copy (new storage) with the same values; parameters require grad."""
        return GaussianModel(*(t.detach().clone() for t in self._raw()))

    def detach(self) -> GaussianModel:
        """A copy whose parameters do not require grad (e.g. a frozen snapshot or a teacher)."""
        out = self.clone()
        out.requires_grad_(False)
        return out

    def select(self, index: Tensor) -> GaussianModel:
        """A new model of the Gaussians at ``index`` (bool mask (N,) or integer indices, repeats allowed)."""
        index = torch.as_tensor(index, device=self.means.device)
        if index.dtype == torch.bool:
            if index.shape != (self.num_gaussians,):
                raise ValueError(f"a mask must be ({self.num_gaussians},), got {tuple(index.shape)}")
        elif index.is_floating_point() or index.ndim != 1:
            raise ValueError("index must be a bool mask (N,) or 1-D integer indices")
        return GaussianModel(*(t.detach()[index] for t in self._raw()))

    def keep(self, mask: Tensor) -> GaussianModel:
        """A new model of the Gaussians where ``mask`` (N,) is True (pruning)."""
        mask = torch.as_tensor(mask, device=self.means.device)
        if mask.dtype != torch.bool:
            raise ValueError(f"keep() takes a bool mask, got {mask.dtype}")
        return self.select(mask)

    def extend(self, other: GaussianModel) -> GaussianModel:
        """A new model holding these Gaussians followed by ``other``'s (same SH degree, dtype and device)."""
        if other.sh_degree != self.sh_degree:
            raise ValueError(f"cannot extend a degree-{self.sh_degree} model with a degree-{other.sh_degree} one")
        return GaussianModel(
            *(torch.cat([a.detach(), b.detach().to(a)]) for a, b in zip(self._raw(), other._raw(), strict=True))
        )

    def with_sh_degree(self, degree: int) -> GaussianModel:
        """A new model with SH degree ``degree``: new bands start at zero, dropped bands are discarded."""
        if not 0 <= degree <= MAX_SH_DEGREE:
            raise ValueError(f"sh_degree must lie in [0, {MAX_SH_DEGREE}], got {degree}")
        rest = self.sh_rest.detach()[:, : _num_rest(degree)]
        pad = rest.new_zeros(self.num_gaussians, _num_rest(degree) - rest.shape[1], 3)
        raw = [t.detach() for t in self._raw()[:5]]
        return GaussianModel(*raw, torch.cat([rest, pad], dim=1))

    def extra_repr(self) -> str:
        return f"num_gaussians={self.num_gaussians}, sh_degree={self.sh_degree}"
