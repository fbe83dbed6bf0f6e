"""Gaussians in the standard 3DGS PLY layout, which the Inria code, gsplat's tools, SuperSplat, the Blender
3DGS add-ons and the web viewers all read.

One ``vertex`` element, binary little-endian float32 properties in this order::

    x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 f_rest_0 ... f_rest_{3K-1}
    opacity scale_0 scale_1 scale_2 rot_0 rot_1 rot_2 rot_3

``opacity`` is the logit, ``scale_*`` are log-scales, ``rot_*`` the (w, x, y, z) quaternion (not necessarily
normalised), ``nx ny nz`` are zeros, and ``f_rest`` is channel-major as 3DGS writes it (all red coefficients of
degrees >= 1, then green, then blue): ``f_rest_{c * K + k} = sh_rest[:, k, c]`` with ``K = (d+1)^2 - 1``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pla4d.gaussians.model import GaussianModel
from pla4d.runfolder import atomic_write_bytes

__all__ = ["load_ply", "ply_header", "save_ply"]

_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_FORMATS = {"binary_little_endian": "<", "binary_big_endian": ">", "ascii": None}
_REQUIRED = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
             "rot_0", "rot_1", "rot_2", "rot_3")  # fmt: skip


def _property_names(num_rest: int) -> list[str]:
    return [
        "x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2",
        *(f"f_rest_{i}" for i in range(3 * num_rest)),
        "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
    ]  # fmt: skip


def ply_header(num_gaussians: int, sh_degree: int = 0) -> bytes:
    """The header :func:`save_ply` writes for ``num_gaussians`` Gaussians of SH degree ``sh_degree``."""
    names = _property_names((sh_degree + 1) ** 2 - 1)
    lines = ["ply", "format binary_little_endian 1.0", f"element vertex {num_gaussians}"]
    lines += [f"property float {name}" for name in names]
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


def save_ply(model: GaussianModel, path: str | Path) -> Path:
    """Write ``model`` as a standard 3DGS PLY (see the module docstring), atomically: the data goes to a
    temporary file beside ``path`` that replaces ``path`` only once complete. Raises ValueError for
    non-finite parameters (3DGS viewers fail on them)."""
    path = Path(path)
    n, num_rest = model.num_gaussians, model.sh_rest.shape[1]
    with torch.no_grad():
        rest = model.sh_rest.detach().cpu().float().transpose(1, 2).reshape(n, 3 * num_rest)  # channel-major
        columns = [
            model.means.detach().cpu().float(),
            torch.zeros(n, 3),
            model.sh0.detach().cpu().float(),
            rest,
            model.opacity_logits.detach().cpu().float()[:, None],
            model.log_scales.detach().cpu().float(),
            model.quats.detach().cpu().float(),
        ]
        flat = torch.cat(columns, dim=1).numpy()
    if not np.isfinite(flat).all():
        bad = int((~np.isfinite(flat)).any(axis=1).sum())
        raise ValueError(f"{bad} of {n} Gaussians have non-finite parameters; not writing {path}")
    names = _property_names(num_rest)
    data = np.empty(n, dtype=np.dtype([(name, "<f4") for name in names]))
    data.view("<f4").reshape(n, len(names))[:] = flat

    atomic_write_bytes(path, ply_header(n, model.sh_degree) + data.tobytes())
    return path


def _parse_header(
    raw: bytes, path: Path
) -> tuple[str | None, list[tuple[str, int, list[tuple[str, str | None]]]], int]:
    """(byte order or None for ascii, [(element, count, [(property, numpy type or None for a list)])], data offset)."""
    if not raw.startswith(b"ply"):
        raise ValueError(f"{path} is not a PLY file")
    end = raw.find(b"end_header")
    if end < 0:
        raise ValueError(f"{path}: PLY header has no end_header")
    newline = raw.find(b"\n", end)
    if newline < 0:
        raise ValueError(f"{path}: truncated PLY header")
    text = raw[:end].decode("ascii", errors="replace")
    order: str | None = None
    fmt_seen = False
    elements: list[tuple[str, int, list[tuple[str, str | None]]]] = []
    for line in text.splitlines()[1:]:
        tokens = line.split()
        if not tokens or tokens[0] in ("comment", "obj_info"):
            continue
        if tokens[0] == "format":
            if len(tokens) < 2 or tokens[1] not in _FORMATS:
                raise ValueError(f"{path}: unsupported PLY format line {line!r}")
            order, fmt_seen = _FORMATS[tokens[1]], True
        elif tokens[0] == "element" and len(tokens) == 3:
            elements.append((tokens[1], int(tokens[2]), []))
        elif tokens[0] == "property" and elements:
            if tokens[1] == "list":
                elements[-1][2].append((tokens[-1], None))
            elif len(tokens) == 3 and tokens[1] in _TYPES:
                elements[-1][2].append((tokens[2], _TYPES[tokens[1]]))
            else:
                raise ValueError(f"{path}: bad PLY property line {line!r}")
        else:
            raise ValueError(f"{path}: bad PLY header line {line!r}")
    if not fmt_seen:
        raise ValueError(f"{path}: PLY header has no format line")
    return order, elements, newline + 1


def load_ply(path: str | Path) -> GaussianModel:
    """Read a 3DGS PLY (any byte order or ASCII, any scalar property types, extra properties ignored) into a
    float32 :class:`GaussianModel`. Raises ValueError for a PLY that does not hold 3DGS Gaussians."""
    path = Path(path)
    raw = path.read_bytes()
    order, elements, offset = _parse_header(raw, path)
    not_3dgs = f"{path} is not a 3DGS Gaussian PLY"
    names = [e[0] for e in elements]
    if "vertex" not in names:
        raise ValueError(f"{not_3dgs}: it has no vertex element")
    props = elements[names.index("vertex")][2]
    prop_names = [p for p, _ in props]
    missing = [p for p in _REQUIRED if p not in prop_names]
    if missing:
        raise ValueError(f"{not_3dgs}: the vertex element lacks {', '.join(missing)}")
    rest_ids = sorted(int(p[7:]) for p in prop_names if p.startswith("f_rest_") and p[7:].isdigit())
    num_rest, rem = divmod(len(rest_ids), 3)
    degree = round(np.sqrt(num_rest + 1)) - 1
    if rem or (degree + 1) ** 2 - 1 != num_rest or rest_ids != list(range(len(rest_ids))):
        raise ValueError(f"{not_3dgs}: {len(rest_ids)} f_rest_* properties do not make a whole SH degree")

    if order is None:
        table = _read_ascii(raw[offset:], elements, path)
    else:
        table = _read_binary(raw, offset, order, elements, path)

    def cols(*keys: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([table[k].astype(np.float32) for k in keys], axis=1))

    n = len(table["x"])
    rest = cols(*(f"f_rest_{i}" for i in range(3 * num_rest))) if num_rest else torch.zeros(n, 0)
    return GaussianModel(
        cols("x", "y", "z"),
        cols("rot_0", "rot_1", "rot_2", "rot_3"),
        cols("scale_0", "scale_1", "scale_2"),
        cols("opacity")[:, 0],
        cols("f_dc_0", "f_dc_1", "f_dc_2"),
        rest.reshape(n, 3, num_rest).transpose(1, 2).contiguous(),
    )


def _read_binary(raw: bytes, offset: int, order: str, elements: list, path: Path) -> dict[str, np.ndarray]:
    for name, count, props in elements:
        if any(t is None for _, t in props):
            raise ValueError(f"{path}: list properties in element {name!r} before the Gaussians are not supported")
        dtype = np.dtype([(p, order + t) for p, t in props])
        size = dtype.itemsize * count
        if offset + size > len(raw):
            raise ValueError(f"{path}: PLY data is truncated (element {name!r} needs {size} bytes)")
        if name == "vertex":
            arr = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
            return {p: arr[p] for p, _ in props}
        offset += size
    raise AssertionError("unreachable: the vertex element was checked to exist")


def _read_ascii(body: bytes, elements: list, path: Path) -> dict[str, np.ndarray]:
    lines = body.decode("ascii", errors="replace").splitlines()
    start = 0
    for name, count, props in elements:
        if name != "vertex":
            start += count
            continue
        if any(t is None for _, t in props):
            raise ValueError(f"{path}: list properties in the vertex element are not supported")
        rows = [line.split() for line in lines[start : start + count]]
        if len(rows) != count or any(len(r) != len(props) for r in rows):
            raise ValueError(f"{path}: ASCII PLY vertex data is truncated or malformed")
        arr = np.asarray(rows, dtype=np.float64).reshape(count, len(props))
        return {p: arr[:, i] for i, (p, _) in enumerate(props)}
    raise AssertionError("unreachable: the vertex element was checked to exist")
