"""Initial Gaussians from a mesh: flat discs on the surface carrying the mesh's colours.

Each Gaussian sits on an area-uniform surface sample (:func:`pla4d.render.mesh_sampling.sample_surface`), takes
the colour the mesh renderer shows there, and is a disc lying in the surface: both in-plane scales equal the
local sample spacing (mean distance to the ``k`` nearest samples, times ``scale_factor``), the scale along the
normal is ``thickness`` times that. With the default density the discs overlap enough that the first render is
already an opaque, correctly coloured copy of the mesh (see ``tests/test_gaussian_model.py`` for the figures).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from pla4d.gaussians.model import GaussianModel
from pla4d.render.mesh import Mesh
from pla4d.render.mesh_sampling import sample_surface

__all__ = ["DEFAULT_NUM_GAUSSIANS", "gaussians_from_mesh", "quats_from_normals"]

# A unit-sphere object seen at 256 px with the project's cameras (radius 3, fov 40 deg) spans about 1 px per
# 0.0085 world units; a typical character has 2-4 square units of surface, so 30k samples space the discs about
# one pixel apart: enough to reproduce the mesh's texture at that resolution, few enough for the CPU rasterizer to
# stay interactive. Higher resolutions want more (the density grows with pixels^2).
DEFAULT_NUM_GAUSSIANS = 30_000


def quats_from_normals(normals: Tensor) -> Tensor:
    """(N, 4) unit (w, x, y, z) rotations taking the local +z axis onto each normal's line.

    A disc is symmetric under flipping its normal, so normals are first turned into the +z half-space; that keeps
    the shortest-arc rotation ``(1 + n_z, -n_y, n_x, 0)`` away from its singularity at ``n = -z``.
    """
    n = normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    n = torch.where(n[:, 2:3] < 0, -n, n)
    q = torch.stack([1.0 + n[:, 2], -n[:, 1], n[:, 0], torch.zeros_like(n[:, 0])], dim=-1)
    return q / q.norm(dim=-1, keepdim=True)


def gaussians_from_mesh(
    mesh: Mesh,
    n: int = DEFAULT_NUM_GAUSSIANS,
    seed: int = 0,
    opacity: float = 0.8,
    k: int = 3,
    scale_factor: float = 0.7,
    thickness: float = 0.1,
    sh_degree: int = 0,
) -> GaussianModel:
    """``n`` disc-shaped Gaussians on ``mesh``'s surface with the mesh's display colours (see the module docstring).

    ``opacity``: initial opacity of every Gaussian; ``k``: neighbours averaged for the local spacing;
    ``scale_factor``: multiplies that spacing; ``thickness``: normal-to-tangent scale ratio (0 < thickness <= 1);
    ``sh_degree``: SH degree of the model (higher bands start at zero). Deterministic for a ``seed``.
    """
    if not 0.0 < opacity < 1.0:
        raise ValueError(f"opacity must lie in (0, 1), got {opacity}")
    if not 0.0 < thickness <= 1.0:
        raise ValueError(f"thickness must lie in (0, 1], got {thickness}")
    if not scale_factor > 0.0:
        raise ValueError(f"scale_factor must be positive, got {scale_factor}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an int >= 2, got {n!r}")
    samples = sample_surface(mesh, n, seed)
    points = samples.points.double().numpy()
    k_eff = min(k, n - 1)
    dist, _ = cKDTree(points).query(points, k=k_eff + 1)  # column 0 is the point itself
    spacing = np.asarray(dist, np.float64).reshape(n, -1)[:, 1:].mean(axis=1)
    # Random sampling leaves a few points in clumps (near-zero spacing) or alone on a tiny part (huge spacing);
    # clamping to a band around the median keeps such outliers from becoming specks or blobs.
    median = float(np.median(spacing))
    if not median > 0.0:
        median = float(np.sqrt(_surface_area(mesh) / n))
    spacing = np.clip(spacing, 0.25 * median, 4.0 * median) * scale_factor
    tangent = torch.from_numpy(spacing).float()
    scales = torch.stack([tangent, tangent, tangent * thickness], dim=-1)
    quats = quats_from_normals(samples.normals)
    opacities = torch.full((n,), float(opacity))
    return GaussianModel.from_activated(
        samples.points, quats, scales, opacities, samples.colors_srgb.clamp(0.0, 1.0), sh_degree
    )


def _surface_area(mesh: Mesh) -> float:
    from pla4d.render.mesh_sampling import face_areas

    return float(face_areas(mesh).sum())
