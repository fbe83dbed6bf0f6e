"""Inside Blender's Python (bpy from PyPI): install the built extension zip once, give each test an empty file.

Driven by tests/addon/conftest.py through environment variables: PLA4D_ADDON_ZIP (the built zip), PLA4D_TEST_DIR
(fixture assets and expected arrays), BLENDER_USER_RESOURCES (a private user folder for the extension)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import bpy
import numpy as np
import pytest

PACKAGE = "bl_ext.user_default.pla4d"


def pxr_path() -> str:
    """pxr ships inside the bpy wheel's own site-packages, which bpy does not put on sys.path."""
    return os.path.join(bpy.utils.resource_path("LOCAL"), "python", "lib", "python3.11", "site-packages")


@pytest.fixture(scope="session")
def addon():
    zip_path = os.environ["PLA4D_ADDON_ZIP"]
    result = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
    assert result == {"FINISHED"}, result
    module = importlib.import_module(PACKAGE)
    assert PACKAGE in bpy.context.preferences.addons, "the extension installed but is not enabled"
    return module


@pytest.fixture(scope="session")
def test_dir() -> Path:
    return Path(os.environ["PLA4D_TEST_DIR"])


@pytest.fixture(scope="session")
def blob(test_dir):
    """(asset path, expected arrays) of the synthetic fixture asset (every attribute animated, float32)."""
    return test_dir / "blob", dict(np.load(test_dir / "blob.npz"))


@pytest.fixture(autouse=True)
def empty_file(addon):
    bpy.ops.wm.read_homefile(use_empty=True)
    addon.playback.forget_assets()
    yield
    addon.jobs.join_all(timeout=10)
    addon.jobs.drain()


def positions(data, name: str = "position") -> np.ndarray:
    attr = data.attributes[name]
    out = np.empty(len(attr.data) * 3, dtype=np.float32)
    attr.data.foreach_get("vector", out)
    return out.reshape(-1, 3)


def attribute(data, name: str, width: int) -> np.ndarray:
    attr = data.attributes[name]
    key = "vector" if attr.data_type == "FLOAT_VECTOR" else "value"
    out = np.empty(len(attr.data) * width, dtype=np.float32)
    attr.data.foreach_get(key, out)
    return out.reshape(-1, width) if width > 1 else out


def instance_scales(obj) -> np.ndarray:
    """The sorted scales of the splat instances ``obj`` draws (its evaluated ``pla4d Splats`` nodes)."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    # Instance structs live only while iterating: read what is needed inside the loop.
    got = [
        np.array(i.matrix_world.to_scale())
        for i in depsgraph.object_instances
        if i.is_instance and i.parent and i.parent.name == obj.name
    ]
    return np.sort(np.ravel(got))


def to_blender(p: np.ndarray) -> np.ndarray:
    """The conventions' axis change, written independently of the add-on: (x, y, z) -> (x, -z, y)."""
    return np.stack([p[:, 0], -p[:, 2], p[:, 1]], axis=1)


def quat_to_blender(q: np.ndarray) -> np.ndarray:
    """A Gaussian's orientation R -> C R with C = +90 degrees about X (its local axes, and so its scales, keep
    their order), by a quaternion product (independent of the add-on)."""
    c = np.array([np.cos(np.pi / 4), np.sin(np.pi / 4), 0.0, 0.0])
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    return _qmul(np.broadcast_to(c, q.shape), q)


def _qmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a.T
    w2, x2, y2, z2 = b.T
    return np.stack([
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
    ], axis=1)  # fmt: skip


def same_rotation(a: np.ndarray, b: np.ndarray) -> float:
    """Largest difference between two quaternion sets up to sign (q and -q are the same rotation)."""
    return float(np.minimum(np.abs(a - b).max(axis=1), np.abs(a + b).max(axis=1)).max())
