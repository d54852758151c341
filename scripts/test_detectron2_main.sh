#!/usr/bin/env bash
# The test suite against the official Detectron2 (main branch) instead of the installed one.
#
#   bash scripts/test_detectron2_main.sh [PYTEST ARGS...]     # default: -q tests
#
# $DETECTRON2_MAIN is a source tarball of facebookresearch/detectron2 or an unpacked source
# tree (the directory holding detectron2/__init__.py); default: the tarball CI finds beside the
# clone, ../shared/detectron2/detectron2-main-02b5c4e.tar.gz. A tarball is unpacked into a
# temporary directory. That source goes first on PYTHONPATH, so its pure-Python detectron2
# shadows the installed 0.6 without building anything (its compiled ops are then missing,
# which tests/test_package.py checks fail loudly). When the source is absent, e.g. on a
# user's machine, the run is skipped with a message and exit status 0.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${RETINA_FOCAL_VENV:-$ROOT/.venv}/bin/python"
SOURCE="${DETECTRON2_MAIN:-$ROOT/../shared/detectron2/detectron2-main-02b5c4e.tar.gz}"
say() { printf '[test_detectron2_main] %s\n' "$*"; }

if [ ! -e "$SOURCE" ]; then
    say "SKIPPED: no official Detectron2 source at $SOURCE (it is a CI resource, not on PyPI);"
    say "set DETECTRON2_MAIN to a detectron2 source tarball or checkout to run the suite on it"
    exit 0
fi

if [ -d "$SOURCE" ]; then
    TREE="$SOURCE"
else
    TMP="$(mktemp -d)"
    trap 'rm -rf "$TMP"' EXIT
    tar -xzf "$SOURCE" -C "$TMP"
    TREE="$TMP"
    for top in "$TMP"/*/; do  # a GitHub tarball has one top directory
        if [ -f "$top/detectron2/__init__.py" ]; then TREE="${top%/}"; fi
    done
fi
if [ ! -f "$TREE/detectron2/__init__.py" ]; then
    say "no detectron2/__init__.py in $SOURCE" >&2
    exit 1
fi

export PYTHONPATH="$TREE${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT"
# the run must really import that detectron2, not the installed one
"$PY" - "$TREE" <<'EOF'
import os, sys
import detectron2
tree = os.path.realpath(sys.argv[1])
where = os.path.realpath(detectron2.__file__)
assert where.startswith(tree + os.sep), f"imported {where}, not the source in {tree}"
print(f"[test_detectron2_main] detectron2 {detectron2.__version__} from {os.path.dirname(where)}")
EOF
if [ "$#" -eq 0 ]; then
    # tests/deploy runs once, with the installed Detectron2: it checks the JavaScript runtimes
    # against the Python runtime; the graph's parity with each Detectron2 is tests/export's
    set -- -q tests --ignore=tests/deploy
fi
"$PY" -m pytest "$@"
