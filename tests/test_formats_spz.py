"""SPZ through gsply (pla4d.formats.spz): the file's layout against Niantic's spec (header and section sizes, read
by hand), the round trip through gsply's own reader within the stated quantisation per field, and the size
against a 3DGS PLY of the same Gaussians."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from pla4d.formats.ply import write_gaussian_ply
from pla4d.formats.spz import SpzError, read_spz, write_spz

gsply = pytest.importorskip("gsply")


def gaussians(n: int = 200, seed: int = 0, degree: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "positions": rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        "rotations": rng.normal(size=(n, 4)).astype(np.float32) * 3.0,
        "scales": rng.uniform(-7, -2, (n, 3)).astype(np.float32),
        "opacities": rng.uniform(-5, 5, n).astype(np.float32),
        "sh_dc": rng.uniform(-1.7, 1.7, (n, 3)).astype(np.float32),
        "sh_rest": rng.uniform(-0.5, 0.5, (n, (degree + 1) ** 2 - 1, 3)).astype(np.float32),
    }


def test_layout_matches_niantic_spec(tmp_path: Path) -> None:
    g = gaussians(n=64)
    raw = gzip.decompress(write_spz(tmp_path / "a.spz", **g).read_bytes())
    magic, version, n, degree, fractional, flags, _reserved = struct.unpack_from("<IIIBBBB", raw, 0)
    assert (magic, version, n, degree, fractional, flags) == (0x5053474E, 3, 64, 1, 12, 0)
    # positions 9 + alpha 1 + colour 3 + scale 3 + rotation 4 (v3 smallest-three) + SH 3 coefficients x 3 bytes
    assert len(raw) == 16 + n * (9 + 1 + 3 + 3 + 4 + 9)
    # First Gaussian's x: 24-bit signed fixed point with 12 fractional bits, little-endian.
    x = int.from_bytes(raw[16:19], "little", signed=True) / 4096.0
    assert abs(x - g["positions"][0, 0]) <= 0.5 / 4096 + 1e-7


def test_round_trip_within_stated_quantisation(tmp_path: Path) -> None:
    g = gaussians()
    path = write_spz(tmp_path / "a.spz", **g)
    back = gsply.read_spz(path)  # the library's own reader, not our wrapper
    ours = read_spz(path)
    np.testing.assert_array_equal(ours["positions"], back.means)
    assert np.abs(back.means - g["positions"]).max() <= 0.5 / 4096 + 1e-7
    alpha = 1 / (1 + np.exp(-g["opacities"]))
    assert np.abs(1 / (1 + np.exp(-back.opacities)) - alpha).max() <= 0.5 / 255 + 1e-6
    assert np.abs(back.sh0 - g["sh_dc"]).max() <= 0.5 / (0.15 * 255) + 1e-6
    assert np.abs(back.scales - g["scales"]).max() <= 0.5 / 16 + 1e-6
    q = g["rotations"] / np.linalg.norm(g["rotations"], axis=1, keepdims=True)
    q_back = back.quats * np.sign(np.sum(back.quats * q, axis=1, keepdims=True))  # q and -q are one rotation
    assert np.abs(q_back - q).max() <= 2e-3
    assert np.degrees(2 * np.arccos(np.clip(np.abs(np.sum(back.quats * q, axis=1)), 0, 1))).max() <= 0.25
    assert np.abs(back.shN - g["sh_rest"]).max() <= 0.5 / 128 + 1e-6


def test_smaller_than_ply(tmp_path: Path) -> None:
    g = gaussians(n=2000, degree=0)
    spz = write_spz(tmp_path / "a.spz", **g).stat().st_size
    ply = write_gaussian_ply(tmp_path / "a.ply", **g).stat().st_size
    assert spz < ply / 3, (spz, ply)  # 20 of 68 bytes per Gaussian before gzip; random data hardly compresses


def test_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.spz"
    bad.write_bytes(b"ply\nformat")
    with pytest.raises(SpzError, match="not an SPZ file"):
        read_spz(bad)
    g = gaussians(n=4)
    g["scales"][0, 0] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        write_spz(tmp_path / "x.spz", **g)
    assert not (tmp_path / "x.spz").exists()
