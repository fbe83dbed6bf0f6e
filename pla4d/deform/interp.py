"""Linear interpolation along the deformation field's lines, as a weight matrix: the space-time planes are read
at a batch's times and points by matrix products instead of ``grid_sample`` (the field and the part motion share it)."""

from __future__ import annotations

import math

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


def fill_gap(table: Tensor, dim: int, low: float, high: float | None) -> None:
    """In place: along ``dim`` of ``table``, the rows strictly between fractional positions ``low`` and ``high``
    take the interpolated row at the nearer end (the first half ``low``'s, the rest ``high``'s); ``high`` None:
    every row after ``low`` takes ``low``'s."""
    table = table.movedim(dim, 0)  # a view: writes land in the parameter
    count = table.shape[0]

    def at(position: float) -> Tensor:
        below = int(position)
        above = min(below + 1, count - 1)
        weight = position - below
        return table[below] * (1.0 - weight) + table[above] * weight

    first = int(low) + 1
    if high is None:
        table[first:] = at(low)
        return
    last = int(math.ceil(high)) - 1  # the last row strictly below ``high``
    if last < first:
        return
    middle = int(math.floor((low + high) / 2.0))
    low_row, high_row = at(low), at(high)
    table[first : max(middle, first - 1) + 1] = low_row
    table[max(middle + 1, first) : last + 1] = high_row
