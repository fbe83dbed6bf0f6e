"""Text to video (paper section 3.2, stage I) behind one interface, the model chosen by id.

Any diffusers text-to-video pipeline loads (``DiffusionPipeline.from_pretrained`` on the model's folder: a local
folder, or the model id's snapshot in the local Hugging Face cache; never a download). The families the project
knows get their frame-count and size constraints applied (Wan / CogVideoX: 4k + 1 frames, LTX-Video: 8k + 1;
sizes in multiples of 16, LTX 32): the nearest valid count at or above the asked one is generated and the extra
frames dropped, so a preset can ask for the paper's 8 frames of any model.

On CUDA the pipeline runs in bf16/fp16 with accelerate's model CPU offload by default (each sub-model moves to the
GPU only while it runs), so the large text encoders of these models never sit on the GPU beside the transformer;
:meth:`DiffusersTextToVideo.release` frees everything before the next stage.
"""

from __future__ import annotations

import gc
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from pla4d.config import VideoConfig
from pla4d.errors import Cancelled, MissingWeightsError

StepCallback = Callable[[int, int], None]

# Pipeline class -> (frames must be k * step + 1, size multiple).
FAMILIES: dict[str, tuple[int, int]] = {
    "WanPipeline": (4, 16),
    "CogVideoXPipeline": (4, 16),
    "LTXPipeline": (8, 32),
    "AnimateDiffPipeline": (1, 8),
    "HunyuanVideoPipeline": (4, 16),
    "MochiPipeline": (6, 16),
}


@dataclass
class VideoResult:
    frames: np.ndarray  # (T, H, W, 3) float32 in [0, 1], sRGB
    fps: float
    model: str
    prompt: str  # the prompt the model saw (with the suffix)
    negative_prompt: str
    generated_frames: int  # what the model made before the extra frames were dropped
    seconds: float


class TextToVideo(Protocol):
    """What the video stage needs from a text-to-video model."""

    name: str

    def generate(
        self,
        prompt: str,
        settings: VideoConfig,
        seed: int = 0,
        on_step: StepCallback | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> VideoResult: ...

    def release(self) -> None: ...


def full_prompt(prompt: str, settings: VideoConfig) -> str:
    """The user's prompt with the front-view suffix (paper: the video's view is the object's front) when on."""
    prompt = prompt.strip().rstrip(".")
    if not prompt:
        raise ValueError("the prompt is empty")
    if settings.use_prompt_suffix and settings.prompt_suffix:
        return prompt + settings.prompt_suffix
    return prompt


def valid_frame_count(pipeline_class: str, wanted: int) -> int:
    """The smallest frame count >= ``wanted`` that the pipeline family accepts."""
    if wanted < 2:
        raise ValueError(f"the 4D stage needs at least 2 frames, got {wanted}")
    step = FAMILIES.get(pipeline_class, (1, 8))[0]
    if step == 1:
        return wanted
    k = -(-(wanted - 1) // step)
    return k * step + 1


def valid_size(pipeline_class: str, height: int, width: int) -> tuple[int, int]:
    multiple = FAMILIES.get(pipeline_class, (1, 8))[1]

    def snap(x: int) -> int:
        return max(multiple, int(round(x / multiple)) * multiple)

    return snap(height), snap(width)


def torch_dtype(name: str, device: torch.device) -> torch.dtype:
    if device.type != "cuda":
        return torch.float32  # half precision on the CPU is slow or unsupported for these models
    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if name not in table:
        raise ValueError(f"dtype must be one of {', '.join(table)}, got {name!r}")
    return table[name]


class DiffusersTextToVideo:
    """A diffusers text-to-video pipeline loaded from ``folder`` (see :func:`load_text_to_video`)."""

    def __init__(self, pipe: Any, name: str, device: torch.device) -> None:
        self.pipe = pipe
        self.name = name
        self.device = device
        self.pipeline_class = type(pipe).__name__

    def generate(
        self,
        prompt: str,
        settings: VideoConfig,
        seed: int = 0,
        on_step: StepCallback | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> VideoResult:
        if self.pipe is None:
            raise RuntimeError("this text-to-video model was released")
        start = time.perf_counter()
        text = full_prompt(prompt, settings)
        count = valid_frame_count(self.pipeline_class, settings.num_frames)
        height, width = valid_size(self.pipeline_class, settings.height, settings.width)
        accepted = set(inspect.signature(self.pipe.__call__).parameters)
        kwargs: dict[str, Any] = {
            "prompt": text,
            "height": height,
            "width": width,
            "num_frames": count,
            "num_inference_steps": settings.steps,
            "guidance_scale": settings.guidance_scale,
            # A CPU generator: the same seed gives the same noise on every device.
            "generator": torch.Generator("cpu").manual_seed(seed),
            "output_type": "np",
        }
        # CogVideoX's positional table is built for the text length it was trained with; keep the two in step.
        text_length = getattr(
            getattr(getattr(self.pipe, "transformer", None), "config", None), "max_text_seq_length", None
        )
        if text_length and "max_sequence_length" in accepted:
            kwargs["max_sequence_length"] = int(text_length)
        if settings.negative_prompt and "negative_prompt" in accepted:
            kwargs["negative_prompt"] = settings.negative_prompt
        if "callback_on_step_end" in accepted:

            def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
                if on_step is not None:
                    on_step(step + 1, settings.steps)
                if should_cancel is not None and should_cancel():
                    raise Cancelled("cancelled during text-to-video")
                return tensors

            kwargs["callback_on_step_end"] = on_step_end
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}
        self.pipe.set_progress_bar_config(disable=True)  # the run prints its own progress
        output = self.pipe(**kwargs)
        frames = _frames_array(output.frames)
        made = frames.shape[0]
        return VideoResult(
            frames=frames[: settings.num_frames],
            fps=settings.fps,
            model=self.name,
            prompt=text,
            negative_prompt=kwargs.get("negative_prompt", ""),
            generated_frames=made,
            seconds=time.perf_counter() - start,
        )

    def release(self) -> None:
        """Drop the pipeline and give its memory back (GPU cache included) before the next stage loads."""
        if self.pipe is not None and hasattr(self.pipe, "remove_all_hooks"):
            self.pipe.remove_all_hooks()  # accelerate's offload hooks hold references to the modules
        self.pipe = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _frames_array(frames: Any) -> np.ndarray:
    """A pipeline's ``frames`` output (batch of videos: arrays, tensors or PIL lists) -> (T, H, W, 3) float32."""
    if isinstance(frames, list | tuple):
        first = frames[0]
        if isinstance(first, list | tuple):  # list of PIL images
            return np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in first])
        frames = first
    elif isinstance(frames, torch.Tensor | np.ndarray) and frames.ndim == 5:
        frames = frames[0]
    array = frames.float().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"unexpected text-to-video output of shape {array.shape}")
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def load_text_to_video(
    model: str,
    folder: str | Path,
    device: torch.device | str = "cpu",
    dtype: str = "bf16",
    cpu_offload: str = "model",
    vae_tiling: bool = True,
) -> DiffusersTextToVideo:
    """Load the pipeline in ``folder`` (found by :func:`pla4d.models.registry.locate`) for ``device``."""
    try:
        from diffusers import DiffusionPipeline
    except ImportError as exc:  # pragma: no cover - only without the [models] extra
        raise MissingWeightsError(
            "text-to-video needs diffusers and transformers: pip install 'pla4d[models]'"
        ) from exc
    device = torch.device(device)
    if cpu_offload not in ("model", "sequential", "none"):
        raise ValueError(f"cpu_offload must be model, sequential or none, got {cpu_offload!r}")
    from pla4d.guidance.zero123 import _quiet_progress_bars

    try:
        with _quiet_progress_bars():
            pipe = DiffusionPipeline.from_pretrained(
                str(folder), dtype=torch_dtype(dtype, device), local_files_only=True
            )
    except OSError as exc:  # a component without its weights (a partial download)
        raise MissingWeightsError(
            f"text-to-video model {model} is incomplete ({exc}); run `pla4d models pull {model}`"
        ) from exc
    accepted = set(inspect.signature(pipe.__call__).parameters)
    if "num_frames" not in accepted or "prompt" not in accepted:
        raise ValueError(f"{model} is a {type(pipe).__name__}, not a text-to-video pipeline")
    pipe.set_progress_bar_config(disable=True)
    if device.type == "cuda" and cpu_offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif device.type == "cuda" and cpu_offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
    if vae_tiling and hasattr(getattr(pipe, "vae", None), "enable_tiling"):
        pipe.vae.enable_tiling()
    return DiffusersTextToVideo(pipe, model, device)


__all__ = [
    "DiffusersTextToVideo",
    "TextToVideo",
    "VideoResult",
    "full_prompt",
    "load_text_to_video",
    "valid_frame_count",
    "valid_size",
]
