"""The model registry (:mod:`pla4d.models.registry`) and what each preset and run needs from it."""

from __future__ import annotations

from pla4d.config import PresetConfig
from pla4d.models.registry import KNOWN, ModelSpec, describe, locate, pull, require, spec_for, verify

__all__ = ["KNOWN", "ModelSpec", "describe", "locate", "needed_models", "pull", "require", "spec_for", "verify"]


def needed_models(
    preset: PresetConfig, *, video: bool = True, matte: bool = True, mesh: bool = True, guidance: bool = True
) -> list[ModelSpec]:
    """The models a run with ``preset`` loads, for the stages that will run (cached stages need none)."""
    specs = []
    if video:
        specs.append(spec_for(preset.video.model, "text-to-video"))
    if matte:
        specs.append(spec_for(preset.matte.session, "matting"))
    if mesh and preset.mesh.model != "external":
        specs.append(spec_for(preset.mesh.model, "image-to-mesh"))
    if guidance and preset.motion.guidance_model and preset.motion.guidance_weight != 0:
        specs.append(spec_for(preset.motion.guidance_model, "guidance"))
    return specs
