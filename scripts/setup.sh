#!/usr/bin/env bash
# One-command setup for retina_focal.
#
#   bash scripts/setup.sh
#
# Creates .venv/ at the repository root (or uses $RETINA_FOCAL_VENV) and installs
#   1. torch + torchvision from the package registry (a working pair is kept as it is);
#   2. detectron2: an already importable one is used untouched; otherwise the registry's
#      pb1-detectron2 0.6 sdist is installed without its C++ extension (see
#      retina_focal/utils/install_detectron2.py for the exact, checked adjustments);
#   3. this package in editable mode, with its runtime, test and deploy (onnx, onnxruntime)
#      dependencies.
# Re-running is safe: every step checks first and skips what is already in place.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RETINA_FOCAL_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

step() { printf '\n[setup] %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
    step "creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -c 'import sys; assert sys.version_info >= (3, 9), sys.version' \
    || { echo "[setup] Python >= 3.9 is required in $VENV" >&2; exit 1; }

step "torch and torchvision"
if "$PY" -c 'import torch, torchvision.ops as o; o.nms(torch.zeros(1, 4), torch.ones(1), 0.5)' 2>/dev/null; then
    echo "[setup] a working torch/torchvision pair is already installed: keeping it"
else
    # PyPI has no CPU-only torchvision; its wheels need the matching (CUDA) torch build,
    # which also runs on machines without a GPU. See README "Setup notes".
    "$PY" -m pip install --quiet torchvision
    "$PY" -c 'import torch, torchvision.ops as o; o.nms(torch.zeros(1, 4), torch.ones(1), 0.5)'
fi

step "detectron2"
if "$PY" -c 'import detectron2' 2>/dev/null; then
    echo "[setup] detectron2 $("$PY" -c 'import detectron2; print(detectron2.__version__)') is importable: using it as it is"
else
    "$PY" "$ROOT/retina_focal/utils/install_detectron2.py"
fi

step "retina_focal (editable) and its dependencies"
"$PY" -m pip install --quiet -e "$ROOT[test,deploy]"

step "checking the installation"
"$PY" -c 'import retina_focal, detectron2, torch, torchvision; print("[setup] ok: retina_focal", retina_focal.__version__, "| detectron2", detectron2.__version__, "| torch", torch.__version__, "| torchvision", torchvision.__version__)'
