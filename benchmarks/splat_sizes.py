"""Sizes on disk of one 4D asset in every splat export format (benchmarks/README.md, "Splat export sizes").

Usage: ``python benchmarks/splat_sizes.py RUN_OR_ASSET [--out DIR]``; prints one JSON line per format (bytes, files,
seconds) and a Markdown table. Writes into a temporary folder (or --out), never into the run."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from pla4d.asset.export import export_format
from pla4d.asset.format import read_asset, write_asset


def _size(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    folder = args.run / "asset" if (args.run / "asset" / "asset.json").is_file() else args.run
    asset = read_asset(folder)
    out = args.out or Path(tempfile.mkdtemp(prefix="splat_sizes."))
    rows = []
    for dtype in ("float32", "float16"):
        start = time.perf_counter()
        path = write_asset(out / f"asset_{dtype}", asset, dtype=dtype)
        files = [p for p in path.iterdir() if p.is_file() and not p.name.startswith("mesh_") and p.suffix != ".json"]
        files += [path / "asset.json"]
        rows.append((f"our asset ({dtype}, Gaussians only)", _size(files), len(files), time.perf_counter() - start))
    for name in ("ply-sequence", "spz-sequence", "khr-glb", "khr-glb-sequence", "spz"):
        start = time.perf_counter()
        target = out / name / ("x.glb" if name == "khr-glb" else "x.spz") if name in ("khr-glb", "spz") else out / name
        paths = export_format(asset, name, target)
        rows.append((name, _size(paths), len(paths), time.perf_counter() - start))
    print(json.dumps({"frames": asset.num_frames, "gaussians": int(asset.positions.shape[1]),
                      "animated": asset.animated}))  # fmt: skip
    ply = next(r[1] for r in rows if r[0] == "ply-sequence")
    print("| format | files | size | vs PLY sequence | write |")
    print("| --- | --- | --- | --- | --- |")
    for name, size, count, seconds in rows:
        print(f"| {name} | {count} | {size / 1e6:.2f} MB | {size / ply:.2f} | {seconds:.2f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
