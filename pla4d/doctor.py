"""`pla4d doctor`: what this machine can run, and what to do about each problem, in one short table.

Rows: Python and torch, CUDA devices and their compute capability, whether gsplat's CUDA kernels load and run
on this GPU (a tiny rasterization, in a child process: gsplat compiles its kernels on first use, prints while
it does, and a CUDA fault must not take the doctor down), nvdiffrast or the CPU mesh rasterizer, the Python
packages and models each preset needs, free disk in the model cache, whether the backend's port is free, and
the protocol the Blender add-on speaks. Exit code 0 when the chosen preset can run here (``--gpu``: and on the
GPU). :func:`facts` is the same information as a dict, for the backend's hello.

The engine never imports ``backend``: the protocol version is read from ``backend/protocol.py`` as text.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 5555
# Python packages each stage imports (module name, pip extra that brings it).
STAGE_PACKAGES = {
    "video": (("diffusers", "models"), ("transformers", "models"), ("accelerate", "models")),
    "matte": (("rembg", "models"), ("onnxruntime", "models")),
    "mesh": (("diffusers", "models"), ("transformers", "models"), ("skimage", "models")),
}
GSPLAT_PIN = "gsplat==1.5.3"

# The probe runs in a child process: a tiny CUDA op in torch, a 16 x 16 gsplat render, an nvdiffrast context.
_PROBE = r"""
import json, sys, traceback
out = {}
def attempt(name, fn):
    try:
        fn()
        out[name] = {"ok": True}
    except BaseException as exc:
        out[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
import torch
def torch_op():
    x = torch.ones(8, device="cuda")
    assert float((x * 2).sum()) == 16.0
attempt("torch", torch_op)
def gsplat_render():
    from gsplat import rasterization
    dev = torch.device("cuda")
    eye = torch.eye(4, device=dev)[None]
    eye[0, 2, 3] = 3.0
    K = torch.tensor([[[20.0, 0.0, 8.0], [0.0, 20.0, 8.0], [0.0, 0.0, 1.0]]], device=dev)
    rgb, alpha, _ = rasterization(torch.zeros(1, 3, device=dev), torch.tensor([[1.0, 0.0, 0.0, 0.0]], device=dev),
                                  torch.full((1, 3), 0.1, device=dev), torch.full((1,), 0.5, device=dev),
                                  torch.ones(1, 3, device=dev), eye, K, 16, 16)
    torch.cuda.synchronize()
    assert float(alpha.max()) > 0.1, "gsplat rendered nothing"
if out["torch"]["ok"]:
    attempt("gsplat", gsplat_render)
    def nvdiffrast_context():
        import nvdiffrast.torch as dr
        dr.RasterizeCudaContext()
    attempt("nvdiffrast", nvdiffrast_context)
print("PLA4D-PROBE " + json.dumps(out))
"""


# --------------------------------------------------------------------------------------------- facts


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _cuda_facts() -> dict[str, Any]:
    import torch

    devices = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            devices.append(
                {
                    "index": i,
                    "name": props.name,
                    "capability": f"{props.major}.{props.minor}",
                    "memory_gb": round(props.total_memory / 1e9, 1),
                }
            )
    arch_list = torch.cuda.get_arch_list() if torch.cuda.is_available() else []
    return {"available": bool(devices), "torch_cuda": torch.version.cuda, "devices": devices, "arch_list": arch_list}


_PROBED: dict[str, Any] = {}


def _run_probe(timeout: float) -> dict[str, Any]:
    """The child's verdict, once per process when it succeeds (the GPU and the installed kernels do not change
    under a running backend; a failed probe is tried again, e.g. after the user fixed it)."""
    if "ok" not in _PROBED:
        result = _probe_child(timeout)
        if "error" in result:
            return result
        _PROBED["ok"] = result
    return _PROBED["ok"]


def _probe_child(timeout: float) -> dict[str, Any]:
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"the CUDA probe did not finish in {timeout:.0f} s (a gsplat build that hangs?)"}
    for line in done.stdout.splitlines():
        if line.startswith("PLA4D-PROBE "):
            return json.loads(line[len("PLA4D-PROBE ") :])
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return {"error": f"the CUDA probe crashed (exit {done.returncode}): {' | '.join(tail)}"}


def gsplat_fix(error: str, capabilities: list[str], torch_cuda: str | None) -> str:
    """The fix for a gsplat kernel failure, from the error text."""
    arch = ";".join(dict.fromkeys(capabilities)) or "<compute capability>"
    build_dir = "~/.cache/torch_extensions/*/gsplat_cuda"
    rebuild = (
        f'rm -rf {build_dir}; TORCH_CUDA_ARCH_LIST="{arch}" pip install --force-reinstall --no-deps '
        f"--no-build-isolation --no-binary gsplat {GSPLAT_PIN}; then run `pla4d doctor` again (it builds the "
        "kernels for this GPU, a few minutes)"
    )
    low = error.lower()
    if "no kernel image" in low or "invalid device function" in low or "unsupported gpu architecture" in low:
        return f"gsplat's kernels were built for another GPU architecture: {rebuild}"
    if "no cuda toolkit" in low or "nonetype" in low or "cuda_home" in low or "nvcc" in low:
        return (
            f"gsplat compiles its CUDA kernels on first use and needs the CUDA toolkit {torch_cuda or ''} (nvcc) "
            f"for that: install it, set CUDA_HOME, then {rebuild}"
        )
    if "mismatches the version that was used to compile pytorch" in low:
        return f"the CUDA toolkit (nvcc) is not torch's CUDA {torch_cuda}: install toolkit {torch_cuda}, then {rebuild}"
    if "undefined symbol" in low:
        return f"gsplat's kernels were built against another torch: {rebuild}"
    if "out of memory" in low:
        return "the GPU is full: stop what else runs on it (nvidia-smi) and run `pla4d doctor` again"
    return f"see the error above; rebuilding usually helps: {rebuild}"


def _addon_facts() -> dict[str, Any]:
    """The protocol the add-on speaks (it vendors backend/protocol.py) and the add-on's version, read as text."""
    facts: dict[str, Any] = {"engine_version": _version("pla4d") or _engine_version()}
    spec = importlib.util.find_spec("backend") if _has_module("backend") else None
    protocol = Path(spec.origin).parent / "protocol.py" if spec is not None and spec.origin else None
    if protocol is not None and protocol.is_file():
        match = re.search(r"^PROTOCOL_VERSION\s*=\s*(\d+)", protocol.read_text(), re.M)
        facts["protocol_version"] = int(match.group(1)) if match else None
    manifest = Path(__file__).resolve().parents[1] / "blender_addon" / "blender_manifest.toml"
    if manifest.is_file():
        match = re.search(r'^version\s*=\s*"([^"]+)"', manifest.read_text(), re.M)
        facts["addon_version"] = match.group(1) if match else None
    return facts


def _engine_version() -> str:
    from pla4d import __version__

    return __version__


def _size_gb(size: str) -> float:
    """A registry size ("~29 GB (float32 files)", "176 MB") in GB; 0 when it gives no number."""
    match = re.search(r"([\d.]+)\s*(GB|MB)", size)
    return 0.0 if match is None else float(match.group(1)) / (1 if match.group(2) == "GB" else 1000)


def _models_facts() -> dict[str, Any]:
    from pla4d.config import PRESETS
    from pla4d.models import needed_models
    from pla4d.models.registry import locate

    presets = {}
    for name, preset in PRESETS.items():
        rows = []
        for spec in needed_models(preset):
            path, why = locate(spec)
            rows.append(
                {
                    "id": spec.id,
                    "kind": spec.kind,
                    "optional": spec.optional,
                    "present": path is not None,
                    "size": spec.size,
                    "size_gb": _size_gb(spec.size),
                    "problem": why or None,
                }
            )
        presets[name] = rows
    return presets


def _packages_facts() -> dict[str, bool]:
    names = {module for modules in STAGE_PACKAGES.values() for module, _ in modules}
    return {name: _has_module(name) for name in sorted(names)}


def facts(kernels: bool = True, kernel_timeout: float = 900.0) -> dict[str, Any]:
    """Everything the doctor knows, as JSON-able values (the backend's hello carries it). ``kernels``: run the CUDA
    probe (a child process; the first time gsplat compiles its kernels, which takes minutes, so a server should
    call it once at start-up, off its request loop, or pass ``kernels=False``; a probe that worked is cached)."""
    import torch

    from pla4d.models.hub import free_bytes, hf_cache_dir

    cuda = _cuda_facts()
    probe: dict[str, Any] = {}
    if cuda["available"] and kernels:
        probe = _run_probe(kernel_timeout)
    cache = hf_cache_dir()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": cuda,
        "probe": probe,
        "gsplat": {"version": _version("gsplat"), "installed": _has_module("gsplat")},
        "nvdiffrast": {"installed": _has_module("nvdiffrast")},
        "packages": _packages_facts(),
        "models": _models_facts(),
        "model_cache": {"path": str(cache), "free_gb": round(free_bytes(cache) / 1e9, 1)},
        "addon": _addon_facts(),
    }


# --------------------------------------------------------------------------------------------- checks


def port_free(host: str, port: int) -> bool:
    """Whether the backend could bind ``host:port`` (ZeroMQ sets SO_REUSEADDR, so a socket in TIME_WAIT is free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _row(name: str, status: str, value: str, fix: str = "") -> dict[str, str]:
    return {"check": name, "status": status, "value": value, "fix": fix}


def _gpu_rows(f: dict[str, Any]) -> list[dict[str, str]]:
    cuda, probe = f["cuda"], f["probe"]
    if not cuda["available"]:
        build = f"CUDA {cuda['torch_cuda']} build" if cuda["torch_cuda"] else "CPU-only build"
        return [
            _row(
                "cuda",
                "info",
                f"no CUDA device (torch {build}): everything runs on the CPU kernels",
                "" if cuda["torch_cuda"] else "for a GPU: install a CUDA build of torch 2.13.0 (README, GPU)",
            ),
            _row("gsplat", "info", f"{f['gsplat']['version'] or 'not installed'}; not used without CUDA"),
            _row(
                "nvdiffrast",
                "info",
                "CPU mesh rasterizer in use" + (" (nvdiffrast installed)" if f["nvdiffrast"]["installed"] else ""),
            ),
        ]
    caps = [d["capability"] for d in cuda["devices"]]
    names = ", ".join(
        f"cuda:{d['index']} {d['name']} (sm_{d['capability'].replace('.', '')}, {d['memory_gb']} GB)"
        for d in cuda["devices"]
    )
    rows = []
    if "error" in probe:
        return [
            _row(
                "cuda",
                "fail",
                f"{names}; {probe['error']}",
                "run `pla4d doctor` again; if it repeats, see the error (PLA4D_DEBUG=1 python -m pla4d.doctor)",
            )
        ]
    torch_ok = probe.get("torch", {}).get("ok", False)
    fix = ""
    if not torch_ok:
        unsupported = [c for c in caps if f"sm_{c.replace('.', '')}" not in cuda["arch_list"]]
        why = probe.get("torch", {}).get("error", "")
        if unsupported:
            why += (
                f"; this torch has kernels for {', '.join(cuda['arch_list'])}, not sm_{unsupported[0].replace('.', '')}"
            )
        fix = f"torch cannot run on this GPU ({why}): install a torch 2.13.0 build for it (https://pytorch.org)"
    rows.append(_row("cuda", "ok" if torch_ok else "fail", f"{names}; torch built for CUDA {cuda['torch_cuda']}", fix))
    if not f["gsplat"]["installed"]:
        rows.append(
            _row(
                "gsplat",
                "warn",
                "not installed: Gaussians render with the CPU kernel (slow)",
                "pip install 'pla4d[gpu]'",
            )
        )
    elif torch_ok:
        result = probe.get("gsplat", {})
        if result.get("ok"):
            rows.append(_row("gsplat", "ok", f"{f['gsplat']['version']}: CUDA kernels load and render on this GPU"))
        else:
            error = result.get("error", "not run")
            rows.append(
                _row(
                    "gsplat",
                    "fail",
                    f"{f['gsplat']['version']}: kernels fail: {error.splitlines()[0][:300]}",
                    gsplat_fix(error, caps, cuda["torch_cuda"]) + "; or run with --device cpu",
                )
            )
    result = probe.get("nvdiffrast", {})
    if not f["nvdiffrast"]["installed"]:
        rows.append(
            _row(
                "nvdiffrast",
                "warn",
                "not installed: meshes render with the CPU rasterizer (slower)",
                "pip install --no-build-isolation git+https://github.com/NVlabs/nvdiffrast",
            )
        )
    elif result.get("ok"):
        rows.append(_row("nvdiffrast", "ok", "CUDA context created: meshes render on the GPU"))
    else:
        rows.append(
            _row(
                "nvdiffrast",
                "warn",
                f"installed but fails ({result.get('error', 'not run')[:200]}): meshes render with the CPU rasterizer",
                "reinstall it with --no-build-isolation against this torch; it needs the CUDA toolkit (nvcc) and ninja",
            )
        )
    return rows


def _model_rows(f: dict[str, Any], chosen: str) -> tuple[list[dict[str, str]], float]:
    rows, need_gb = [], 0.0
    for name, models in f["models"].items():
        missing = [m for m in models if not m["present"] and not m["optional"]]
        optional = [m for m in models if not m["present"] and m["optional"]]
        gb = sum(m["size_gb"] for m in missing + optional)
        if name == chosen:
            need_gb = gb
        if not missing and not optional:
            rows.append(_row(f"models: {name}", "ok", "all present"))
            continue
        parts = []
        if missing:
            parts.append(
                "missing " + ", ".join(m["id"] for m in missing) + " (text-to-4D needs them; video-to-4D, "
                "lift and the demo run without)"
            )
        if optional:
            parts.append("optional, missing " + ", ".join(m["id"] for m in optional) + " (that refinement is off)")
        status = ("fail" if name == chosen else "warn") if missing else "info"
        rows.append(
            _row(f"models: {name}", status, "; ".join(parts), f"pla4d models pull --preset {name} (~{gb:.1f} GB)")
        )
    return rows, need_gb


def checks(f: dict[str, Any], preset: str, host: str, port: int) -> list[dict[str, str]]:
    """The table's rows from :func:`facts`: check, status (ok, info, warn, fail), value, fix."""
    rows = [_row("python", "ok", f"{f['python']} ({sys.executable})"), _row("torch", "ok", f["torch"])]
    rows += _gpu_rows(f)
    stages = set(STAGE_PACKAGES)
    absent = sorted({m for s in stages for m, _ in STAGE_PACKAGES[s] if not f["packages"].get(m)})
    rows.append(
        _row(
            "packages",
            "fail" if absent else "ok",
            f"missing {', '.join(absent)}"
            if absent
            else "diffusers, transformers, rembg, onnxruntime, scikit-image present",
            "pip install 'pla4d[models]'" if absent else "",
        )
    )
    model_rows, need_gb = _model_rows(f, preset)
    rows += model_rows
    free = f["model_cache"]["free_gb"]
    short = need_gb > free
    rows.append(
        _row(
            "disk",
            "warn" if short else "ok",
            f"{free:.1f} GB free in {f['model_cache']['path']}"
            + (f"; the {preset} preset's missing models need ~{need_gb:.1f} GB" if need_gb else ""),
            "free space or point HF_HUB_CACHE at a larger disk" if short else "",
        )
    )
    free_port = port_free(host, port)
    rows.append(
        _row(
            "backend port",
            "ok" if free_port else "warn",
            f"{host}:{port} " + ("free" if free_port else "in use (a backend already running, or another program)"),
            "" if free_port else f"stop it, or start the backend elsewhere: pla4d-backend --bind tcp://{host}:<port>",
        )
    )
    addon = f["addon"]
    protocol = addon.get("protocol_version")
    rows.append(
        _row(
            "add-on",
            "ok" if protocol is not None else "warn",
            f"pla4d {addon['engine_version']} serves protocol v{protocol}; the add-on"
            f"{' ' + addon['addon_version'] if addon.get('addon_version') else ''} built from this tree "
            f"speaks v{protocol}"
            if protocol is not None
            else "backend/protocol.py not found",
            "" if protocol is not None else "pip install 'pla4d[backend]' from the same checkout",
        )
    )
    return rows


def verdict(rows: list[dict[str, str]], gpu: bool) -> tuple[bool, bool]:
    """(the preset can run here, the GPU path works: torch on CUDA and gsplat's kernels)."""
    can_run = not any(r["status"] == "fail" for r in rows)
    gpu_ready = all(any(r["check"] == name and r["status"] == "ok" for r in rows) for name in ("cuda", "gsplat"))
    return can_run and (gpu_ready or not gpu), gpu_ready


def render_table(rows: list[dict[str, str]]) -> str:
    width = max(len(r["check"]) for r in rows)
    lines = []
    for r in rows:
        lines.append(f"{r['check']:<{width}}  {r['status']:<4}  {r['value']}")
        if r["fix"]:
            lines.append(f"{'':<{width}}        fix: {r['fix']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- command


def add_parser(subparsers: Any) -> None:
    """``pla4d doctor`` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "doctor",
        help="what this machine can run (GPU, kernels, models, disk, port) and how to fix each problem",
        description="Check Python/torch, CUDA devices, gsplat's kernels on this GPU (a tiny render), nvdiffrast, "
        "each preset's packages and models, free disk in the model cache, the backend port and the add-on's "
        "protocol. Exit code 0 when the chosen preset can run here.",
    )
    _arguments(parser)
    parser.set_defaults(handler=run)


def _arguments(parser: argparse.ArgumentParser) -> None:
    from pla4d.config import PRESETS

    parser.add_argument("--preset", default="draft", choices=list(PRESETS), help="the preset to judge (default: draft)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"backend port to check (default {DEFAULT_PORT})"
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"backend host to check (default {DEFAULT_HOST})")
    parser.add_argument("--gpu", action="store_true", help="exit 1 unless torch runs on CUDA and gsplat's kernels work")
    parser.add_argument("--json", action="store_true", help="facts, rows and verdict as JSON")
    parser.add_argument("--no-kernels", action="store_true", help="skip the CUDA probe (no gsplat build)")
    parser.add_argument(
        "--kernel-timeout",
        type=float,
        default=900.0,
        help="seconds the CUDA probe may take (gsplat's first build takes minutes; default 900)",
    )


def run(args: argparse.Namespace) -> int:
    known = facts(kernels=not args.no_kernels, kernel_timeout=args.kernel_timeout)
    rows = checks(known, args.preset, args.host, args.port)
    can_run, gpu_ready = verdict(rows, args.gpu)
    if args.json:
        print(
            json.dumps(
                {"preset": args.preset, "can_run": can_run, "gpu_ready": gpu_ready, "checks": rows, "facts": known},
                indent=1,
            )
        )
    else:
        print(render_table(rows))
        what = f"text-to-4D with the {args.preset} preset" + (" on the GPU" if args.gpu else "")
        print(f"\n{what} {'can' if can_run else 'cannot'} run here" + ("" if can_run else ": fix the 'fail' rows"))
    return 0 if can_run else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pla4d doctor", description=__doc__.splitlines()[0])
    _arguments(parser)
    args = parser.parse_args(argv)
    if os.environ.get("PLA4D_DEBUG"):
        return run(args)
    try:
        return run(args)
    except Exception as exc:  # the doctor itself must not end in a traceback
        print(f"pla4d doctor: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
