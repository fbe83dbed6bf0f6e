"""A :class:`GaussianModel` in the standard 3DGS PLY layout, which the Inria code, gsplat's tools, SuperSplat, the
Blender 3DGS add-ons and the web viewers all read.

The file format itself (property order, storage convention, reading any byte order or ASCII) lives in
:mod:`pla4d.formats.ply`, which the Blender add-on shares; this module converts between the model's tensors and
that module's dict of numpy arrays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pla4d.formats.ply import read_gaussian_ply, write_gaussian_ply
from pla4d.gaussians.model import GaussianModel

__all__ = ["load_ply", "model_arrays", "model_from_arrays", "save_ply"]

# GaussianModel parameter behind each key of the formats package's Gaussian dict.
_PARAM_OF = {
    "positions": "means",
    "rotations": "quats",
    "scales": "log_scales",
    "opacities": "opacity_logits",
    "sh_dc": "sh0",
    "sh_rest": "sh_rest",
}


def model_arrays(model: GaussianModel) -> dict[str, np.ndarray]:
    """The model's parameters as float32 numpy arrays keyed like :func:`pla4d.formats.ply.write_gaussian_ply`."""
    with torch.no_grad():
        return {key: getattr(model, param).detach().cpu().float().numpy() for key, param in _PARAM_OF.items()}


def model_from_arrays(arrays: dict[str, np.ndarray]) -> GaussianModel:
    """A float32 :class:`GaussianModel` (on the CPU) from arrays keyed like
    :func:`pla4d.formats.ply.read_gaussian_ply`'s; a missing ``sh_rest`` means SH degree 0."""
    values = [
        None if arrays.get(key) is None else torch.from_numpy(np.array(arrays[key], dtype=np.float32))
        for key in _PARAM_OF
    ]
    return GaussianModel(*values)


def save_ply(model: GaussianModel, path: str | Path) -> Path:
    """Write ``model`` as a standard 3DGS PLY, atomically: the data goes to a temporary file beside ``path`` that
    replaces ``path`` only once complete. Raises ValueError for non-finite parameters (3DGS viewers fail on them)."""
    return write_gaussian_ply(path, **model_arrays(model))


def load_ply(path: str | Path) -> GaussianModel:
    """Read a 3DGS PLY (any byte order or ASCII, any scalar property types, extra properties ignored) into a
    float32 :class:`GaussianModel`. Raises ValueError for a PLY that does not hold 3DGS Gaussians."""
    return model_from_arrays(read_gaussian_ply(path))
