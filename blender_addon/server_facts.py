"""What the backend's machine can run, from the ``machine`` facts of its hello (``pla4d doctor``'s facts), as short
lines for the panel. No bpy: the tests read it as it is."""

from __future__ import annotations

from typing import Any


def machine_lines(machine: dict[str, Any] | None, preset: str) -> list[str]:
    """Lines such as ``GPU: NVIDIA H100 (compute 9.0, 80 GB); gsplat kernels ok`` and the models ``preset``
    lacks; an empty list for a server that sends no facts."""
    if not machine:
        return []
    cuda = machine.get("cuda") or {}
    devices = cuda.get("devices") or []
    if devices:
        names = ", ".join(f"{d.get('name', '?')} (compute {d.get('capability', '?')}, {d.get('memory_gb', '?')} GB)"
                          for d in devices)  # fmt: skip
        lines = [f"GPU: {names}; {_kernels(machine.get('probe') or {})}"]
    else:
        lines = ["CPU only (no CUDA device): jobs train on the CPU kernels, minutes per draft job"]
    if not (machine.get("nvdiffrast") or {}).get("installed"):
        lines.append("mesh renders: the CPU rasterizer (nvdiffrast not installed)")
    models = (machine.get("models") or {}).get(preset) or []
    missing = [m.get("id", "?") for m in models if not m.get("present") and not m.get("optional")]
    if missing:
        lines.append(f"text jobs with {preset} need: {', '.join(missing)} (pla4d models pull --preset {preset})")
    return lines


def _kernels(probe: dict[str, Any]) -> str:
    """The doctor's CUDA probe (a tiny gsplat render in a child process) in a few words."""
    if "error" in probe:
        return f"CUDA check failed: {probe['error']}"
    gsplat = probe.get("gsplat")
    if gsplat is None:
        return "gsplat kernels not checked yet"
    return (
        "gsplat kernels ok" if gsplat.get("ok") else f"gsplat kernels fail ({gsplat.get('error', '?')}): pla4d doctor"
    )
