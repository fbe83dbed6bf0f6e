"""The panel's lines on what the backend's machine can run (blender_addon/server_facts.py, no bpy), from the
engine's own doctor facts."""

from __future__ import annotations

import importlib.util
import sys

from conftest import REPO


def _load():
    spec = importlib.util.spec_from_file_location("pla4d_addon_server_facts", REPO / "blender_addon" /
                                                  "server_facts.py")  # fmt: skip
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


facts = _load()


def test_lines_from_this_machines_doctor_facts() -> None:
    from pla4d.doctor import facts as doctor_facts

    machine = doctor_facts(kernels=False)
    lines = facts.machine_lines(machine, "draft")
    assert lines[0].startswith("CPU only")  # this machine has no CUDA device
    assert any("nvdiffrast not installed" in line for line in lines)
    missing = [m["id"] for m in machine["models"]["draft"] if not m["present"] and not m["optional"]]
    assert (missing and any(m in lines[-1] for m in missing)) or not missing
    assert facts.machine_lines(None, "draft") == []  # an older server sends no facts


def test_a_gpu_machine_and_its_kernel_probe() -> None:
    gpu = {"cuda": {"devices": [{"name": "NVIDIA H100", "capability": "9.0", "memory_gb": 85.0}]},
           "nvdiffrast": {"installed": True}, "models": {"draft": []}}  # fmt: skip
    assert facts.machine_lines({**gpu, "probe": {"torch": {"ok": True}, "gsplat": {"ok": True}}}, "draft") == [
        "GPU: NVIDIA H100 (compute 9.0, 85.0 GB); gsplat kernels ok"
    ]
    broken = {"torch": {"ok": True}, "gsplat": {"ok": False, "error": "no kernel image is available"}}
    line = facts.machine_lines({**gpu, "probe": broken}, "draft")[0]
    assert "gsplat kernels fail (no kernel image is available): pla4d doctor" in line
