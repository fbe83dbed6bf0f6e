"""Static-stage benchmark: ``pla4d eval`` on every clip, with the paper's ablations (Fig. 5 as numbers).

Runs, per clip: the full method, without focal alignment (fixed fov 49.1), and without GS-mesh contrastive
learning (front view only); each in its own process so wall time and peak memory are per run. Appends the JSON
lines to ``benchmarks/results/static_<preset>.jsonl`` with a "variant" field and prints a table.

Usage: ``OMP_WAIT_POLICY=PASSIVE python benchmarks/static_eval.py [--preset draft] [--clips a,b]
[--variants full,no_focal,no_contrastive] [--bench-dir DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "full": [],
    "no_focal": ["--no-focal-alignment"],
    "no_contrastive": ["--no-contrastive"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="draft")
    parser.add_argument("--clips", default=None, help="comma-separated clip names (default: all)")
    parser.add_argument("--variants", default="full,no_focal,no_contrastive")
    parser.add_argument("--bench-dir", default=os.environ.get("PLA4D_BENCH_DIR", str(REPO.parent / "shared" / "bench")))
    parser.add_argument("--out", default=None, help="results file (default: benchmarks/results/static_PRESET.jsonl)")
    args = parser.parse_args()

    bench = Path(args.bench_dir)
    clips = sorted(p for p in bench.iterdir() if (p / "cameras.json").is_file())
    if args.clips:
        wanted = set(args.clips.split(","))
        clips = [c for c in clips if c.name in wanted]
    results = Path(args.out or REPO / "benchmarks" / "results" / f"static_{args.preset}.jsonl")
    results.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for clip in clips:
        for variant in args.variants.split(","):
            cmd = [
                sys.executable,
                "-m",
                "pla4d",
                "eval",
                str(clip),
                "--preset",
                args.preset,
                "--method",
                "static",
                "--out",
                str(REPO / "out" / "bench_static" / args.preset / clip.name / variant),
                *VARIANTS[variant],
            ]
            if variant == "full":
                cmd.append("--baseline")
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return proc.returncode
            for line in proc.stdout.splitlines():
                record = json.loads(line)
                record["variant"] = variant if record["method"] == "pla4d" else "baseline"
                rows.append(record)
                with results.open("a") as handle:
                    handle.write(json.dumps(record) + "\n")
                print(
                    f"{clip.name:<18} {record['variant']:<15} PSNR {record['psnr']:6.2f}  SSIM {record['ssim']:.4f}  "
                    f"LPIPS {record['lpips']:.4f}  IoU {record['iou']:.4f}  {record['seconds']:7.1f}s  "
                    f"{record['peak_mb']:7.0f} MB",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
