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
@pytest.mark.parametrize("series", ["4.5", "4.2"])
def test_blender_lts_suite(series, addon_zip, fixture_dir, tmp_path):
    """The same suite, render parity and lit scene included, on Blender 4.5 LTS and 4.2 LTS (the manifest's
    blender_version_min), a separate slow job (another ~800 MB install each)."""
    from conftest import ensure_bpy

    python = ensure_bpy(series)
    run_inner(python, ["test_install.py", "test_import_playback.py", "test_glb_import.py", "test_bake_export.py",
                       "test_settings_panel.py"], addon_zip, fixture_dir, tmp_path)  # fmt: skip
    _assert_parity(_render_parity(python, addon_zip, fixture_dir, tmp_path, ["CYCLES"]))  # and the lit scene


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


# Blender vs the engine, both on white, every camera and frame: (min PSNR dB, max LPIPS) per render engine.
PARITY = {"cycles": (30.0, 0.03), "eevee": (28.0, 0.05)}


def _render_parity(bpy_python, addon_zip, fixture_dir, tmp_path, engines: list[str]) -> dict:
    import json

    from engine_render import compare, make

    folder = tmp_path / "render"
    folder.mkdir()
    make(folder)
    run_inner(bpy_python, ["test_render.py"], addon_zip, fixture_dir, tmp_path,
              {"PLA4D_RENDER_DIR": str(folder), "PLA4D_RENDER_ENGINES": ",".join(engines)}, timeout=1800)  # fmt: skip
    keep = REPO / "out" / "tests" / "addon_render"  # the picture pairs, kept for people to look at (out/ is ignored)
    renders = {e.lower(): sorted(folder.glob(f"{e.lower()}_c*_f*.png")) for e in engines}
    scores = compare(folder, renders, keep)
    print(f"render pairs (engine | Blender) and scores.json in {keep}:\n{json.dumps(scores, indent=1)}")
    return scores


def _assert_parity(scores: dict) -> None:
    for engine, rows in scores.items():
        assert len(rows) == 9, rows  # three cameras x three frames
        lo_psnr, hi_lpips = PARITY[engine]
        for row in rows:
            assert row["psnr"] >= lo_psnr and row["lpips"] <= hi_lpips, (engine, row, rows)


def test_cycles_render_matches_engine(bpy_python, addon_zip, fixture_dir, tmp_path):
    """Cycles (CPU, 256 x 256) renders the imported splats like the engine renders the same Gaussians: PSNR and
    LPIPS on white, three cameras x three frames of the animated example creature."""
    _assert_parity(_render_parity(bpy_python, addon_zip, fixture_dir, tmp_path, ["CYCLES"]))


@pytest.mark.slow
@pytest.mark.parametrize("series", ["5.0", "4.5", "4.2"])
def test_eevee_render_matches_engine(series, addon_zip, fixture_dir, tmp_path):
    """EEVEE, the same comparison on each Blender series; headless it runs on Mesa's llvmpipe (EGL), slowly
    (~9-17 min each on 2 cores): a separate slow job."""
    from conftest import ensure_bpy

    _assert_parity(_render_parity(ensure_bpy(series), addon_zip, fixture_dir, tmp_path, ["EEVEE"]))
