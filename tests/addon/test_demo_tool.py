"""The README's demo drives the add-on through tools/blender_demo.py: every add-on function it calls exists (a split
of the add-on's modules once left it calling a module that was gone; the full run needs bpy and minutes)."""

from __future__ import annotations

import ast

from conftest import REPO


def test_every_addon_function_the_demo_calls_exists() -> None:
    tree = ast.parse((REPO / "tools" / "blender_demo.py").read_text())
    calls = {
        (node.value.attr, node.attr)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id == "addon"
    }
    assert calls, "the demo no longer calls the add-on?"
    for module, name in sorted(calls):
        path = REPO / "blender_addon" / f"{module}.py"
        assert path.is_file(), f"tools/blender_demo.py calls addon.{module}.{name}: no blender_addon/{module}.py"
        defined = {n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
        assert name in defined, f"tools/blender_demo.py calls addon.{module}.{name}, which {path.name} lacks"
