"""The add-on tests: build the real extension zip, set up Blender's Python (bpy from PyPI, in its own venv because
bpy 5.0 needs numpy < 2 and the engine numpy 2), and run the tests in ``blender/`` inside it.

``.venv-bpy/`` (bpy 5.0.1, the default suite), ``.venv-bpy45/`` (bpy 4.5) and ``.venv-bpy42/`` (bpy 4.2 LTS; those
two for the ``slow`` job) live in the repository root, are ignored by git and are reused by later runs. Only an
unreachable package index skips."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INNER = Path(__file__).resolve().parent / "blender"
collect_ignore = ["blender"]  # bpy-only tests: run inside the bpy venv by the tests here

BPY_VENVS = {
    "5.0": (REPO / ".venv-bpy", "bpy==5.0.1"),
    "4.5": (REPO / ".venv-bpy45", "bpy>=4.5,<4.6"),
    "4.2": (REPO / ".venv-bpy42", "bpy>=4.2,<4.3"),  # the first LTS with extensions: blender_version_min
}


def _bpy_version(python: Path) -> str | None:
    if not python.exists():
        return None
    code = "import bpy, pytest, numpy; print(bpy.app.version_string)"
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120)
    return result.stdout.strip().splitlines()[-1] if result.returncode == 0 and result.stdout.strip() else None


def _index_reachable() -> bool:
    probe = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
         "--dest", str(REPO / "build" / "pip-probe"), "msgpack==1.2.4"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return probe.returncode == 0


def ensure_bpy(series: str) -> Path:
    """The Python of the bpy venv for ``series`` ("5.0", "4.5" or "4.2"), creating it when missing."""
    venv, requirement = BPY_VENVS[series]
    python = venv / "bin" / "python"
    version = _bpy_version(python)
    if version is None or not version.startswith(series):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        install = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", requirement,
             "numpy<2", "pytest"],
            capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        if install.returncode != 0:
            if not _index_reachable():
                pytest.skip(f"the package index is unreachable, so {requirement} cannot be installed")
            raise RuntimeError(f"pip install {requirement} failed:\n{install.stderr[-3000:]}")
        version = _bpy_version(python)
        assert version and version.startswith(series), f"{requirement} installed but bpy reports {version}"
    # The extension must bring pyzmq and msgpack itself (its bundled wheels): keep them out of this venv.
    subprocess.run([str(python), "-m", "pip", "uninstall", "--quiet", "-y", "pyzmq", "msgpack"], capture_output=True)
    return python


@pytest.fixture(scope="session")
def bpy_python() -> Path:
    return ensure_bpy("5.0")


@pytest.fixture(scope="session")
def addon_zip(tmp_path_factory) -> Path:
    """The real build: pyzmq + msgpack wheels for every platform (downloaded once into build/addon_wheels)."""
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, str(REPO / "build_addon.py"), "--out", str(out)], capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    if result.returncode != 0 and not _index_reachable():
        pytest.skip("the package index is unreachable, so the wheels cannot be downloaded")
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.is_file() and path.parent == out
    return path


@pytest.fixture(scope="session")
def fixture_dir(tmp_path_factory) -> Path:
    """Fixture assets written by the engine's own writer (float32 and float16) and their expected arrays."""
    import numpy as np
    from fixtures import synthetic_asset

    root = tmp_path_factory.mktemp("assets")
    np.savez(root / "blob.npz", **synthetic_asset(root / "blob"))
    np.savez(root / "blob16.npz", **synthetic_asset(root / "blob16", dtype="float16", n=300, frames=4, seed=1))
    np.save(root / "wobble.npy", wobble_glb(root / "wobble.glb"))
    return root


def wobble_glb(path: Path):
    """The engine's animated-mesh GLB export of a non-rigidly wobbling, drifting sphere (12 frames at 8 fps);
    returns its (T, V, 3) positions in the engine's frame (+Y up)."""
    import numpy as np
    import trimesh

    from pla4d.asset.export import export_glb
    from pla4d.asset.format import AnimatedMesh

    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    v = np.asarray(sphere.vertices, np.float32)
    frames = []
    for t in range(12):
        bend = np.float32(0.3 * np.sin(2 * np.pi * t / 12)) * (v[:, 1:2] + 0.5) * np.array([1, 0, 0], np.float32)
        frames.append(v + bend + np.array([0.0, 0.1 * t / 12, 0.05 * t], np.float32))
    positions = np.stack(frames)
    export_glb(AnimatedMesh(np.asarray(sphere.faces, np.uint32), positions, vertex_colors=np.clip(v + 0.5, 0, 1)),
               path, fps=8.0)  # fmt: skip
    return positions


def run_inner(python: Path, files: list[str], zip_path: Path, test_dir: Path, tmp: Path, extra: dict | None = None,
              timeout: int = 900) -> subprocess.CompletedProcess:  # fmt: skip
    """Run tests of ``blender/`` inside the bpy venv; the assertion message carries pytest's report."""
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PLA4D_ADDON_ZIP=str(zip_path), PLA4D_TEST_DIR=str(test_dir),
               BLENDER_USER_RESOURCES=str(tmp / "blender-user"), **(extra or {}))  # fmt: skip
    env.pop("PYTHONPATH", None)
    cmd = [str(python), "-m", "pytest", "-c", str(INNER / "pytest.ini"), "--rootdir", str(INNER), "-q",
           "--basetemp", str(tmp / "inner"), *[str(INNER / f) for f in files]]  # fmt: skip
    result = subprocess.run(cmd, cwd=INNER, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"Blender-side tests failed ({' '.join(files)}):\n{result.stdout[-12000:]}\n{result.stderr[-4000:]}"
    )
    return result
