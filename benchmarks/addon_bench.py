"""Blender add-on benchmarks (run with bpy's Python: ``.venv-bpy/bin/python benchmarks/addon_bench.py``).

Builds the extension zip, installs it into a private Blender user folder, writes a synthetic 4D asset with numpy
(100k Gaussians x 32 frames, positions and rotations animated, float32, as docs/asset-format.md lays it out) and
measures:

- ``import_s``: ``pla4d.import_asset`` of that asset (sha256 check, PointCloud, attributes, nodes, material);
- ``handler_ms``: one frame change's work of the add-on (the ``frame_change_pre`` handler: ``foreach_set`` of the
  positions and rotations), median over the 2nd and 3rd pass of 32 frames, when every frame is converted already;
  ``handler_first_ms``: the 1st pass, which also reads the memory-mapped frame and converts it to Blender's axes
  and values (once per frame, kept while the add-on's frame budget allows);
- ``frame_set_ms``: ``scene.frame_set`` as a whole in background mode, which also evaluates the depsgraph (the
  splat instancing of 100k points);
- ``frame_set_no_splats_ms`` / ``frame_set_no_nodes_ms``: the same with the ``pla4d Splats`` modifier off, and
  with both pla4d modifiers off (the handler plus Blender's own update of a plain point cloud): what dominates;
- ``baked_frame_set_ms``: the same after baking (geometry nodes pick the frame's attributes).

Prints one JSON line and appends it to benchmarks/results/addon.jsonl.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def write_asset(folder: Path, n: int, frames: int, asset_io: Any, seed: int = 0) -> None:
    """A 4D asset with numpy only (no pla4d in Blender's Python), following docs/asset-format.md; ``asset_io`` is
    the installed add-on's module (its vendored PLY writer is the engine's layout)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    means = rng.normal(scale=0.4, size=(n, 3)).astype(np.float32)
    quats = rng.normal(size=(n, 4)).astype(np.float32)
    log_scales = rng.uniform(-5, -3, size=(n, 3)).astype(np.float32)
    logits = rng.uniform(-2, 4, size=n).astype(np.float32)
    sh = rng.normal(scale=0.5, size=(n, 3)).astype(np.float32)
    asset_io.write_gaussian_ply(folder / "canonical.ply", means, quats, log_scales, logits, sh)
    t = np.linspace(0, 1, frames, dtype=np.float32)[:, None, None]
    arrays = {"positions": means[None] + 0.1 * np.sin(6.28 * t + means[None]),
              "rotations": quats[None] + 0.1 * t}  # fmt: skip

    def describe(path: Path, arr: np.ndarray, per_frame: bool) -> dict:
        path.write_bytes(arr.astype("<f4").tobytes())
        entry = {"file": path.name, "dtype": "<f4", "shape": list(arr.shape), "offset": 0,
                 "nbytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}  # fmt: skip
        if per_frame:
            entry["frame_nbytes"] = entry["nbytes"] // arr.shape[0]
        return entry

    ply = folder / "canonical.ply"
    meta = {
        "format": "pla4d-asset4d", "format_version": "1.0", "prompt": "benchmark", "seed": seed, "settings": {},
        "timings": {}, "frame_count": frames, "num_gaussians": n, "fps": 16.0, "start_frame": 0,
        "up_axis": "+Y", "forward_axis": "+Z", "dtype": "float32", "animated": list(arrays),
        "canonical": {"file": ply.name, "sha256": hashlib.sha256(ply.read_bytes()).hexdigest(),
                      "nbytes": ply.stat().st_size, "num_gaussians": n, "sh_degree": 0},
        "arrays": {name: describe(folder / f"{name}.bin", arr, True) for name, arr in arrays.items()},
    }  # fmt: skip
    (folder / "asset.json").write_text(json.dumps(meta, indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gaussians", type=int, default=100_000)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--no-record", action="store_true", help="do not append to benchmarks/results/addon.jsonl")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="pla4d-addon-bench-"))
    os.environ["BLENDER_USER_RESOURCES"] = str(tmp / "user")
    sys.path.insert(0, str(ROOT))
    import build_addon

    zip_path = build_addon.build(tmp / "dist")
    import bpy

    bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo="user_default", enable_on_install=True)
    addon = importlib.import_module("bl_ext.user_default.pla4d")
    asset = tmp / "asset"
    write_asset(asset, args.gaussians, args.frames, addon.asset_io)
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.frame_start = 1
    start = time.perf_counter()
    assert bpy.ops.pla4d.import_asset(directory=str(asset)) == {"FINISHED"}
    import_s = time.perf_counter() - start
    obj = bpy.context.active_object
    handler, frame_set = [], []
    for _ in range(3):
        for f in range(1, args.frames + 1):
            scene.frame_current = f  # no evaluation: time the add-on's own work alone
            t0 = time.perf_counter()
            addon.playback.apply_scene(scene)
            handler.append(time.perf_counter() - t0)
    first, handler = handler[: args.frames], handler[args.frames :]
    for f in list(range(1, args.frames + 1)) * 2:
        t0 = time.perf_counter()
        scene.frame_set(f)
        frame_set.append(time.perf_counter() - t0)

    def frame_set_ms() -> float:
        times = []
        for f in list(range(1, args.frames + 1)) * 2:
            t0 = time.perf_counter()
            scene.frame_set(f)
            times.append(time.perf_counter() - t0)
        return round(statistics.median(times) * 1e3, 2)

    # What frame_set spends its time on: without the splat instancing, then without any pla4d nodes (the handler
    # and Blender's own update of a plain point cloud are left).
    obj.modifiers["pla4d Splats"].show_viewport = False
    no_splats_ms = frame_set_ms()
    obj.modifiers["pla4d Frames"].show_viewport = False
    no_nodes_ms = frame_set_ms()
    obj.modifiers["pla4d Frames"].show_viewport = obj.modifiers["pla4d Splats"].show_viewport = True
    start = time.perf_counter()
    addon.playback.bake(obj)
    bake_s = time.perf_counter() - start
    baked = []
    for f in list(range(1, args.frames + 1)) * 2:
        t0 = time.perf_counter()
        scene.frame_set(f)
        baked.append(time.perf_counter() - t0)
    record = {
        "bench": "addon", "blender": bpy.app.version_string, "gaussians": args.gaussians, "frames": args.frames,
        "animated": ["positions", "rotations"], "import_s": round(import_s, 3),
        "handler_ms": round(statistics.median(handler) * 1e3, 3),
        "handler_first_ms": round(statistics.median(first) * 1e3, 3),
        "handler_p95_ms": round(sorted(handler)[int(0.95 * len(handler))] * 1e3, 3),
        "frame_set_ms": round(statistics.median(frame_set) * 1e3, 2), "frame_set_no_splats_ms": no_splats_ms,
        "frame_set_no_nodes_ms": no_nodes_ms, "bake_s": round(bake_s, 3),
        "baked_frame_set_ms": round(statistics.median(baked) * 1e3, 2),
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "load_1min": round(os.getloadavg()[0], 2),
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }  # fmt: skip
    print(json.dumps(record))
    if not args.no_record:
        with open(ROOT / "benchmarks" / "results" / "addon.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
