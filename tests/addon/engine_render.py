"""The engine's side of the render comparison (main venv: imports pla4d and torch).

Writes a 4D asset of the built-in creature as Gaussians initialised on its surface (the static stage's start:
oriented, coloured, flat discs, which seen edge-on are the thin needles a trained model is full of), animated
over three frames of the creature's motion (each Gaussian rides its nearest vertex), the engine's own renders of
those frames from three orbit cameras, and the cameras. :func:`compare` scores Blender's renders against them
(PSNR and the project's LPIPS, both composited on white)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

from pla4d.asset.format import Asset4D, write_asset
from pla4d.cameras import orbit_cameras, orbit_position
from pla4d.example.creature import animate_creature
from pla4d.gaussians.init import gaussians_from_mesh
from pla4d.gaussians.model import GaussianModel
from pla4d.render.mesh import Mesh

SIZE = 256
FOV_DEG = 49.1
RADIUS = 3.0
CAMERAS = ((35.0, 15.0), (160.0, 30.0), (280.0, -10.0))  # (azimuth, elevation) in degrees
FRAMES = (0, 7, 14)  # of the creature's 24-frame loop


def make(out: Path, n: int = 6000) -> dict:
    """Write ``out/creature`` (the asset), ``out/engine_c{c}_f{t}.npz`` (rgb premultiplied on black, alpha) and
    ``out/cameras.json``; returns the cameras' description."""
    anim = animate_creature(num_frames=24)
    srgb = torch.from_numpy(anim.colors_srgb.astype(np.float32))
    linear = torch.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    verts = anim.vertices[list(FRAMES)]
    mesh = Mesh(torch.from_numpy(verts[0]), torch.from_numpy(anim.faces), vertex_colors=linear)
    model = gaussians_from_mesh(mesh, n=n, seed=0)
    means = model.means.detach().numpy()
    _, nearest = cKDTree(verts[0]).query(means)
    positions = np.stack([means + (v[nearest] - verts[0][nearest]) for v in verts]).astype(np.float32)
    write_asset(out / "creature", Asset4D(model, positions, fps=16.0, meta={"prompt": "creature"}))
    cams = orbit_cameras([a for a, _ in CAMERAS], [e for _, e in CAMERAS], RADIUS, FOV_DEG, SIZE)
    focal = float(cams.Ks[0, 0, 0])
    with torch.no_grad():
        for t in range(len(FRAMES)):
            frame_model = GaussianModel.from_activated(
                torch.from_numpy(positions[t]), model.normalized_quats, model.scales, model.opacities, model.rgb
            )
            render = frame_model.render(cams, background=torch.zeros(3))
            for c in range(len(CAMERAS)):
                np.savez(out / f"engine_c{c}_f{t}.npz", rgb=render.rgb[c].numpy(), alpha=render.alpha[c].numpy())
    described = {
        "size": SIZE,
        "focal_px": focal,
        "frames": len(FRAMES),
        "cameras": [{"eye": orbit_position(a, e, RADIUS).tolist(), "azimuth_deg": a, "elevation_deg": e}
                    for a, e in CAMERAS],
    }  # fmt: skip
    (out / "cameras.json").write_text(json.dumps(described))
    return described


def on_white_engine(npz: Path) -> np.ndarray:
    """The engine's render composited on white: premultiplied rgb + (1 - alpha)."""
    data = np.load(npz)
    return np.clip(data["rgb"] + (1.0 - data["alpha"]), 0.0, 1.0).astype(np.float32)


def on_white_png(png: Path) -> np.ndarray:
    """A Blender render (straight-alpha RGBA PNG, display colours) composited on white."""
    from PIL import Image

    rgba = np.asarray(Image.open(png).convert("RGBA"), dtype=np.float32) / 255.0
    return rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def compare(folder: Path, renders: dict[str, list[Path]], keep: Path) -> dict[str, list[dict]]:
    """PSNR and LPIPS of each Blender render (``renders[engine]``, named ``..._c{c}_f{t}.png``) against the
    engine's render of that camera and frame, on white; the pairs go to ``keep`` side by side."""
    from PIL import Image

    from pla4d.losses.perceptual import PerceptualLoss

    lpips = PerceptualLoss(net="alex")
    keep.mkdir(parents=True, exist_ok=True)
    scores: dict[str, list[dict]] = {}
    for engine, pngs in renders.items():
        rows = []
        for png in pngs:
            tag = png.stem.split("_", 1)[1]  # c0_f1
            ours = on_white_png(png)
            truth = on_white_engine(folder / f"engine_{tag}.npz")
            with torch.no_grad():
                lp = float(lpips(torch.from_numpy(ours).permute(2, 0, 1)[None],
                                 torch.from_numpy(truth).permute(2, 0, 1)[None]).reshape(-1)[0])  # fmt: skip
            rows.append({"view": tag, "psnr": round(psnr(ours, truth), 2), "lpips": round(lp, 4)})
            pair = np.concatenate([truth, ours], axis=1)
            Image.fromarray((pair * 255 + 0.5).astype(np.uint8)).save(keep / f"{engine}_{tag}_engine_vs_blender.png")
        scores[engine] = rows
    (keep / "scores.json").write_text(json.dumps({"lpips": lpips.name, "scores": scores}, indent=1))
    return scores


if __name__ == "__main__":
    import sys

    make(Path(sys.argv[1]))
