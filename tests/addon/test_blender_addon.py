"""The add-on inside Blender 5.0 (bpy 5.0.1 from PyPI): install, import, playback, bake, exports.

Each test runs one file of ``blender/`` in the bpy venv; a failure shows that run's pytest report."""

from __future__ import annotations

import pytest
from conftest import REPO, run_inner


def test_install_zip_with_wheels(bpy_python, addon_zip, fixture_dir, tmp_path):
    run_inner(bpy_python, ["test_install.py"], addon_zip, fixture_dir, tmp_path)


def test_import_and_playback(bpy_python, addon_zip, fixture_dir, tmp_path):
    run_inner(bpy_python, ["test_import_playback.py", "test_glb_import.py"], addon_zip, fixture_dir, tmp_path)


def test_bake_and_exports(bpy_python, addon_zip, fixture_dir, tmp_path):
    run_inner(bpy_python, ["test_bake_export.py"], addon_zip, fixture_dir, tmp_path)


def test_settings_panel_from_capabilities(bpy_python, addon_zip, fixture_dir, tmp_path):
    """The panel's knobs come from a (fake) settings table; bad values are refused before submit."""
    run_inner(bpy_python, ["test_settings_panel.py"], addon_zip, fixture_dir, tmp_path)


@pytest.mark.slow
def test_blender_45_suite(addon_zip, fixture_dir, tmp_path):
    """The same suite on Blender 4.5 LTS (bpy 4.5.x), a separate slow job (another ~800 MB install)."""
    from conftest import ensure_bpy

    python = ensure_bpy("4.5")
    run_inner(python, ["test_install.py", "test_import_playback.py", "test_glb_import.py", "test_bake_export.py"],
              addon_zip, fixture_dir, tmp_path)  # fmt: skip


def test_backend_end_to_end(bpy_python, addon_zip, fixture_dir, tmp_path):
    """A real backend process on loopback runs the built-in example at tiny size for the add-on."""
    import sys

    sys.path.insert(0, str(REPO / "tests" / "backend"))
    from backend_helpers import Backend

    data = tmp_path / "backend-data"
    data.mkdir()
    backend = Backend(data, "--rate", "0").start()
    try:
        run_inner(bpy_python, ["test_backend_e2e.py"], addon_zip, fixture_dir, tmp_path,
                  {"PLA4D_BACKEND": backend.endpoint, "PLA4D_DOWNLOADS": str(tmp_path / "downloads")})  # fmt: skip
    finally:
        backend.stop()


def test_cycles_render_matches_engine(bpy_python, addon_zip, fixture_dir, tmp_path):
    """Cycles (CPU, 256 x 256) renders the imported splats like the engine renders the same Gaussians."""
    import numpy as np
    from engine_render import make
    from PIL import Image

    folder = tmp_path / "render"
    folder.mkdir()
    make(folder)
    run_inner(bpy_python, ["test_render.py"], addon_zip, fixture_dir, tmp_path, {"PLA4D_RENDER_DIR": str(folder)})
    engine = np.load(folder / "engine_render.npz")
    image = np.asarray(Image.open(folder / "cycles.png").convert("RGBA"), dtype=np.float32) / 255.0
    keep = REPO / "out" / "tests" / "addon_render"  # kept for people to look at (out/ is ignored by git)
    keep.mkdir(parents=True, exist_ok=True)
    Image.open(folder / "cycles.png").save(keep / "cycles.png")
    engine_rgba = np.concatenate([engine["rgb"] / np.maximum(engine["alpha"], 1e-6), engine["alpha"]], axis=-1)
    Image.fromarray((np.clip(engine_rgba, 0, 1) * 255 + 0.5).astype(np.uint8)).save(keep / "engine.png")
    blender_mask = image[..., 3] > 0.5
    engine_mask = engine["alpha"][..., 0] > 0.5
    iou = (blender_mask & engine_mask).sum() / max((blender_mask | engine_mask).sum(), 1)
    both = blender_mask & engine_mask
    blender_colour = image[..., :3][both].mean(axis=0)
    engine_colour = (engine["rgb"] / np.maximum(engine["alpha"], 1e-6))[both].mean(axis=0)
    report = f"IoU {iou:.3f}, mean colour Blender {blender_colour.round(3)} vs engine {engine_colour.round(3)}"
    (keep / "report.txt").write_text(report + "\n")
    assert engine_mask.sum() > 2000, report  # the engine render shows the creature
    assert iou >= 0.85, report
    assert np.abs(blender_colour - engine_colour).max() <= 0.06, report  # measured 0.046 (blue)
