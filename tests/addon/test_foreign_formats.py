"""Splats made elsewhere (PLY sequence, SPZ, KHR glTF) imported by the add-on inside Blender 5.0 (bpy 5.0.1), and
the add-on's splat exports. SPZ needs gsply in Blender's Python (the extension does not bundle it, see
pla4d/formats/spz.py): it is installed into the bpy venv here, as a user would into Blender's Python."""

from __future__ import annotations

import subprocess

from conftest import run_inner


def test_foreign_splats_import_and_bake(bpy_python, addon_zip, fixture_dir, tmp_path):
    install = subprocess.run(
        [str(bpy_python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "gsply==0.4.6", "numpy<2"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    run_inner(bpy_python, ["test_foreign_import.py"], addon_zip, fixture_dir, tmp_path)
