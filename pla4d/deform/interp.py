"""Linear interpolation along the deformation field's lines, as a weight matrix: the space-time planes are read
at a batch's times and points by matrix products instead of ``grid_sample`` (the field and the part motion share it)."""

from __future__ import annotations

import torch
from torch import Tensor


def line_weights(coords: Tensor, size: int) -> Tensor:
    """(size, N) linear-interpolation weights of N coordinates in [-1, 1] on a line of ``size`` samples, as
    ``grid_sample`` with ``align_corners=True`` and border padding reads them (two non-zeros per column)."""
    position = (coords.clamp(-1.0, 1.0) + 1.0) * 0.5 * (size - 1)
    below = position.floor().clamp(0, size - 2)
    frac = position - below
    below = below.long()
    weights = coords.new_zeros(size, coords.shape[0])
    columns = torch.arange(coords.shape[0], device=coords.device)
    weights[below, columns] = 1.0 - frac
    weights[below + 1, columns] = frac
    return weights
