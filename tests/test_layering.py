"""The one-way dependencies of BRIEF section 2, checked on the source and at import time."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "pla4d": {"bpy", "zmq", "msgpack", "backend", "blender_addon", "torchvision"},
    "backend": {"bpy", "blender_addon", "torchvision"},
    "blender_addon": {"torch", "pla4d", "torchvision", "numba"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_respect_layering(package):
    offenders = []
    for path in sorted((REPO / package).rglob("*.py")):
        bad = _imports(path) & FORBIDDEN[package]
        if bad:
            offenders.append(f"{path.relative_to(REPO)}: {sorted(bad)}")
    assert not offenders, "forbidden imports:\n" + "\n".join(offenders)


def test_cpu_path_never_imports_torchvision():
    code = (
        "import sys, pla4d.cli, pla4d.cameras, pla4d.render.gaussians, pla4d.render.mesh, pla4d.example.clip\n"
        "bad = [m for m in ('torchvision', 'bpy', 'zmq') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
