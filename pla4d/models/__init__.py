"""The model registry (:mod:`pla4d.models.registry`) and what each preset and run needs from it."""

from __future__ import annotations

from collections.abc import Mapping

from pla4d.config import PresetConfig
from pla4d.models.registry import KNOWN, ModelSpec, describe, locate, pull, require, spec_for, verify

__all__ = [
    "KNOWN", "MODEL_KEYS", "ModelSpec", "apply_models", "describe", "locate", "needed_models", "pull", "require",
    "spec_for", "verify",
]  # fmt: skip

MODEL_KEYS = ("video", "matte", "mesh", "guidance")


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


def apply_models(preset: PresetConfig, models: Mapping[str, str | None] | None) -> PresetConfig:
    """The preset with models chosen by the caller: ``{"video": id or folder, "matte": rembg session,
    "mesh": id, folder or "external", "mesh_command": template, "guidance": id, folder or None}``."""
    if not models:
        return preset
    unknown = set(models) - set(MODEL_KEYS) - {"mesh_command"}
    if unknown:
        raise ValueError(f"unknown model keys {sorted(unknown)}; use {', '.join(MODEL_KEYS)} or mesh_command")
    if models.get("video"):
        preset = preset.replace_video(model=models["video"])
    if models.get("matte"):
        preset = preset.replace_matte(session=models["matte"])
    if models.get("mesh_command"):
        preset = preset.replace_mesh(model="external", command=models["mesh_command"])
    if models.get("mesh"):
        preset = preset.replace_mesh(model=models["mesh"])
    if "guidance" in models:
        preset = preset.replace_motion(guidance_model=models["guidance"] or None)
    return preset
