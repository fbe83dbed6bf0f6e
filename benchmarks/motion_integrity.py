"""Do moving parts stay whole? Which Gaussians of a run lost opacity, grew, or left their neighbours, per frame,
per view and per part, drawn as heat maps over the render (issue 21).

    python benchmarks/motion_integrity.py RUN_DIR [--clip CLIP_DIR] [--every 4] [--sheets DIR]
                                          [--out results/motion_integrity.jsonl]

RUN_DIR is a `pla4d run` / `pla4d eval` / `pla4d demo` run folder (``static/canonical.ply``, ``motion/field.pt``,
``focal/camera.json``). CLIP_DIR (default: RUN_DIR/example, where `pla4d demo` renders the built-in example) gives
the views, the true frames and ``gt_verts.npz``; without one the views are the matched front camera and four
orbit views at its distance. The arithmetic is pla4d/diagnostics/integrity.py; every figure is against frame 0
of the same field.

Parts: on the built-in example each canonical Gaussian takes the part of its nearest frame-0 vertex (arm_l is
the waving arm with its paw; pla4d/diagnostics/parts.py); on another clip with ``gt_verts.npz`` the parts are
"moving" (the vertices with the largest 20% of peak true displacement: legs, tail) and "still"; without ground
truth one part, "all". Per part and frame: opacity mass, opacity-weighted largest-axis growth and neighbour
distance change over a limb-scale k-NN graph (32 neighbours), the share of the opacity on the part's true
surface held by its own Gaussians (low: the part was replaced by others), and per view the part's rendered
area (its Gaussians alone) against frame 0 and the tracking error of its true vertices moved by our field
(pixels at the clip's resolution, all vertices of the part, hidden or not), with the depth-blind floor beside it
(the error of the true motion slid back to its frame-0 depth along the input rays: what the input view alone
shows). Per view: the area the render misses and adds against the true alpha.

Contact sheets (one PNG per view in --sheets, default RUN_DIR/../integrity; not for committing): rows are frames;
columns the truth, our render, then heat over a grey render: opacity lost (1 - o_t / o_0), largest-axis growth
(log2, 2x is full), neighbour distance change (ratio - 1, 2x is full), and the parts. Heat layers draw each
Gaussian at max(o_t, o_0), so a faded Gaussian shows where it went.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from motion_tracking import project
from results_log import append_result
from scipy.spatial import cKDTree

from pla4d.cameras import Cameras, FrontCamera, orbit_cameras
from pla4d.clip import Clip, composite_on_white, load_clip
from pla4d.deform.hexplane import frame_time
from pla4d.diagnostics.integrity import (
    FLAGS,
    FrameState,
    assign_parts,
    depth_blind,
    knn_indices,
    neighbour_ratio,
    opacity_mass,
    part_figures,
    region_share,
    scale_growth,
)
from pla4d.diagnostics.parts import creature_vertex_parts
from pla4d.evaluate import _straight_rgba
from pla4d.gaussians.model import GaussianModel
from pla4d.gaussians.ply import load_ply
from pla4d.media import save_png
from pla4d.render.gaussians import render_gaussians
from pla4d.runner.motion import load_field

EXAMPLE_ASSET = "pla4d built-in example creature"
PART_COLOURS = np.array([[0.6, 0.6, 0.6], [0.2, 0.5, 1.0], [1.0, 0.2, 0.2], [0.2, 0.8, 0.3], [1.0, 0.8, 0.1],
                         [0.8, 0.3, 1.0], [0.1, 0.9, 0.9], [1.0, 0.5, 0.0]])  # fmt: skip


def heat_colours(value: np.ndarray) -> np.ndarray:
    """(N, 3) colours for values in [0, 1]: dark blue (unchanged) through red to yellow-white (full)."""
    v = np.clip(value, 0.0, 1.0)[:, None]
    hot = np.clip(np.concatenate([3 * v, 3 * v - 1, 3 * v - 2], axis=1), 0, 1)
    cold = np.array([[0.1, 0.15, 0.55]])
    return np.where(v < 0.1, cold, hot * 0.85 + 0.15)


def views_of(run: Path, clip: Clip | None) -> tuple[list[str], Cameras]:
    if clip is not None:
        names = ["input", *clip.novel_views]
        return names, clip.camera_batch(names)
    front = FrontCamera.from_json(json.loads((run / "focal" / "camera.json").read_text()))
    orbit = orbit_cameras([45.0, 135.0, 225.0, 315.0], 0.0, front.radius, front.fov_deg, front.width, front.height)
    return ["input", "novel/045", "novel/135", "novel/225", "novel/315"], Cameras.cat([front.cameras(), orbit])


def gaussian_parts(
    model: GaussianModel, clip: Clip | None, gt: np.ndarray | None
) -> tuple[np.ndarray, tuple[str, ...], np.ndarray | None]:
    """(N,) part of each Gaussian, the part names, and (V,) part of each true vertex (None without truth)."""
    means = model.means.detach().numpy().astype(np.float64)
    if gt is None:
        return np.zeros(len(means), dtype=np.int64), ("all",), None
    if clip is not None and clip.meta.get("asset") == EXAMPLE_ASSET:
        vertex_parts, names = creature_vertex_parts()
    else:
        peak = np.linalg.norm(gt - gt[:1], axis=-1).max(axis=0)
        vertex_parts, names = (peak < np.quantile(peak, 0.8)).astype(np.int64), ("moving", "still")
    return assign_parts(means, gt[0], vertex_parts), names, vertex_parts


def render(model: GaussianModel, state: FrameState, quats: torch.Tensor, cams: Cameras, colours=None, opac=None):
    """(C, H, W, 4) straight RGBA of the deformed Gaussians (SH colours, or flat ``colours`` (N, 3))."""
    flat = colours is not None
    out = render_gaussians(
        torch.from_numpy(state.means).float(), quats, torch.from_numpy(state.scales).float(),
        torch.from_numpy(state.opacities if opac is None else opac).float(),
        torch.from_numpy(colours).float() if flat else model.sh, cams, sh_degree=None if flat else model.sh_degree,
    )  # fmt: skip
    return torch.stack([_straight_rgba(out.rgb[i], out.alpha[i]) for i in range(len(cams))]).numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--clip", type=Path, default=None, help="clip folder (default: RUN/example if present)")
    parser.add_argument("--every", type=int, default=4, help="every n-th frame, and the last (default 4)")
    parser.add_argument("--sheets", type=Path, default=None, help="contact sheet folder (default RUN/../integrity)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "motion_integrity.jsonl")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    summary = measure(args.run, args.clip, args.every, args.sheets or args.run.parent / "integrity")
    for record in summary["frames"]:
        append_result(args.out, record)
    append_result(args.out, summary["summary"])
    return 0


@torch.no_grad()
def measure(run: Path, clip_dir: Path | None, every: int, sheets: Path | None) -> dict:
    """Every figure of the module docstring; ``sheets`` None draws nothing. Returns {"frames", "summary"}."""
    if clip_dir is None and (run / "example" / "cameras.json").is_file():
        clip_dir = run / "example"
    clip = load_clip(clip_dir) if clip_dir is not None else None
    model = load_ply(run / "static" / "canonical.ply")
    field = load_field(run / "motion").eval()
    n_frames = field.num_frames
    gt = None
    if clip is not None and clip.gt_verts_path.is_file():
        gt = np.load(clip.gt_verts_path)["verts"].astype(np.float64)
    names, cams = views_of(run, clip)
    parts, part_names, vertex_parts = gaussian_parts(model, clip, gt)
    means0_canon = model.means.numpy().astype(np.float64)
    near8, limb = knn_indices(means0_canon, 8), knn_indices(means0_canon, 32)
    radius = 0.0
    if gt is not None:  # "on the part's surface": within two vertex spacings of it
        spacing, _ = cKDTree(gt[0]).query(gt[0], k=2)
        radius = float(max(2.0 * np.median(spacing[:, 1]), 0.02))

    def state_at(t: int) -> tuple[FrameState, torch.Tensor]:
        means, quats, scales, opacities = field.deform(model, frame_time(t, n_frames))
        return FrameState(means.numpy().astype(np.float64), scales.numpy(), opacities.numpy()), quats

    frames = sorted({*range(0, n_frames, every), n_frames - 1})
    state0, quats0 = state_at(0)
    live = state0.opacities > 0.02  # ratios of near-transparent Gaussians say nothing
    area0 = {p: render(model, state0, quats0, cams, opac=state0.opacities * (parts == p))[..., 3].sum(axis=(1, 2))
             for p in range(len(part_names))}  # fmt: skip
    region0 = {}
    if gt is not None:
        for p in range(len(part_names)):
            region0[p] = region_share(state0.means, state0.opacities, parts == p, gt[0][vertex_parts == p], radius)
    records, rows = [], []
    for t in frames:
        state, quats = state_at(t)
        growth = scale_growth(state.scales, state0.scales)
        spread = neighbour_ratio(state.means, state0.means, near8)
        lost = np.where(live, 1.0 - state.opacities / np.maximum(state0.opacities, 1e-6), 0.0)
        rgba = render(model, state, quats, cams)
        record: dict = {
            "run": str(run), "clip": clip.name if clip else None, "frame": t,
            "opacity_mass": round(opacity_mass(state.opacities) / opacity_mass(state0.opacities), 4),
            "faded_fraction": round(float((lost[live] > 0.5).mean()), 4),
            "grown_fraction": round(float((growth[live] > 1.5).mean()), 4),
            "torn_fraction": round(float((spread[live] > 1.5).mean()), 4),
            "parts": {}, "views": {},
        }  # fmt: skip
        for i, view in enumerate(names):
            entry: dict = {}
            if clip is not None:
                truth = clip.load_frame(view, t).numpy()[..., 3]
                ours = rgba[i, ..., 3]
                true_area = max(float(truth.sum()), 1.0)
                entry["missing_area"] = round(float((truth * (1 - ours)).sum()) / true_area, 4)
                entry["extra_area"] = round(float((ours * (1 - truth)).sum()) / true_area, 4)
            record["views"][view] = entry
        for p, part in enumerate(part_names):
            mask = parts == p
            region = r0 = None
            if gt is not None:
                region = region_share(state.means, state.opacities, mask, gt[t][vertex_parts == p], radius)
                r0 = region0[p]
            figures = part_figures(state, state0, mask, limb, region, r0)
            area = render(model, state, quats, cams, opac=state.opacities * mask)[..., 3].sum(axis=(1, 2))
            figures["area"] = {v: round(float(area[i] / max(area0[p][i], 1e-6)), 3) for i, v in enumerate(names)}
            if gt is not None:
                verts0 = torch.from_numpy(gt[0][vertex_parts == p]).float()
                ours = field.deform_points(verts0, frame_time(t, n_frames)).double().numpy()
                blind = depth_blind(
                    gt[t][vertex_parts == p], gt[0][vertex_parts == p], cams.viewmats[0].double().numpy()
                )
                errors, moves, floors = {}, {}, {}
                for i, view in enumerate(names):
                    viewmat, K = cams.viewmats[i].double().numpy(), cams.Ks[i].double().numpy()
                    uv_true, _ = project(gt[t][vertex_parts == p], viewmat, K)
                    uv_ours, _ = project(ours, viewmat, K)
                    uv0, _ = project(gt[0][vertex_parts == p], viewmat, K)
                    errors[view] = round(float(np.linalg.norm(uv_ours - uv_true, axis=1).mean()), 2)
                    moves[view] = round(float(np.linalg.norm(uv_true - uv0, axis=1).mean()), 2)
                    floors[view] = round(
                        float(np.linalg.norm(project(blind, viewmat, K)[0] - uv_true, axis=1).mean()), 2
                    )
                figures["track_error_px"], figures["true_motion_px"] = errors, moves
                figures["depth_blind_px"] = floors  # the error of a motion with no depth along the input rays
            record["parts"][part] = figures
        records.append(record)
        if sheets is not None:
            rows.append(_sheet_row(model, state, state0, quats, cams, rgba, clip, names, t, lost, growth, spread,
                                   parts))  # fmt: skip
    if sheets is not None:
        sheets.mkdir(parents=True, exist_ok=True)
        for i, view in enumerate(names):
            sheet = np.concatenate([row[i] for row in rows], axis=0)
            save_png(sheets / f"{view.replace('/', '_')}.png", sheet)
    _print_table(records, part_names, names)
    summary = {"run": str(run), "clip": clip.name if clip else None, "frames": frames, "summary": True,
               "flags": FLAGS, "sheets": str(sheets) if sheets else None, "parts": {}}  # fmt: skip
    for part in part_names:
        per = [r["parts"][part] for r in records]
        entry = {"min_opacity_mass": min(x["opacity_mass"] for x in per),
                 "max_scale_growth": max(x["scale_growth"] for x in per),
                 "max_neighbour_ratio": max(x["neighbour_ratio"] for x in per),
                 "flagged_frames": {f: [r["frame"] for r, x in zip(records, per, strict=True) if f in x["flags"]]
                                    for f in FLAGS}}  # fmt: skip
        if gt is not None:
            entry["mean_track_error_px"] = {v: round(float(np.mean([x["track_error_px"][v] for x in per[1:]] or [0])),
                                                     2) for v in names}  # fmt: skip
            entry["max_track_error_px"] = {v: max(x["track_error_px"][v] for x in per) for v in names}
            entry["min_own_share"] = min(x["own_share"] for x in per)
        summary["parts"][part] = entry
    return {"frames": records, "summary": summary}


def _sheet_row(model, state, state0, quats, cams, rgba, clip, names, t, lost, growth, spread, parts) -> list:
    """Per view, one (H, W * columns, 3) row of the contact sheet for frame ``t``."""
    shown = np.maximum(state.opacities, state0.opacities)
    grey = composite_on_white(torch.from_numpy(rgba)).numpy().mean(axis=-1, keepdims=True) * 0.45
    layers = [
        heat_colours(lost),
        heat_colours(np.log2(np.maximum(growth, 1.0))),
        heat_colours(spread - 1.0),
        PART_COLOURS[parts % len(PART_COLOURS)],
    ]
    heat = [render(model, state, quats, cams, colours=c, opac=shown) for c in layers]
    out = []
    for i, view in enumerate(names):
        columns = []
        if clip is not None:
            columns.append(composite_on_white(clip.load_frame(view, t)).numpy())
        columns.append(composite_on_white(torch.from_numpy(rgba[i])).numpy())
        for layer in heat:
            a = layer[i, ..., 3:4]
            columns.append(layer[i, ..., :3] * a + grey[i] * (1 - a))
        out.append(np.concatenate(columns, axis=1))
    return out


def _print_table(records: list[dict], part_names: tuple[str, ...], views: list[str]) -> None:
    print("frame  part      mass  growth  neigh  own   area(" + "/".join(v.split("/")[-1] for v in views) + ")"
          "  track px(" + "/".join(v.split("/")[-1] for v in views) + ")  flags")  # fmt: skip
    for r in records:
        for part in part_names:
            x = r["parts"][part]
            area = "/".join(f"{x['area'][v]:.2f}" for v in views)
            track = "/".join(f"{x['track_error_px'][v]:.1f}" for v in views) if "track_error_px" in x else "-"
            own = f"{x['own_share']:.2f}" if "own_share" in x else "  - "
            print(f"{r['frame']:>5}  {part:<8} {x['opacity_mass']:>5.2f}  {x['scale_growth']:>6.2f}  "
                  f"{x['neighbour_ratio']:>5.2f}  {own}  {area}  {track}  {','.join(x['flags'])}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
