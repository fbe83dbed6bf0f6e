"""The built zip installs as a Blender extension, with its bundled wheels and vendored client."""

from __future__ import annotations

import os
import tomllib
import zipfile

import addon_utils
import bpy


def test_manifest_and_wheels(addon):
    with zipfile.ZipFile(os.environ["PLA4D_ADDON_ZIP"]) as archive:
        manifest = tomllib.loads(archive.read("blender_manifest.toml").decode())
        names = set(archive.namelist())
    assert set(manifest["permissions"]) == {"network", "files"}
    assert manifest["blender_version_min"] == "4.2.0"
    if os.environ.get("PLA4D_ADDON_WHEELS", "1") == "1":
        assert set(manifest["platforms"]) == {"windows-x64", "macos-arm64", "macos-x64", "linux-x64"}
        for wheel in manifest["wheels"]:
            assert wheel.removeprefix("./") in names
        joined = " ".join(manifest["wheels"])
        for package in ("pyzmq-", "msgpack-"):
            for tag in ("win_amd64", "macosx", "manylinux"):
                assert any(package in w and tag in w for w in manifest["wheels"]), (package, tag, joined)
        # pyzmq and msgpack come from the extension's own wheels, not from this Python's site-packages.
        import msgpack
        import zmq

        assert "extensions" in zmq.__file__ and "extensions" in msgpack.__file__, (zmq.__file__, msgpack.__file__)
    assert "pla4d_client/client.py" in names and "pla4d_client/protocol.py" in names


def test_vendored_client_imports_without_backend(addon):
    from importlib import import_module

    client = import_module(addon.__name__ + ".pla4d_client.client")
    assert client.Client.__module__.endswith("pla4d_client.client")
    import sys

    assert "pla4d" not in sys.modules and "backend" not in sys.modules and "torch" not in sys.modules


def test_disable_and_enable_again(addon):
    addon_utils.disable(addon.__name__, default_set=True)
    assert not hasattr(bpy.types.Scene, "pla4d")
    addon_utils.enable(addon.__name__, default_set=True)
    assert hasattr(bpy.types.Scene, "pla4d") and hasattr(bpy.ops.pla4d, "generate")
