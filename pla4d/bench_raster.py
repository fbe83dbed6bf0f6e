"""``pla4d bench raster``: time the Gaussian rasteriser (forward, forward + backward) and its peak memory.

Scenes look like a trained object: Gaussians on and inside a unit sphere, log-uniform scales in [0.005, 0.05],
opacities U(0.1, 1), seen by orbit cameras at distance 3 with a 49.1 degree field of view. Each configuration
runs in its own child process by default, so its peak memory is measured honestly: peak RSS (VmHWM) of the child
above its RSS after imports, kernel loading and scene creation. With ``--in-process`` the peak is reset through
``/proc/self/clear_refs`` instead (memory freed by earlier configurations can then hide some of the growth).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import torch

DEFAULT_SIZES = (128, 256)
DEFAULT_COUNTS = (5_000, 20_000, 50_000)
DEFAULT_CAMERAS = (1, 6)


def make_scene(n: int, seed: int = 0, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Trained-object-like Gaussians: 85 % within a thin shell around the unit sphere, 15 % filling it."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(n, 3, generator=g)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    shell = 1.0 + 0.03 * torch.randn(n, generator=g)
    inner = torch.rand(n, generator=g) ** (1.0 / 3.0)
    radius = torch.where(torch.rand(n, generator=g) < 0.85, shell, inner)
    log_s = torch.empty(n, 3).uniform_(math.log(0.005), math.log(0.05), generator=g)
    return {
        "means": (dirs * radius[:, None]).to(device),
        "quats": torch.randn(n, 4, generator=g).to(device),
        "scales": log_s.exp().to(device),
        "opacities": torch.empty(n).uniform_(0.1, 1.0, generator=g).to(device),
        "colors": torch.rand(n, 3, generator=g).to(device),
    }


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def run_one(
    n: int, size: int, n_cams: int, repeats: int, device: str, backend: str, threads: int, seed: int = 0
) -> dict[str, Any]:
    """Time one configuration in this process; returns the JSON record."""
    import numba

    from pla4d.cameras import orbit_cameras
    from pla4d.render.gaussians import rasterize_gaussians

    torch.set_num_threads(threads)
    if device == "cpu":
        numba.set_num_threads(threads)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    azimuths = [360.0 * i / n_cams for i in range(n_cams)]
    cams = orbit_cameras(azimuths, 15.0, radius=3.0, fov_deg=49.1, width=size).to(device)
    scene = make_scene(n, seed, device)
    params = {k: v.clone().requires_grad_(True) for k, v in scene.items()}

    def render() -> Any:
        return rasterize_gaussians(
            params["means"], params["quats"], params["scales"], params["opacities"], params["colors"],
            cams.viewmats, cams.Ks, cams.width, cams.height, backend=backend,
        )  # fmt: skip

    def step() -> Any:
        out = render()
        (out.rgb.sum() + out.alpha.sum() + out.depth.sum()).backward()
        for p in params.values():
            p.grad = None
        return out

    # Warm-up at a tiny size loads (or compiles) the kernels before the memory baseline is taken.
    t0 = time.perf_counter()
    warm = make_scene(64, seed + 1, device)
    w = {k: v.clone().requires_grad_(True) for k, v in warm.items()}
    small = orbit_cameras([0.0], 0.0, width=16).to(device)
    o = rasterize_gaussians(*w.values(), small.viewmats, small.Ks, 16, 16, backend=backend)
    (o.rgb.sum() + o.alpha.sum() + o.depth.sum()).backward()
    sync()
    warm_s = time.perf_counter() - t0

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    base_kb = _rss_kb("VmRSS")
    peak_reset = _reset_peak()

    out = step()  # first full-size call: allocations, page faults, caches
    sync()
    info = out.info
    fwd_times, total_times = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        sync()
        total_times.append(time.perf_counter() - t0)
    for _ in range(repeats):
        t0 = time.perf_counter()
        o = render()
        sync()
        fwd_times.append(time.perf_counter() - t0)
        del o

    peak_kb = _rss_kb("VmHWM")
    rec: dict[str, Any] = {
        "n_gaussians": n,
        "width": size,
        "height": size,
        "n_cameras": n_cams,
        "median_ms": round(1e3 * statistics.median(total_times), 2),
        "min_ms": round(1e3 * min(total_times), 2),
        "forward_ms": round(1e3 * statistics.median(fwd_times), 2),
        "repeats": repeats,
        "n_isects": info.get("n_isects"),
        "n_visible": int((info["radii"] > 0).all(-1).sum().item()),
        "device": device,
        "backend": info["backend"],
        "threads": threads,
        "warmup_s": round(warm_s, 2),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "baseline_rss_mb": round(base_kb / 1024, 1),
        "peak_above_baseline_mb": round((peak_kb - base_kb) / 1024, 1) if peak_reset else None,
        "torch": torch.__version__,
    }
    if device.startswith("cuda"):
        rec["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        rec["gpu"] = torch.cuda.get_device_name()
    else:
        rec["cpu"] = _cpu_name()
    return rec


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.replace(",", " ").split()]


def run_raster_bench(
    sizes: list[int] | tuple[int, ...] = DEFAULT_SIZES,
    counts: list[int] | tuple[int, ...] = DEFAULT_COUNTS,
    cameras: list[int] | tuple[int, ...] = DEFAULT_CAMERAS,
    repeats: int = 5,
    device: str = "cpu",
    backend: str = "auto",
    threads: int = 2,
    isolate: bool = True,
    out: str | None = None,
) -> list[dict[str, Any]]:
    """Run every (count, size, cameras) configuration, print one JSON line each, optionally append to ``out``."""
    records = []
    for n in counts:
        for size in sizes:
            for n_cams in cameras:
                if isolate:
                    rec = _run_child(n, size, n_cams, repeats, device, backend, threads)
                else:
                    rec = run_one(n, size, n_cams, repeats, device, backend, threads)
                print(json.dumps(rec), flush=True)
                if out:
                    with open(out, "a") as f:
                        f.write(json.dumps(rec) + "\n")
                records.append(rec)
    return records


def _run_child(n: int, size: int, n_cams: int, repeats: int, device: str, backend: str, threads: int) -> dict:
    code = (
        "import json, sys; from pla4d.bench_raster import run_one; "
        f"print('@@' + json.dumps(run_one({n}, {size}, {n_cams}, {repeats}, {device!r}, {backend!r}, {threads})))"
    )
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["OMP_NUM_THREADS"] = str(threads)
    env["NUMBA_NUM_THREADS"] = str(threads)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("@@"):
            return json.loads(line[2:])
    raise RuntimeError(f"benchmark child failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")


def main_bench_raster(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pla4d bench raster",
        description="Time the Gaussian rasteriser (forward and forward + backward) and measure its peak memory;"
        " one JSON line per configuration.",
    )
    parser.add_argument("--sizes", default="128,256", help="square image sizes, comma separated")
    parser.add_argument("--counts", default="5000,20000,50000", help="Gaussian counts, comma separated")
    parser.add_argument("--cameras", default="1,6", help="cameras per render call, comma separated")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per configuration (median)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--backend", default="auto", choices=["auto", "cpu", "gsplat", "reference"])
    parser.add_argument("--threads", type=int, default=2, help="torch and numba threads")
    parser.add_argument("--in-process", action="store_true", help="run all configurations in this process")
    parser.add_argument("--out", default=None, help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 1:
        parser.error("--repeats and --threads must be >= 1")
    try:
        run_raster_bench(
            _int_list(args.sizes), _int_list(args.counts), _int_list(args.cameras), args.repeats, args.device,
            args.backend, args.threads, isolate=not args.in_process, out=args.out,
        )  # fmt: skip
    except (RuntimeError, ValueError) as exc:
        print(f"bench raster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main_bench_raster())
