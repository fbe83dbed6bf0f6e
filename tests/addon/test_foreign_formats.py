"""Splats made elsewhere (PLY sequence, SPZ, KHR glTF) imported by the add-on inside Blender 5.0 (bpy 5.0.1), and
the add-on's splat exports. KHR glTF goes through pygltflib, which the extension bundles with its dependencies
(build_addon.py): they are kept out of the bpy venv so that the bundled wheels are what runs. SPZ needs gsply in
Blender's Python (the extension does not bundle it, see pla4d/formats/spz.py): it is installed into the bpy venv
here, as a user would into Blender's Python."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from conftest import run_inner

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from build_addon import PACKAGES, PLATFORMS  # noqa: E402

# What pygltflib brings; packaging stays (pytest in the bpy venv needs it, and the bundled one is the same version).
GLTF_CLOSURE = ("pygltflib", "dataclasses-json", "marshmallow", "typing-inspect", "mypy-extensions",
                "typing-extensions", "deprecated", "wrapt")  # fmt: skip


def test_zip_lists_every_bundled_wheel_for_every_platform(addon_zip):
    with zipfile.ZipFile(addon_zip) as archive:
        manifest = tomllib.loads(archive.read("blender_manifest.toml").decode())
        names = set(archive.namelist())
    wheels = [w.removeprefix("./wheels/") for w in manifest["wheels"]]
    assert all(f"wheels/{w}" in names for w in wheels)
    tags = {"windows-x64": "win_amd64", "macos-arm64": r"macosx_\d+_\d+_(arm64|universal2)",
            "macos-x64": r"macosx_\d+_\d+_(x86_64|universal2)", "linux-x64": r"manylinux\w*_x86_64"}  # fmt: skip
    assert set(manifest["platforms"]) == set(PLATFORMS) == set(tags)
    for package, version in PACKAGES.items():
        name = re.sub(r"[-_.]+", "_", package).lower()
        mine = [w for w in wheels if re.sub(r"[-_.]+", "_", w.split("-")[0]).lower() == name]
        assert mine and all(w.split("-")[1] == version for w in mine), (package, mine)
        for platform, tag in tags.items():
            assert any(w.endswith("-none-any.whl") or ("cp311" in w and re.search(tag, w)) for w in mine), (
                package, platform, mine)  # fmt: skip
    assert any(w.startswith("wrapt-") and "cp311" in w for w in wheels)  # the one binary wheel of the glTF closure


def test_foreign_splats_import_and_bake(bpy_python, addon_zip, fixture_dir, tmp_path):
    subprocess.run([str(bpy_python), "-m", "pip", "uninstall", "--quiet", "-y", *GLTF_CLOSURE], capture_output=True)
    absent = subprocess.run([str(bpy_python), "-c", "import pygltflib"], capture_output=True)
    assert absent.returncode != 0, "pygltflib is in the bpy venv: the test would not show that the zip brings it"
    install = subprocess.run(
        [str(bpy_python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "gsply==0.4.6", "numpy<2"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    run_inner(bpy_python, ["test_foreign_import.py"], addon_zip, fixture_dir, tmp_path)
