#!/usr/bin/env bash
# The wheel on its own: build it, install it into a fresh virtual environment outside the
# source tree, and run the quick start (the tiny config, found by name) from an empty folder.
# The heavy dependencies (torch, detectron2, ...) are taken from the project's environment
# (.venv, or $RETINA_FOCAL_VENV) through a path file, not reinstalled; its site-packages' own
# path files (the editable install of this checkout) are not read, so `retina_focal` can only
# come from the wheel. Run by .ci/run; usage: bash scripts/wheel_quickstart.sh
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${RETINA_FOCAL_VENV:-$REPO/.venv}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/retina_focal_wheel.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
echo "[wheel] building the wheel"
"$VENV/bin/python" -m pip wheel "$REPO" --no-deps --no-build-isolation -q -w "$WORK/dist"
rm -rf "$REPO/build"  # setuptools' staging folder
WHEEL="$(ls "$WORK"/dist/retina_focal-*.whl)"
echo "[wheel] fresh environment $WORK/env, installing $(basename "$WHEEL")"
BASE_PY="$("$VENV/bin/python" -c 'import sys; print(sys._base_executable)')"
"$BASE_PY" -m venv "$WORK/env"
DEPS="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
SITE="$("$WORK/env/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$DEPS" > "$SITE/retina_focal_deps.pth"
"$WORK/env/bin/python" -m pip install --no-deps -q "$WHEEL"
mkdir "$WORK/run"
cd "$WORK/run"
export RETINA_FOCAL_DATASETS="$WORK/datasets"
"$WORK/env/bin/python" - "$REPO" <<'PY'
import os, sys
import retina_focal
from retina_focal.config import get_config_file, list_configs
repo = os.path.realpath(sys.argv[1])
where = os.path.realpath(retina_focal.__file__)
assert not where.startswith(repo + os.sep), f"retina_focal imported from the source tree: {where}"
print(f"[wheel] retina_focal {retina_focal.__version__} from {os.path.dirname(where)}; "
      f"{len(list_configs())} shipped configs, e.g. {get_config_file('Synthetic/retina_focal_R_18_FPN_tiny.yaml')}")
PY
"$WORK/env/bin/retina-focal" --help > help.txt && head -1 help.txt
echo "[wheel] quick start from $WORK/run: retina-focal train with a config found by name"
"$WORK/env/bin/retina-focal" train --config-file configs/Synthetic/retina_focal_R_18_FPN_tiny.yaml \
    OUTPUT_DIR out MODEL.DEVICE cpu > train.log 2>&1 || { tail -40 train.log; exit 1; }
grep -q "copypaste: " train.log || { tail -40 train.log; echo "[wheel] no COCO evaluation"; exit 1; }
test -f out/model_final.pth
"$WORK/env/bin/retina-focal" lazy-train --config-file Synthetic/retina_focal_R_18_FPN_tiny.py \
    train.output_dir=lazy_out train.device=cpu > lazy.log 2>&1 || { tail -40 lazy.log; exit 1; }
test -f lazy_out/model_final.pth
echo "[wheel] ok: the wheel trains and evaluates the tiny config (YAML and LazyConfig) outside the tree"
