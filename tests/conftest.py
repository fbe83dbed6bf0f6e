from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def bench_dir() -> Path:
    """The shared benchmark clips (``../shared/bench`` beside the checkout, or $PLA4D_BENCH_DIR)."""
    return Path(os.environ.get("PLA4D_BENCH_DIR", REPO.parent / "shared" / "bench"))


def bench_clips() -> list[Path]:
    root = bench_dir()
    return sorted(p for p in root.iterdir() if (p / "cameras.json").is_file()) if root.is_dir() else []


@pytest.fixture(scope="session")
def clips() -> list[Path]:
    found = bench_clips()
    if not found:
        pytest.skip(f"benchmark clips not found at {bench_dir()}")
    return found
