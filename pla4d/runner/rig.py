"""The rig stage (issue 23): the motion as an armature. After ``motion`` and before ``asset``: the field is sampled
at every asset frame (the Gaussians' centres and the mesh's vertices), a skinning decomposition with
``rig.bones`` rigid bones is fitted to them (pla4d/rig), and the result goes to ``rig/`` (``rig.npz`` arrays +
``rig.json``); the asset stage writes it into the 4D asset's ``rig`` block and the exports stage writes
``exports/rigged.glb``. ``rig.enabled`` off: the stage records that and hands on no rig.

Also ``rig_run_folder`` for ``pla4d rig RUN``: the same fit from a finished run's asset, written back into it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pla4d.formats.rig import RigData
from pla4d.runfolder import write_json
from pla4d.runner.core import RunContext, Stage

_ARRAYS = ("parents", "rest", "tails", "transforms", "gaussian_joints", "gaussian_weights", "mesh_joints",
           "mesh_weights")  # fmt: skip


@torch.no_grad()
def sample_motion(canonical: Any, field: Any, mesh: Any, count: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The Gaussians' centres (T, N, 3) and the mesh's vertices (T, V, 3) at the asset's ``count`` frames (the
    same times as the asset stage samples)."""
    from pla4d.deform.hexplane import frame_time

    field = field.eval()
    centres, verts = [], []
    points = None if mesh is None else mesh.vertices.to(canonical.means.device)
    for i in range(count):
        t = frame_time(i, count)
        centres.append(field.deform(canonical, t)[0].cpu().numpy())
        if points is not None:
            verts.append(field.deform_points(points, t).cpu().numpy())
    return np.stack(centres), (np.stack(verts) if verts else None)


def save_rig(folder: Path, rig: RigData) -> None:
    arrays = {k: np.asarray(getattr(rig, k)) for k in _ARRAYS if getattr(rig, k) is not None}
    np.savez(folder / "rig.npz", **arrays)
    write_json(folder / "rig.json", {"enabled": True, "names": rig.names, "fit": rig.info})


def load_rig(folder: Path) -> RigData | None:
    meta = json.loads((folder / "rig.json").read_text())
    if not meta.get("enabled"):
        return None
    with np.load(folder / "rig.npz", allow_pickle=False) as data:
        arrays = {k: data[k] for k in _ARRAYS if k in data}
    return RigData(names=list(meta["names"]), info=dict(meta["fit"]), **arrays)


def _rig_run(ctx: RunContext, folder: Path) -> dict[str, Any]:
    from pla4d.rig.fit import build_rig

    cfg = ctx.preset.rig
    if not cfg.enabled:
        write_json(folder / "rig.json", {"enabled": False})
        ctx.put("rig", None)
        return {"rig": "off"}
    frames = ctx.get("frames")
    count = (frames.shape[0] - 1) * ctx.preset.motion.export_frame_factor + 1
    centres, verts = sample_motion(ctx.get("canonical"), ctx.get("field"), ctx.get("mesh"), count)
    rig = build_rig(centres, verts, bones=cfg.bones, influences=cfg.influences, iterations=cfg.iterations,
                    seed=ctx.seed)  # fmt: skip
    save_rig(folder, rig)
    ctx.put("rig", rig)
    return {"rig": {k: rig.info.get(k) for k in ("bones", "mesh", "gaussians", "seconds")}}


def _rig_load(ctx: RunContext, folder: Path) -> None:
    ctx.lazy("rig", lambda: load_rig(folder))


RIG = Stage(
    name="rig",
    needs=("field", "canonical", "mesh", "frames"),
    makes=("rig",),
    settings=lambda ctx: {
        "rig": asdict(ctx.preset.rig),
        "multiplier": ctx.preset.motion.export_frame_factor,
        "seed": ctx.seed,
    },
    run=_rig_run,
    load=_rig_load,
)


def rig_run_folder(run: str | Path, bones: int = 24, influences: int = 4, iterations: int = 12, seed: int = 0,
                   ) -> dict[str, Any]:  # fmt: skip
    """``pla4d rig RUN``: fit a rig to RUN's 4D asset (its Gaussians' centres and mesh vertices at every frame),
    write it into the asset (atomically) and ``RUN/exports/rigged.glb``. Raises ValueError with one line for a
    run without motion, a one-frame asset or more bones than points (nothing is written then)."""
    from pla4d.asset.format import read_asset, write_asset
    from pla4d.asset.rig_gltf import write_rigged_glb
    from pla4d.rig.fit import build_rig

    run = Path(run)
    folder = run / "asset" if (run / "asset").is_dir() else run
    if not (folder / "asset.json").is_file():
        raise ValueError(f"{run} holds no 4D asset (no asset/asset.json): a rig needs a run with motion "
                         "(pla4d run / demo / generate)")  # fmt: skip
    start = time.perf_counter()
    asset = read_asset(folder, mmap=False)
    verts = None if asset.mesh is None else asset.mesh.positions
    rig = build_rig(asset.positions, verts, bones=bones, influences=influences, iterations=iterations, seed=seed)
    asset.rig = rig
    dtype = asset.meta.get("dtype", "float32")
    write_asset(folder, asset, dtype=dtype)
    glb = write_rigged_glb(read_asset(folder), folder.parent / "exports" / "rigged.glb")
    return {"asset": str(folder), "rigged_glb": None if glb is None else str(glb), "bones": rig.names,
            "fit": rig.info, "seconds": round(time.perf_counter() - start, 2)}  # fmt: skip
