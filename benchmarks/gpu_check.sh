#!/usr/bin/env bash
# The first run on a GPU machine, in one go (about 8 minutes on one H100; gsplat's first kernel build is most of
# it). Run from the repository root, in the Python environment that has a CUDA build of torch 2.13.0:
#
#     bash benchmarks/gpu_check.sh
#
# Steps: install the GPU extras; check that torch sees CUDA; `pla4d doctor --gpu` (builds and runs gsplat's
# kernels on this GPU); the `gpu`-marked tests (gsplat vs the CPU kernels); `pla4d bench raster` on CUDA; the static
# and the 4D draft on one public clip with --device cuda. Every figure goes to benchmarks/results/*_gpu.jsonl, one
# JSON line per record, each with the GPU's name and the commit. The first step that breaks stops the script and is
# named. Environment: PYTHON (default: python), PLA4D_BENCH_DIR (default: ../shared/bench), GPU_CHECK_CLIP (default:
# khr_fox_walk), GPU_CHECK_SKIP_INSTALL=1 (environment already set up), GPU_CHECK_NVDIFFRAST=1 (also build nvdiffrast
# from GitHub; it is not on PyPI).
set -euo pipefail

PY=${PYTHON:-python}
BENCH=${PLA4D_BENCH_DIR:-../shared/bench}
CLIP=${GPU_CHECK_CLIP:-khr_fox_walk}
RESULTS=benchmarks/results
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pla4d-gpu-check.XXXXXX")
STEP="start"
STARTED=$(date +%s)

trap 'echo; echo "gpu_check: FAILED at step: ${STEP} (see the output above)" >&2' ERR

step() {
    STEP=$1
    STEP_STARTED=$(date +%s)
    echo
    echo "=== gpu_check: ${STEP} ($(($(date +%s) - STARTED)) s elapsed)"
}

# Appends JSON lines from stdin to $1, each with the device, the commit and the step's name.
record() {
    "$PY" - "$1" "$STEP" <<'EOF'
import json, subprocess, sys
import torch
path, step = sys.argv[1], sys.argv[2]
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
with open(path, "a") as out:
    for line in sys.stdin:
        line = line.strip()
        if line.startswith("{"):
            rec = json.loads(line)
            rec.update({"gpu": device, "commit": commit or None, "gpu_check_step": step})
            out.write(json.dumps(rec) + "\n")
            print(json.dumps({k: rec[k] for k in list(rec)[:8]}))
EOF
}

timing() {
    echo "{\"step\": \"${STEP}\", \"seconds\": $(($(date +%s) - STEP_STARTED))}" | record "$RESULTS/gpu_check_gpu.jsonl"
}

[ -f pyproject.toml ] && [ -d pla4d ] || { echo "gpu_check: run me from the repository root" >&2; exit 2; }
mkdir -p "$RESULTS"

if [ "${GPU_CHECK_SKIP_INSTALL:-0}" != 1 ]; then
    step "install the GPU extras (pip install -e .[gpu,dev])"
    "$PY" -m pip install -q -e ".[gpu,dev]"
    if [ "${GPU_CHECK_NVDIFFRAST:-0}" = 1 ]; then
        "$PY" -m pip install -q --no-build-isolation "git+https://github.com/NVlabs/nvdiffrast"
    fi
fi

step "CUDA check (torch sees a GPU)"
"$PY" - <<'EOF'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: torch {torch.__version__} sees no CUDA device (torch.version.cuda={torch.version.cuda}): "
             "install a CUDA build of torch 2.13.0 for this driver, or run this on a machine with a GPU")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i} {p.name}, sm_{p.major}{p.minor}, {p.total_memory / 1e9:.1f} GB, torch {torch.__version__}")
EOF
timing

step "pla4d doctor --gpu (builds gsplat's kernels for this GPU the first time)"
if "$PY" -m pla4d doctor --help >/dev/null 2>&1; then DOCTOR=("$PY" -m pla4d doctor); else DOCTOR=("$PY" -m pla4d.doctor); fi
# Exit code 1 can mean "models missing" (no weights on a fresh machine): the GPU verdict is checked below.
"${DOCTOR[@]}" --gpu --json >"$WORK/doctor.json" || true
"$PY" - "$WORK/doctor.json" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
for r in report["checks"]:
    print(f"{r['check']:<17} {r['status']:<4}  {r['value']}" + (f"\n{'':<23}fix: {r['fix']}" if r["fix"] else ""))
summary = {"gpu_ready": report["gpu_ready"], "checks": {c["check"]: c["status"] for c in report["checks"]},
           "cuda": report["facts"]["cuda"], "probe": report["facts"]["probe"]}
with open(sys.argv[1] + ".summary", "w") as out:
    out.write(json.dumps(summary) + "\n")
if not report["gpu_ready"]:
    sys.exit("gpu_check: the GPU path does not work here (cuda/gsplat rows above say why and how to fix it)")
EOF
record "$RESULTS/doctor_gpu.jsonl" <"$WORK/doctor.json.summary"
timing

step "gpu-marked tests (gsplat and nvdiffrast parity with the CPU kernels)"
"$PY" -m pytest -m gpu -q -rs -p no:cacheprovider --junitxml="$WORK/gpu_tests.xml" tests
"$PY" - "$WORK/gpu_tests.xml" <<'EOF' | record "$RESULTS/tests_gpu.jsonl"
import json, sys, xml.etree.ElementTree as ET
suite = ET.parse(sys.argv[1]).getroot()
suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
print(json.dumps({"what": "pytest -m gpu", **n, "passed": n["tests"] - n["failures"] - n["errors"] - n["skipped"],
                  "seconds": float(suite.get("time", 0))}))
if n["tests"] == n["skipped"]:
    sys.exit("gpu_check: every gpu test was skipped: the GPU kernels did not load")
EOF
timing

step "pla4d bench raster --device cuda"
"$PY" -m pla4d bench raster --device cuda --backend gsplat --repeats 5 | record "$RESULTS/raster_bench_gpu.jsonl"
timing

[ -d "$BENCH/$CLIP" ] || { STEP="find the benchmark clip"; echo "gpu_check: no clip at $BENCH/$CLIP (set PLA4D_BENCH_DIR)" >&2; exit 1; }

step "static draft on $CLIP (--device cuda)"
"$PY" -m pla4d eval "$BENCH/$CLIP" --preset draft --frames all --baseline --device cuda --method static \
    --out "$WORK/static" | record "$RESULTS/static_draft_gpu.jsonl"
timing

step "4D draft on $CLIP (--device cuda)"
"$PY" -m pla4d eval "$BENCH/$CLIP" --preset draft --frames all --baseline --device cuda \
    --out "$WORK/motion" | record "$RESULTS/motion_draft_gpu.jsonl"
timing

STEP="done"
echo
echo "gpu_check: all steps passed in $(($(date +%s) - STARTED)) s; figures in $RESULTS/*_gpu.jsonl; runs in $WORK"
