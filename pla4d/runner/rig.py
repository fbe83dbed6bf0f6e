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
    """``pla4d rig RUN``: fit a rig to RUN's 4D asset (its Gaussians' centres and mesh vertices at every frame) and
    write it everywhere a run keeps it: the asset's rig block (atomically), ``RUN/rig/`` (the rig stage's folder)
    and ``RUN/exports/rigged.glb``. Raises ValueError with one line for a run without motion, a one-frame asset or
    more bones than points (nothing is written then).

    The asset's float32 frames are the field's samples the rig stage fits, so with the run's own seed this is the
    stage's result for these settings: ``rig/stage.json`` gets the key the runner computes for them (and
    config.json the settings), so a later ``pla4d run`` with the same ``--rig-bones`` reuses it and one with other
    settings fits again. The asset's and exports' markers are dropped (their keys named the old rig): a later run
    rebuilds those two from this rig in seconds."""
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
    root = folder.parent if folder.name == "asset" else None
    stage = None
    if root is not None:
        settings = {"enabled": True, "bones": bones, "influences": influences, "iterations": iterations}
        stage = _refresh_stage_folder(root, rig, settings, seed, exact=dtype == "float32")
    exports = (root or folder.parent) / "exports"
    glb = write_rigged_glb(read_asset(folder), exports / "rigged.glb")
    return {"asset": str(folder), "rigged_glb": None if glb is None else str(glb), "rig_stage": stage,
            "bones": rig.names, "fit": rig.info, "seconds": round(time.perf_counter() - start, 2)}  # fmt: skip


def _refresh_stage_folder(run: Path, rig: RigData, settings: dict[str, Any], seed: int, exact: bool) -> str | None:
    """Replace ``run/rig`` with ``rig``; mark it cached under the runner's key for ``settings`` when the fit is the
    stage's (float32 frames, the run's seed, a config.json with the upstream keys). Returns the key, or None."""
    import dataclasses
    import shutil

    from pla4d import __version__
    from pla4d.config import RigConfig, get_preset
    from pla4d.runner.core import MARKER, RunContext, stage_key

    folder = run / "rig"
    fresh = run / "rig.partial"
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir()
    save_rig(fresh, rig)
    key = None
    config_file = run / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    keys = dict(config.get("keys") or {})
    if exact and config.get("seed") == seed and all(a in keys for a in RIG.needs):
        preset = get_preset(config["preset"]["name"])
        factor = config["preset"]["motion"]["export_frame_factor"]
        motion = dataclasses.replace(preset.motion, export_frame_factor=factor)
        preset = dataclasses.replace(preset, rig=RigConfig(**settings), motion=motion)
        ctx = RunContext(out=run, preset=preset, seed=seed)
        ctx.keys = keys
        key = stage_key(ctx, RIG)
        write_json(fresh / MARKER, {"key": key, "version": __version__, "source": "pla4d rig"})
    shutil.rmtree(folder, ignore_errors=True)
    fresh.rename(folder)
    for later in ("asset", "exports"):  # their keys chained the old rig's
        (run / later / MARKER).unlink(missing_ok=True)
    if config:
        config["preset"]["rig"] = settings
        if key is None:
            keys.pop("rig", None)
        else:
            keys["rig"] = key
        keys.pop("asset", None)
        config["keys"] = keys
        write_json(config_file, config)
    return key
