"""The engine's side of the render comparison (main venv: imports pla4d and torch).

Writes a 4D asset of the built-in creature as Gaussians initialised on its surface (the static stage's start:
oriented, coloured, scaled discs) and the engine's own render of one orbit camera, plus that camera."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from pla4d.asset.format import Asset4D, write_asset
from pla4d.cameras import orbit_cameras, orbit_position
from pla4d.example.creature import animate_creature
from pla4d.gaussians.init import gaussians_from_mesh
from pla4d.render.mesh import Mesh

CAMERA = {"azimuth_deg": 35.0, "elevation_deg": 15.0, "radius": 3.0, "fov_deg": 49.1, "size": 256}


def make(out: Path, n: int = 6000) -> None:
    anim = animate_creature(num_frames=2)
    srgb = torch.from_numpy(anim.colors_srgb.astype(np.float32))
    linear = torch.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    mesh = Mesh(torch.from_numpy(anim.vertices[0]), torch.from_numpy(anim.faces), vertex_colors=linear)
    model = gaussians_from_mesh(mesh, n=n, seed=0)
    means = model.means.detach().numpy()
    positions = np.stack([means, means + np.array([0.0, 0.05, 0.0], np.float32)])
    write_asset(out / "creature", Asset4D(model, positions, fps=16.0, meta={"prompt": "creature"}))
    cams = orbit_cameras([CAMERA["azimuth_deg"]], CAMERA["elevation_deg"], CAMERA["radius"], CAMERA["fov_deg"],
                         CAMERA["size"])  # fmt: skip
    with torch.no_grad():
        render = model.render(cams, background=torch.zeros(3))
    rgb, alpha = render.rgb[0].numpy(), render.alpha[0].numpy()
    np.savez(out / "engine_render.npz", rgb=rgb, alpha=alpha)
    eye = orbit_position(CAMERA["azimuth_deg"], CAMERA["elevation_deg"], CAMERA["radius"]).tolist()
    focal = float(cams.Ks[0, 0, 0])
    (out / "camera.json").write_text(json.dumps({**CAMERA, "eye": eye, "focal_px": focal}))


if __name__ == "__main__":
    import sys

    make(Path(sys.argv[1]))
