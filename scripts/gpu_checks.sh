#!/usr/bin/env bash
# The GPU checks in one call: the CUDA tests (pytest tests -k cuda), the GPU benchmark (focal
# loss with peak memory against fvcore / torchvision / Detectron2's loss path, a training step
# at COCO resolution and inference against Detectron2's RetinaNet) and torch.compile's
# recompilation counts over batches of other image sizes, all in one JSON file. Sized to
# finish within 8 minutes: no section starts after --budget-s (default 450 s).
#
# On the lent GPU machine (no registry, no install: env.sh puts Detectron2 main and this
# checkout on PYTHONPATH), from the repository root, as ONE device call:
#
#     source ../shared/gpu/env.sh && bash scripts/gpu_checks.sh --output $OUT/gpu.json
#
# Elsewhere: bash scripts/gpu_checks.sh --output gpu.json [tools/gpu_checks.py options].
# Without CUDA every section is skipped with its reason in the JSON (a dry run, exit 0).
# Exit status: that of tools/gpu_checks.py (1: a test failed or a section stopped with an
# error); if it could not even start (an import failed), a JSON with the error is written.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${PYTHON:-}" ]; then
    PY="$PYTHON"
elif [ -x "$ROOT/.venv/bin/python" ]; then
    PY="$ROOT/.venv/bin/python"
else
    PY=python3  # the GPU machine: no virtual environment
fi
OUTPUT=""
prev=""
for arg in "$@"; do  # the --output path, for the fallback report below
    if [ "$prev" = "--output" ]; then OUTPUT="$arg"; fi
    case "$arg" in --output=*) OUTPUT="${arg#--output=}" ;; esac
    prev="$arg"
done
if [ -z "$OUTPUT" ]; then
    echo "usage: bash scripts/gpu_checks.sh --output PATH.json [tools/gpu_checks.py options]" >&2
    exit 2
fi
mkdir -p "$(dirname "$OUTPUT")"
# the project and (on the GPU machine) Detectron2 main from PYTHONPATH; no install needed
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT"
LOG="$(mktemp)"
"$PY" tools/gpu_checks.py "$@" 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
if [ ! -s "$OUTPUT" ]; then
    # it stopped before writing anything (e.g. a package missing at import): say so in the JSON
    fallback='import json, sys
out, status, log = sys.argv[1], int(sys.argv[2]), open(sys.argv[3], errors="replace").read()
json.dump({"error": "tools/gpu_checks.py stopped before writing its report",
           "exit_status": status, "output_tail": log[-6000:]}, open(out, "w"), indent=2)'
    "$PY" -c "$fallback" "$OUTPUT" "$status" "$LOG" 2>/dev/null \
        || python3 -c "$fallback" "$OUTPUT" "$status" "$LOG" \
        || echo "[gpu_checks] could not write $OUTPUT" >&2
    [ "$status" -eq 0 ] && status=1
fi
rm -f "$LOG"
exit "$status"
