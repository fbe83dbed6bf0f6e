"""``pla4d eval``: run the method on a benchmark clip folder and score it on every held-out view.

Protocol (BRIEF section 8, Consistent4D style): the method sees ``input/`` and ``first_frame.*`` only; it is
scored on every novel view at the chosen frames with PSNR (full image), SSIM and LPIPS, both sides composited
on white, and mask IoU (alpha > 0.5); plus wall time and peak memory. The static stage's model does not move,
so every frame is scored against the same render; the 4D stage replaces that with the deformed model.
The "static" baseline repeats the ground truth's frame 0 of each view. A view's PSNR over several frames is the
PSNR of the MSE pooled over them (video PSNR), so an exact frame does not count as infinity.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pla4d.clip import Clip, composite_on_white, load_clip
from pla4d.config import PresetConfig
from pla4d.device import pick_device
from pla4d.gaussians.ply import load_ply
from pla4d.media import contact_sheet, save_png
from pla4d.metrics import mask_iou, psnr, ssim
from pla4d.runner import run_lift, run_video_to_4d
from pla4d.runner.inputs import load_frame

PSNR_CAP_DB = 100.0  # identical images (the static baseline at frame 0) would otherwise score infinity


def parse_frames(text: str, n_frames: int) -> list[int]:
    if text == "all":
        return list(range(n_frames))
    try:
        frames = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ValueError(f"--frames takes 'all' or comma-separated frame numbers, got {text!r}") from None
    if not frames or frames[0] < 0 or frames[-1] >= n_frames:
        raise ValueError(f"--frames must lie in 0..{n_frames - 1}, got {text!r}")
    return frames


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Scorer:
    """PSNR / SSIM / LPIPS / IoU of RGBA renders against RGBA ground truth."""

    def __init__(self, lpips_net: str = "alex") -> None:
        from pla4d.losses.perceptual import PerceptualLoss

        self.lpips = PerceptualLoss(net=lpips_net)
        self.lpips_name = self.lpips.name

    @torch.no_grad()
    def score(self, ours_rgba: Tensor, truth_rgba: Tensor) -> dict[str, float]:
        ours, truth = composite_on_white(ours_rgba), composite_on_white(truth_rgba)
        lp = self.lpips(ours.permute(2, 0, 1)[None], truth.permute(2, 0, 1)[None])
        return {
            "mse": float(((ours - truth) ** 2).mean()),
            "psnr": min(psnr(ours, truth), PSNR_CAP_DB),
            "ssim": float(ssim(ours, truth)),
            "lpips": float(lp.reshape(-1)[0]),
            "iou": mask_iou(ours_rgba[..., 3], truth_rgba[..., 3]),
        }


def _aggregate(per_view: dict[str, list[dict[str, float]]]) -> tuple[dict[str, float], dict[str, Any]]:
    """Per view: PSNR from the MSE pooled over its frames (video PSNR), the other metrics averaged over frames.

    Averaging per-frame PSNR would let one exact frame (the static baseline's frame 0, capped at 100 dB) add
    several dB to a 32-frame mean; pooling the MSE counts it as what it is, one frame with no error.
    """
    views = {}
    for view, scores in per_view.items():
        mse = float(np.mean([s["mse"] for s in scores]))
        views[view] = {k: float(np.mean([s[k] for s in scores])) for k in ("ssim", "lpips", "iou")}
        views[view]["psnr"] = PSNR_CAP_DB if mse <= 10 ** (-PSNR_CAP_DB / 10) else float(-10 * np.log10(mse))
    mean = {k: float(np.mean([v[k] for v in views.values()])) for k in ("psnr", "ssim", "lpips", "iou")}
    return mean, views


def _straight_rgba(rgb: Tensor, alpha: Tensor) -> Tensor:
    rgb, alpha = rgb.cpu(), alpha.cpu()
    straight = torch.where(alpha > 0, rgb / alpha.clamp_min(1e-8), torch.zeros_like(rgb))
    return torch.cat([straight.clamp(0, 1), alpha], dim=-1)


def render_views(model: Any, clip: Clip, views: tuple[str, ...]) -> dict[str, Tensor]:
    """Straight-alpha RGBA renders (H, W, 4) of the model from each clip view's camera."""
    cams = clip.camera_batch(list(views)).to(model.means.device)
    with torch.no_grad():
        out = model.render(cams)  # black background: premultiplied colour
    return {view: _straight_rgba(out.rgb[i], out.alpha[i]) for i, view in enumerate(views)}


def vertex_errors(mesh_positions: np.ndarray, gt_path: Path, frame_ids: list[int]) -> dict[str, float] | None:
    """Mean distance of the animated mesh's vertices to the ground truth's (``gt_verts.npz``), and of the
    frame-0 mesh held still (the static baseline), over ``frame_ids``.

    Mesh files split vertices at UV seams, so each vertex is matched to its nearest ground-truth vertex at
    frame 0 and followed through time. Both live in the clip's world frame (the run's camera convention puts
    the object there), so no further alignment is applied; ``match_error`` reports how well frame 0 matched.
    """
    if not gt_path.is_file():
        return None
    from scipy.spatial import cKDTree

    gt = np.load(gt_path)["verts"].astype(np.float64)
    if gt.shape[0] <= max(frame_ids) or mesh_positions.shape[0] <= max(frame_ids):
        return None
    distance, match = cKDTree(gt[0]).query(mesh_positions[0].astype(np.float64))
    ours = np.mean([np.linalg.norm(mesh_positions[t] - gt[t][match], axis=1).mean() for t in frame_ids])
    still = np.mean([np.linalg.norm(mesh_positions[0] - gt[t][match], axis=1).mean() for t in frame_ids])
    return {"vertex_error": float(ours), "static_vertex_error": float(still), "match_error": float(distance.mean())}


def _save_renders(folder: Path, renders: dict[str, dict[int, Tensor]]) -> None:
    """``folder/<azimuth>/NNN.png`` (RGBA, the clip's novel/ layout) for every scored render."""
    for view, frames in renders.items():
        for t, rgba in frames.items():
            save_png(folder / view.split("/")[-1] / f"{t:03d}.png", rgba.numpy())


def evaluate_clip(
    clip_dir: str | Path,
    preset: PresetConfig,
    frames: str = "0",
    baseline: bool = False,
    out_dir: str | Path | None = None,
    seed: int = 0,
    device: str = "auto",
    lpips_net: str = "alex",
    method: str = "4d",
    save_renders: str | Path | None = None,
    prompt: str | None = None,
    clip_model: str | None = None,
) -> list[dict[str, Any]]:
    """Score the method (and optionally the static baseline) on ``clip_dir``; one record per method.
    With ``prompt``, the record also holds the CLIP score of the novel-view renders (model loaded first)."""
    clip = load_clip(clip_dir)
    clip_scorer = None
    if prompt is not None:
        from pla4d.clipscore import ClipScorer
        from pla4d.config import DEFAULT_CLIP_MODEL

        clip_scorer = ClipScorer.load(clip_model or DEFAULT_CLIP_MODEL, pick_device(device))
    frame_ids = parse_frames(frames, clip.n_frames)
    views = clip.novel_views
    if not views:
        raise ValueError(f"{clip_dir} has no novel views to score")
    mesh_path = clip.mesh_path if clip.mesh_path.is_file() else clip.obj_path
    if not mesh_path.is_file():
        raise FileNotFoundError(f"{clip_dir} has neither first_frame.glb nor first_frame.obj")
    out = Path(out_dir) if out_dir is not None else Path("out") / "eval" / clip.name / preset.name
    scorer = Scorer(lpips_net)
    truth = {view: {t: clip.load_frame(view, t) for t in frame_ids} for view in views}
    records = []

    start = time.perf_counter()
    dev = pick_device(device)
    geometry = None
    if method == "static":
        summary = run_lift(clip.frame_path("input", 0), mesh_path, out / "run", preset, seed=seed, device=device)
        model = load_ply(out / "run" / "static" / "canonical.ply").to(dev)
        still = render_views(model, clip, views)
        renders = {view: {t: still[view] for t in frame_ids} for view in views}
    elif method in ("4d", "rig"):
        from pla4d.asset.format import frame_model, read_asset

        # One asset frame per clip frame, whatever the preset's export factor: the scores compare frame by frame.
        summary = run_video_to_4d(clip.path / "input", mesh_path, out / "run", preset.replace_motion(
            export_frame_factor=1), seed=seed, device=device, fps=clip.fps)  # fmt: skip
        asset = read_asset(out / "run" / "asset")
        if method == "rig":  # the same run's splats driven by its rig alone (issue 23)
            from pla4d.rig.fit import rig_driven_asset

            asset = rig_driven_asset(asset)
        if asset.positions.shape[0] != clip.n_frames:
            raise ValueError(f"the asset has {asset.positions.shape[0]} frames, the clip {clip.n_frames}")
        if asset.mesh is not None:
            geometry = vertex_errors(np.asarray(asset.mesh.positions), clip.gt_verts_path, frame_ids)
        renders = {view: {} for view in views}
        for t in frame_ids:
            frame = render_views(frame_model(asset, t).to(dev), clip, views)
            for view in views:
                renders[view][t] = frame[view]
    else:
        raise ValueError(f"method must be 'static', '4d' or 'rig', got {method!r}")
    seconds = time.perf_counter() - start
    peak = peak_rss_mb()
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    per_view = {view: [scorer.score(renders[view][t], truth[view][t]) for t in frame_ids] for view in views}
    mean, by_view = _aggregate(per_view)
    records.append(
        {
            "method": "pla4d",
            "stage": method,
            "clip": clip.name,
            "preset": preset.name,
            "frames": frame_ids,
            **mean,
            "seconds": round(seconds, 2),
            "peak_mb": round(peak, 1),
            "peak_gpu_mb": None if peak_gpu is None else round(peak_gpu, 1),
            "lpips_net": scorer.lpips_name,
            "focal_px": summary["focal_px"],
            "gaussians": summary["gaussians"],
            "views": by_view,
            "run": str(out / "run"),
            **(geometry or {}),
        }
    )
    if clip_scorer is not None:
        images = torch.stack([composite_on_white(renders[v][t]) for v in views for t in frame_ids])
        records[-1].update(
            clip_score=float(clip_scorer.scores(images, prompt or "").mean()), clip_model=clip_scorer.name
        )
    middle = frame_ids[len(frame_ids) // 2]
    _write_side_by_side(out / "side_by_side.png", views, truth, {v: renders[v][middle] for v in views}, middle)
    if save_renders is not None:
        _save_renders(Path(save_renders), renders)

    if baseline:
        first = {view: load_frame(clip.frame_path(view, 0)) for view in views}
        per_view = {view: [scorer.score(first[view], truth[view][t]) for t in frame_ids] for view in views}
        mean, by_view = _aggregate(per_view)
        records.append(
            {
                "method": "static",
                "clip": clip.name,
                "frames": frame_ids,
                **mean,
                "seconds": 0.0,
                "peak_mb": 0.0,
                "lpips_net": scorer.lpips_name,
                "views": by_view,
            }
        )
    return records


def _write_side_by_side(
    path: Path, views: tuple[str, ...], truth: dict[str, dict[int, Tensor]], renders: dict[str, Tensor], frame: int
) -> None:
    """One row per view: ground truth | ours, composited on white."""
    rows = [
        [composite_on_white(truth[view][frame]).numpy(), composite_on_white(renders[view]).numpy()] for view in views
    ]
    save_png(path, contact_sheet(rows))
