"""Build the installable Blender extension zip from ``blender_addon/``.

Usage: ``python build_addon.py [--out DIR] [--no-wheels] [--wheel-cache DIR]``; prints the path of the zip.

The zip is a Blender 4.2+ extension: ``blender_manifest.toml`` (with the ``wheels`` and ``platforms`` it bundles
written in at build time), the add-on's modules, two vendored sub-packages copied byte for byte (so the add-on never
needs pla4d or backend installed): ``pla4d_formats`` (the engine's ``pla4d/formats``: 4D asset, 3DGS PLY, colour and
axes, numpy + plyfile; KHR glTF splats through pygltflib, and sequences; and SPZ, which needs gsply in Blender's
Python: it is not bundled, as its numba/llvmlite wheels would add ~150 MB per build) and ``pla4d_client``
(``backend/client.py`` and ``backend/protocol.py``, which import each other relatively), and the wheels of
``PACKAGES`` (pyzmq, msgpack, plyfile, pygltflib and its dependencies) for every platform Blender 4.2 .. 5.0 ships on
(all of them use Python 3.11). Blender installs the wheels that match the user's platform when the extension is
installed.

The wheels are fetched once with ``pip download`` into a cache folder (default ``build/addon_wheels/``,
ignored by git) and reused by later builds and by the tests. ``--no-wheels`` builds a zip without them, for
environments that already have those packages (a fast local check); the real build is the default.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ADDON = ROOT / "blender_addon"
CLIENT_FILES = (ROOT / "backend" / "client.py", ROOT / "backend" / "protocol.py")
FORMATS = ROOT / "pla4d" / "formats"
VENDORED = {"pla4d_client", "pla4d_formats"}  # sub-packages the build writes (never taken from blender_addon/)
DEFAULT_CACHE = ROOT / "build" / "addon_wheels"

PYTHON_VERSION = "3.11"  # Blender 4.2 LTS, 4.5 LTS and 5.0 all embed CPython 3.11
# Pinned so that every build of one add-on version bundles the same bytes. plyfile 1.1.3 is the newest release that
# still accepts numpy 1.x (Blender 4.2 .. 5.0 ship numpy 1.26); it is pure Python (one py3-none-any wheel).
# pygltflib (the KHR_gaussian_splatting glTF container, pla4d/formats/khr_gltf.py) and its dependency closure: all pure
# Python but wrapt (one binary wheel per platform). Blender's Python has none of them: its site-packages hold numpy,
# requests (with certifi, charset-normalizer, idna, urllib3), zstandard, cython, autopep8, pycodestyle, toml, meson
# and setuptools, so packaging (marshmallow's dependency) comes along too.
PACKAGES = {
    "pyzmq": "27.3.0",
    "msgpack": "1.2.4",
    "plyfile": "1.1.3",
    "pygltflib": "1.16.5",
    "dataclasses-json": "0.6.7",
    "marshmallow": "3.26.2",  # dataclasses-json 0.6.7 needs marshmallow < 4
    "typing-inspect": "0.9.0",
    "mypy-extensions": "1.2.0",
    "typing-extensions": "4.16.0",
    "packaging": "26.4",
    "deprecated": "1.3.1",
    "wrapt": "2.5.2",
}
# Blender platform name -> pip --platform tags to ask for (first match wins; pip accepts compatible older tags).
PLATFORMS = {
    "windows-x64": ("win_amd64",),
    "macos-arm64": ("macosx_11_0_arm64",),
    "macos-x64": ("macosx_10_15_x86_64",),
    "linux-x64": ("manylinux_2_28_x86_64",),
}
# The wheel filename platform tags that serve each Blender platform (pyzmq ships one universal2 wheel for macOS).
_PLATFORM_TAG = {
    "windows-x64": re.compile(r"win_amd64"),
    "macos-arm64": re.compile(r"macosx_\d+_\d+_(arm64|universal2)"),
    "macos-x64": re.compile(r"macosx_\d+_\d+_(x86_64|universal2|intel)"),
    "linux-x64": re.compile(r"manylinux\w*_x86_64"),
}


class BuildError(RuntimeError):
    """The build cannot complete (a wheel could not be downloaded, the manifest is invalid); the message says why."""


def _wheel_for(cache: Path, package: str, version: str, platform: str) -> Path | None:
    """The cached wheel of ``package==version`` for a Blender platform and CPython 3.11, if there is one
    (a pure-Python ``py3-none-any`` or ``py2.py3-none-any`` wheel serves every platform). Wheel file names spell the
    project name normalised (``dataclasses_json``, ``deprecated``), so names are compared that way."""
    pattern = _PLATFORM_TAG[platform]
    name = re.sub(r"[-_.]+", "_", package).lower()
    py = "cp" + PYTHON_VERSION.replace(".", "")
    for path in sorted(cache.glob("*.whl")):
        parts = path.name[: -len(".whl")].split("-")
        if len(parts) < 5 or re.sub(r"[-_.]+", "_", parts[0]).lower() != name or parts[1] != version:
            continue
        tags = "-".join(parts[-3:])
        pure = tags.endswith("-none-any") and "py3" in parts[-3].split(".")
        if pure or ((f"{py}-{py}" in tags or "abi3" in tags) and pattern.search(tags)):
            return path
    return None


def fetch_wheels(cache: Path = DEFAULT_CACHE) -> list[Path]:
    """Every bundled wheel, downloading (once) the ones the cache lacks with ``pip download``.

    Returns the distinct wheel files (a universal2 wheel serves both macOS platforms and is listed once)."""
    cache.mkdir(parents=True, exist_ok=True)
    wheels: list[Path] = []
    for platform, pip_tags in PLATFORMS.items():
        for package, version in PACKAGES.items():
            found = _wheel_for(cache, package, version, platform)
            if found is None:
                cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                       "--only-binary=:all:", "--no-deps", "--implementation", "cp",
                       "--python-version", PYTHON_VERSION, "--dest", str(cache)]  # fmt: skip
                for tag in pip_tags:
                    cmd += ["--platform", tag]
                cmd.append(f"{package}=={version}")
                result = subprocess.run(cmd, capture_output=True, text=True)
                found = _wheel_for(cache, package, version, platform)
                if result.returncode != 0 or found is None:
                    raise BuildError(
                        f"could not download the {package}=={version} wheel for {platform} (Python {PYTHON_VERSION}):"
                        f"\n{result.stderr.strip()[-2000:]}"
                    )
            if found not in wheels:
                wheels.append(found)
    return wheels


def _manifest_text(source: str, wheels: list[str]) -> str:
    """The source manifest with the ``wheels`` and ``platforms`` keys of this build appended."""
    lines = [line for line in source.splitlines() if not re.match(r"\s*(wheels|platforms)\s*=", line)]
    # Top-level keys must come before the first table ([permissions]); insert ours there.
    first_table = next((i for i, line in enumerate(lines) if line.lstrip().startswith("[")), len(lines))
    extra = []
    if wheels:
        extra.append("platforms = [" + ", ".join(f'"{p}"' for p in PLATFORMS) + "]")
        extra.append("wheels = [")
        extra += [f'  "./wheels/{name}",' for name in wheels]
        extra.append("]")
    return "\n".join(lines[:first_table] + extra + [""] + lines[first_table:]) + "\n"


def _vendored_files(package: str, sources: list[Path], init: str | None = None) -> dict[str, bytes]:
    """``package/<name>`` -> the bytes of each source file, unchanged; refused when one imports backend or pla4d
    absolutely (the add-on has neither)."""
    files = {} if init is None else {f"{package}/__init__.py": init.encode()}
    for path in sources:
        data = path.read_bytes()
        if re.search(rb"^\s*(from|import) (backend|pla4d)\b", data, flags=re.MULTILINE):
            raise BuildError(f"{path.relative_to(ROOT)} imports backend or pla4d; the add-on cannot ship it")
        files[f"{package}/{path.name}"] = data
    return files


def vendored_sources() -> dict[str, bytes]:
    """The vendored sub-packages: zip path -> bytes. ``pla4d_formats`` is ``pla4d/formats/*.py`` as it is;
    ``pla4d_client`` is the client library (its ``__init__`` is written here: backend's own is the server's)."""
    client_init = '"""The pla4d backend client, vendored from backend/ by build_addon.py (do not edit)."""\n'
    return {
        **_vendored_files("pla4d_formats", sorted(FORMATS.glob("*.py"))),
        **_vendored_files("pla4d_client", list(CLIENT_FILES), client_init),
    }


def build(out_dir: Path, wheels: bool = True, cache: Path = DEFAULT_CACHE) -> Path:
    """Write the extension zip into ``out_dir`` and return its path."""
    source_manifest = (ADDON / "blender_manifest.toml").read_text()
    manifest = tomllib.loads(source_manifest)
    wheel_files = fetch_wheels(cache) if wheels else []
    text = _manifest_text(source_manifest, [w.name for w in wheel_files])
    tomllib.loads(text)  # the written manifest must stay valid TOML
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "" if wheels else "-nowheels"
    target = out_dir / f"{manifest['id']}-{manifest['version']}{suffix}.zip"
    tmp = target.with_name(target.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("blender_manifest.toml", text)
        for path in sorted(ADDON.rglob("*")):
            rel = path.relative_to(ADDON)
            if not path.is_file() or "__pycache__" in rel.parts or rel.parts[0] in (*VENDORED, "wheels"):
                continue
            if path.suffix == ".pyc" or rel.as_posix() == "blender_manifest.toml":
                continue
            archive.write(path, rel.as_posix())
        for name, data in vendored_sources().items():
            archive.writestr(name, data)
        for wheel in wheel_files:
            archive.write(wheel, f"wheels/{wheel.name}", compress_type=zipfile.ZIP_STORED)
    tmp.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output folder (default: dist/)")
    parser.add_argument("--no-wheels", action="store_true", help="leave out the bundled wheels (local checks)")
    parser.add_argument("--wheel-cache", type=Path, default=DEFAULT_CACHE, help="where downloaded wheels are kept")
    args = parser.parse_args(argv)
    try:
        print(build(args.out, wheels=not args.no_wheels, cache=args.wheel_cache))
    except BuildError as exc:
        print(f"build_addon: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
