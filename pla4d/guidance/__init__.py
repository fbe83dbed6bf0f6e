"""Diffusion guidance for the 4D stage (Zero123 score distillation); diffusers is imported only on use."""

from pla4d.guidance.zero123 import (
    DEFAULT_ZERO123_ID,
    ZERO123_XL_ID,
    ReferenceEncoding,
    Zero123Guidance,
    load_zero123_or_none,
)

__all__ = ["DEFAULT_ZERO123_ID", "ZERO123_XL_ID", "ReferenceEncoding", "Zero123Guidance", "load_zero123_or_none"]
