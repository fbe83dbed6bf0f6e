"""Adaptive density control for Gaussians (3DGS / gsplat's default strategy), keeping Adam's state.

Gaussians whose screen-space position gradient is large are under-reconstructed: small ones are cloned,
large ones split in two smaller ones sampled inside the original. Nearly transparent ones are pruned.
New Gaussians start with zero Adam moments; survivors keep theirs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class GradientStats:
    """Running sum of normalised screen-space gradient norms per Gaussian, and how often each was visible."""

    grad_sum: Tensor
    count: Tensor

    @staticmethod
    def zeros(n: int, device: torch.device) -> GradientStats:
        return GradientStats(torch.zeros(n, device=device), torch.zeros(n, device=device))

    def accumulate(self, means2d: Tensor, radii: Tensor, width: int, height: int) -> None:
        """Add one iteration's ``means2d.grad`` (C, N, 2); ``radii`` (C, N) or (C, N, 2), 0 where culled."""
        if means2d.grad is None:
            return
        grad = means2d.grad.detach().clone()
        # Pixel gradients -> NDC units, as 3DGS's threshold expects. No camera-count factor (gsplat adds one):
        # the training loss sums per-view losses (paper eq. 9) rather than averaging them.
        grad[..., 0] *= width / 2.0
        grad[..., 1] *= height / 2.0
        visible = (radii > 0).all(dim=-1) if radii.ndim == 3 else radii > 0
        norms = grad.norm(dim=-1) * visible
        self.grad_sum += norms.sum(0)
        self.count += visible.sum(0).to(self.count.dtype)


def _replace_parameters(model: nn.Module, optimizer: torch.optim.Optimizer, source: Tensor, fresh: Tensor) -> None:
    """Rebuild every per-Gaussian parameter as ``param[source]``; rows where ``fresh`` get zero Adam state."""
    n = model.means.shape[0]
    optimised = {group["name"] for group in optimizer.param_groups}
    for name, param in list(model.named_parameters()):
        # Parameters the optimizer does not train (e.g. empty higher SH bands) must still follow the indexing.
        if name not in optimised and param.shape[:1] == (n,):
            setattr(model, name, nn.Parameter(param.detach()[source].clone(), requires_grad=param.requires_grad))
    for group in optimizer.param_groups:
        old = group["params"][0]
        name = group["name"]
        new = nn.Parameter(old.detach()[source].clone())
        state = optimizer.state.pop(old, None)
        if state:
            for key in ("exp_avg", "exp_avg_sq"):
                moment = state[key][source].clone()
                moment[fresh] = 0.0
                state[key] = moment
            optimizer.state[new] = state
        group["params"] = [new]
        setattr(model, name, new)


@dataclass(frozen=True)
class DensifyResult:
    cloned: int
    split: int
    pruned: int
    total: int


@torch.no_grad()
def densify_and_prune(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    stats: GradientStats,
    grad_threshold: float,
    size_threshold: float,
    prune_opacity: float,
    max_gaussians: int,
    generator: torch.Generator | None = None,
) -> DensifyResult:
    """One densify-and-prune step on ``model`` (a GaussianModel) whose parameters ``optimizer`` holds.

    Every optimizer param group must hold one per-Gaussian parameter and carry its attribute name as ``name``.
    """
    means = model.means
    n = means.shape[0]
    device = means.device
    avg = stats.grad_sum / stats.count.clamp(min=1.0)
    max_scale = model.log_scales.exp().max(dim=1).values
    candidates = avg >= grad_threshold
    budget = max(max_gaussians - n, 0)
    if candidates.sum() > budget:
        # Over the budget: keep the largest gradients only.
        order = torch.argsort(avg, descending=True)
        top = torch.zeros_like(candidates)
        top[order[:budget]] = True
        candidates &= top
    clone = candidates & (max_scale <= size_threshold)
    split = candidates & (max_scale > size_threshold)
    prune = torch.sigmoid(model.opacity_logits) < prune_opacity

    keep_idx = torch.nonzero(~split & ~prune).squeeze(1)
    clone_idx = torch.nonzero(clone & ~prune).squeeze(1)
    split_idx = torch.nonzero(split).squeeze(1)
    source = torch.cat([keep_idx, clone_idx, split_idx, split_idx])
    fresh = torch.zeros(len(source), dtype=torch.bool, device=device)
    fresh[len(keep_idx) :] = True
    _replace_parameters(model, optimizer, source, fresh)

    if len(clone_idx):
        # A clone sits exactly on its original: give both opacity 1 - sqrt(1 - o) so together they still
        # cover o (Bulo et al. 2024, "Revising Densification in Gaussian Splatting"), instead of doubling it.
        originals = torch.searchsorted(keep_idx, clone_idx)
        copies = torch.arange(len(keep_idx), len(keep_idx) + len(clone_idx), device=device)
        o = torch.sigmoid(model.opacity_logits.data[copies])
        corrected = torch.logit((1.0 - torch.sqrt(1.0 - o)).clamp(1e-6, 1 - 1e-6))
        model.opacity_logits.data[copies] = corrected
        model.opacity_logits.data[originals] = corrected

    if len(split_idx):
        # Split children are sampled inside the parent and shrunk by 1.6 (3DGS's factor).
        start = len(keep_idx) + len(clone_idx)
        children = slice(start, start + 2 * len(split_idx))
        parent_scales = model.log_scales.data[children].exp()
        quats = model.quats.data[children]
        offsets = torch.randn(parent_scales.shape, generator=generator, device=device) * parent_scales
        model.means.data[children] += _rotate(quats, offsets)
        model.log_scales.data[children] -= math.log(1.6)
    return DensifyResult(int(len(clone_idx)), int(len(split_idx)), int(prune.sum()), int(len(source)))


def _rotate(quats: Tensor, vectors: Tensor) -> Tensor:
    """Rotate ``vectors`` (N, 3) by unit-normalised quaternions (N, 4) in w, x, y, z order."""
    q = quats / quats.norm(dim=1, keepdim=True).clamp_min(1e-12)
    w, xyz = q[:, :1], q[:, 1:]
    t = 2.0 * torch.linalg.cross(xyz, vectors)
    return vectors + w * t + torch.linalg.cross(xyz, t)
