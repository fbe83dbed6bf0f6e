"""CLIP score (paper Table 1): cosine similarity between renders of the 4D object and the prompt.

The model loads by id from the local Hugging Face cache or from a local folder in the transformers layout
(``config.json``, weights, tokenizer files, ``preprocessor_config.json``), never from the network; the default is
``openai/clip-vit-large-patch14`` (``pla4d models pull`` fetches it). Images are preprocessed here in torch as CLIP
was trained (shortest side resized bicubically to the model's size, centre crop, the model's mean and std), so no
image-processor class (and no torchvision) is involved.

``score_run`` renders a run's 4D asset from an orbit of views at several frames, composited on white, and reports
the mean cosine (the number papers print as "CLIP score", some times 100).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pla4d.config import DEFAULT_CLIP_MODEL
from pla4d.errors import MissingWeightsError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipScorer:
    def __init__(self, model: Any, tokenizer: Any, size: int, mean: Sequence[float], std: Sequence[float],
                 device: torch.device, name: str = "") -> None:  # fmt: skip
        self.model, self.tokenizer, self.size, self.device, self.name = model.eval(), tokenizer, size, device, name
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    @classmethod
    def load(cls, model: str = DEFAULT_CLIP_MODEL, device: torch.device | str = "cpu") -> ClipScorer:
        """Load by id (local cache) or folder; MissingWeightsError naming the model and the pull command."""
        from pla4d.models.registry import require, spec_for

        folder = require([spec_for(model, "clip")])[model]
        try:
            from transformers import AutoTokenizer, CLIPModel
        except ImportError as exc:  # pragma: no cover - only without the [models] extra
            raise MissingWeightsError("CLIP score needs transformers: pip install 'pla4d[models]'") from exc
        from pla4d.guidance.zero123 import _quiet_progress_bars

        device = torch.device(device)
        with _quiet_progress_bars():
            clip = CLIPModel.from_pretrained(folder, local_files_only=True).to(device)
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        size, mean, std = int(clip.config.vision_config.image_size), CLIP_MEAN, CLIP_STD
        pre = folder / "preprocessor_config.json"
        if pre.is_file():
            config = json.loads(pre.read_text())
            crop = config.get("crop_size", size)
            size = int(crop.get("height", size) if isinstance(crop, dict) else crop)
            mean, std = config.get("image_mean", mean), config.get("image_std", std)
        return cls(clip, tokenizer, size, mean, std, device, name=model)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) in [0, 1] -> (N, 3, S, S) normalised: shortest side to S (bicubic), centre crop."""
        x = images.permute(0, 3, 1, 2).float().to(self.device)
        h, w = x.shape[-2:]
        scale = self.size / min(h, w)
        nh, nw = max(self.size, round(h * scale)), max(self.size, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        top, left = (nh - self.size) // 2, (nw - self.size) // 2
        x = x[..., top : top + self.size, left : left + self.size]
        return (x - self.mean) / self.std

    @torch.no_grad()
    def text_embedding(self, prompt: str) -> torch.Tensor:
        tokens = self.tokenizer([prompt], padding="max_length", truncation=True,
                                max_length=self.tokenizer.model_max_length, return_tensors="pt")  # fmt: skip
        features = self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device),
                                                attention_mask=tokens["attention_mask"].to(self.device))  # fmt: skip
        return F.normalize(_as_tensor(features).float(), dim=-1)[0]

    @torch.no_grad()
    def image_embeddings(self, images: torch.Tensor, batch: int = 16) -> torch.Tensor:
        out = []
        for i in range(0, images.shape[0], batch):
            features = self.model.get_image_features(pixel_values=self.preprocess(images[i : i + batch]))
            out.append(F.normalize(_as_tensor(features).float(), dim=-1))
        return torch.cat(out)

    def scores(self, images: torch.Tensor | np.ndarray, prompt: str) -> torch.Tensor:
        """Cosine similarity of each image (N, H, W, 3) in [0, 1] with the prompt."""
        images = torch.as_tensor(np.asarray(images) if isinstance(images, np.ndarray) else images)
        return self.image_embeddings(images) @ self.text_embedding(prompt)


def _as_tensor(features: Any) -> torch.Tensor:
    """transformers 5 may return a model output instead of a tensor from get_*_features."""
    if isinstance(features, torch.Tensor):
        return features
    for name in ("pooler_output", "text_embeds", "image_embeds"):
        value = getattr(features, name, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"unexpected CLIP features of type {type(features).__name__}")


def render_run_views(run: str | Path, views: int = 8, frames: int = 4, size: int = 224,
                     elevation_deg: float = 0.0) -> tuple[torch.Tensor, list[dict[str, float]]]:  # fmt: skip
    """Renders of a run's 4D asset on white: ``views`` azimuths x ``frames`` evenly spread frames."""
    from pla4d.asset.format import frame_model, read_asset
    from pla4d.cameras import orbit_cameras

    run = Path(run)
    asset_dir = run / "asset" if (run / "asset").is_dir() else run
    try:
        asset = read_asset(asset_dir)
    except FileNotFoundError:
        raise FileNotFoundError(f"no 4D asset in {run} (expected a run folder with asset/)") from None
    camera_file = run / "static" / "camera.json"
    camera = json.loads(camera_file.read_text()) if camera_file.is_file() else {}
    radius, fov = float(camera.get("radius", 3.0)), float(camera.get("fov_deg", 49.1))
    n = asset.num_frames
    chosen = sorted({round(i * (n - 1) / max(frames - 1, 1)) for i in range(frames)}) if n > 1 else [0]
    azimuths = [i * 360.0 / views for i in range(views)]
    cams = orbit_cameras(azimuths, elevation_deg, radius, fov, size)
    images, where = [], []
    for t in chosen:
        model = frame_model(asset, t)
        with torch.no_grad():
            out = model.render(cams.to(model.means.device), background=torch.ones(3, device=model.means.device))
        images.append(out.rgb.cpu())
        where += [{"frame": t, "azimuth_deg": a} for a in azimuths]
    return torch.cat(images).clamp(0, 1), where


def score_run(run: str | Path, prompt: str, model: str = DEFAULT_CLIP_MODEL, device: str = "cpu",
              views: int = 8, frames: int = 4) -> dict[str, Any]:  # fmt: skip
    """The CLIP score of a run's 4D asset against ``prompt``: mean, min, max cosine over the renders."""
    if not prompt.strip():
        raise ValueError("--prompt is empty")
    scorer = ClipScorer.load(model, device)  # before rendering: a missing model fails first
    images, where = render_run_views(run, views, frames, size=max(scorer.size, 64))
    cos = scorer.scores(images, prompt)
    return {
        "metric": "clip_score",
        "prompt": prompt,
        "clip_model": model,
        "clip_score": float(cos.mean()),
        "clip_score_min": float(cos.min()),
        "clip_score_max": float(cos.max()),
        "renders": len(where),
        "views": views,
        "frames": sorted({w["frame"] for w in where}),
        "run": str(run),
    }
