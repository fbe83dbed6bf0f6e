"""GPU parity: gsplat.rasterization on CUDA vs the CPU kernel on the same scenes, plus GPU timings.

Skipped without CUDA or when gsplat cannot rasterize (no extension for this machine). When it runs it appends the
timings of the bench configurations to ``benchmarks/results/raster_gpu.jsonl``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pla4d.render._gaussians_gsplat import gsplat_can_rasterize

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "raster_gpu.jsonl"


@pytest.fixture(scope="module", autouse=True)
def _gsplat_works():
    if not gsplat_can_rasterize():
        pytest.skip("gsplat cannot rasterize on this machine")


def _compare(scene, cameras, sh_degree=None, background=None, tol=1e-4):
    from test_gaussian_raster import PARAMS, ambiguous_pixels, assert_close_rel, grads, leaf, loss_weights, render
    from test_gaussian_raster import weighted_loss as wl

    n_cams = len(cameras)
    amb = ambiguous_pixels(render(scene, cameras, sh_degree=sh_degree, backend="cpu"), scene["opacities"])
    w = tuple(torch.where(amb, 0.0, x) for x in loss_weights(n_cams, cameras.height, cameras.width, torch.float32))
    p_cpu = leaf(scene)
    cpu = render(p_cpu, cameras, sh_degree=sh_degree, background=background, backend="cpu")
    wl(cpu.rgb, cpu.alpha, cpu.depth, w).backward()
    p_gpu = {k: v.detach().cuda().requires_grad_(True) for k, v in scene.items()}
    bg_gpu = None if background is None else background.cuda()
    gpu = render(p_gpu, cameras.to("cuda"), sh_degree=sh_degree, background=bg_gpu, backend="gsplat")
    assert gpu.info["backend"] == "gsplat"
    wl(gpu.rgb, gpu.alpha, gpu.depth, tuple(x.cuda() for x in w)).backward()
    for name in ("rgb", "alpha", "depth"):
        a, b = getattr(cpu, name), getattr(gpu, name).cpu()
        scale = 1.0 if name != "depth" else b.abs().max().item()
        assert torch.where(amb, 0.0, a - b).abs().max().item() <= tol * scale, name
    g_gpu = {k: v.cpu() for k, v in grads(p_gpu).items()}
    for k in PARAMS:
        assert_close_rel(grads(p_cpu)[k], g_gpu[k], 10 * tol, k)  # atomics on the GPU sum in any order


@pytest.mark.parametrize(("azimuths", "width", "height"), [([0.0], 37, 23), ([20.0, 160.0, 250.0], 64, 48)])
def test_gsplat_cuda_matches_cpu_kernel(azimuths, width, height):
    from test_gaussian_raster import cams, random_scene

    _compare(random_scene(200, seed=31), cams(azimuths, width, height), background=torch.tensor([0.2, 0.4, 0.6]))


def test_gsplat_cuda_matches_cpu_kernel_sh():
    from test_gaussian_raster import cams, random_scene

    _compare(random_scene(150, seed=32, sh_k=16), cams([45.0, -30.0], 40, 40), sh_degree=3)


def test_gsplat_cuda_matches_cpu_kernel_bench_scene():
    from test_gaussian_raster import cams

    from pla4d.bench_raster import make_scene

    _compare(make_scene(5000, seed=5), cams([0.0, 180.0], 96, 96))


def test_gsplat_timings_written():
    from pla4d.bench_raster import run_raster_bench

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    records = run_raster_bench(device="cuda", backend="gsplat", isolate=False, repeats=10, out=str(RESULTS))
    assert len(records) == 12
    assert all(r["backend"] == "gsplat" for r in records)
    print(json.dumps(records[-1]))
