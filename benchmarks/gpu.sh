#!/usr/bin/env bash
# The one script for a lent GPU (issue 18): about 15 minutes of device time for the whole task, so everything runs
# in one call, in order of value, each stage with its own time limit, and what it measured lands in $OUT.
#
#   bash benchmarks/gpu.sh                 # on the GPU machine, from the repository root
#   DRY_RUN=1 bash benchmarks/gpu.sh       # anywhere without CUDA: every stage runs its plumbing on the CPU, briefly
#
# Stages:
#   1. CUDA-only tests (tests/test_cuda.py: dense backward vs the edge path in float32/float64, CompileOrEager,
#      bf16 autocast) plus the train/report tests on the GPU's torch;
#   2. quick mode of every chapter with --device cuda (times and claims) -- needs the notebook stack
#      (papermill, plotly, pymatgen, ...); when it is missing the stage says which packages to carry as wheels;
#   3. full mode (--scale full --device cuda) of as many chapters as fit in the time left (STAGE3_S seconds).
# Results: $OUT/gpu.log (everything), $OUT/tests.txt, $OUT/quick/results.json, $OUT/full/results.json and
# $OUT/results-gpu.md (the table for benchmarks/results-gpu.md, with the GPU model).
set -uo pipefail
OUT=${OUT:-build/gpu}
PY=${PYTHON:-python3}
DRY_RUN=${DRY_RUN:-0}
STAGE1_S=${STAGE1_S:-180}
STAGE2_S=${STAGE2_S:-420}
STAGE3_S=${STAGE3_S:-300}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/gpu.log"; }

log "stage 0: machine"
"$PY" - <<'EOF' 2>&1 | tee "$OUT/machine.txt" | tee -a "$OUT/gpu.log"
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, f"{p.total_memory / 2**30:.0f} GiB", "bf16", torch.cuda.is_bf16_supported())
EOF
HAS_CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))")
if [ "$HAS_CUDA" != 1 ] && [ "$DRY_RUN" != 1 ]; then
  log "no CUDA device: nothing to measure (DRY_RUN=1 checks the plumbing on a CPU)"; exit 2
fi
DEVICE=cuda; [ "$HAS_CUDA" = 1 ] || DEVICE=cpu

log "stage 1: CUDA tests (limit ${STAGE1_S}s)"
timeout "$STAGE1_S" "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py tests/test_train_report.py \
  tests/test_smoke.py 2>&1 | tee "$OUT/tests.txt" | tail -25 | tee -a "$OUT/gpu.log"
S1=${PIPESTATUS[0]}
log "stage 1 exit $S1"

MISSING=$("$PY" - <<'EOF'
import importlib.util
need = ["papermill", "nbformat", "ipykernel", "plotly", "ipywidgets", "pymatgen", "ase", "spglib", "mlxtend",
        "qm9pack", "matminer", "chgnet", "jplephem", "de421", "nglview", "psutil"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
EOF
)
if [ -n "$MISSING" ]; then
  log "stages 2-3 skipped: the notebook stack is missing ($MISSING). Carry them as wheels (see the device tool's"
  log "README: pip download --no-deps --only-binary=:all: ... -d .whl) and install into /tmp/site first."
else
  SCALE_FLAGS=""; [ "$DRY_RUN" = 1 ] && SCALE_FLAGS="--smoke"
  log "stage 2: quick mode, every chapter, --device $DEVICE (limit ${STAGE2_S}s)"
  timeout "$STAGE2_S" "$PY" -m symviz run --scale quick --device "$DEVICE" --no-html --out "$OUT/quick" \
    $SCALE_FLAGS 2>&1 | tee -a "$OUT/gpu.log" | tail -40
  log "stage 2 exit ${PIPESTATUS[0]}"
  log "stage 3: full mode, chapters in order until ${STAGE3_S}s are spent"
  timeout "$STAGE3_S" "$PY" -m symviz run --scale full --device "$DEVICE" --no-html --out "$OUT/full" \
    $([ "$DRY_RUN" = 1 ] && echo --smoke) 2>&1 | tee -a "$OUT/gpu.log" | tail -40
  log "stage 3 exit ${PIPESTATUS[0]} (124: the time limit stopped it; results.json lists what finished)"
fi

"$PY" - "$OUT" <<'EOF' | tee "$OUT/results-gpu.md"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
print("# symviz on a GPU\n")
print("Machine: " + (out / "machine.txt").read_text().strip().replace("\n", "; ") + "\n")
tests = (out / "tests.txt").read_text().strip().splitlines() if (out / "tests.txt").exists() else []
print("CUDA tests: " + (tests[-1] if tests else "not run") + "\n")
for stage in ("quick", "full"):
    f = out / stage / "results.json"
    if not f.exists():
        print(f"{stage}: no results (skipped or stopped before the first chapter finished)\n")
        continue
    data = json.loads(f.read_text())
    print(f"## {stage} mode, device {data['device']}{' (smoke)' if data.get('smoke') else ''}\n")
    print("| chapter | status | seconds | peak MB | claims holding |\n|---|---|---:|---:|---|")
    for r in data["chapters"]:
        n = sum(c["holds"] for c in r["claims"])
        print(f"| {r['name']} | {r['status']} | {r['seconds']} | {r['peak_rss_mb']} | {n}/{len(r['claims'])} |")
    print()
EOF
log "done: $OUT/results-gpu.md"
