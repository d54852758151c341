#!/usr/bin/env bash
# Setup for running exported models without Python (deploy/README.md, docs/export.md):
#   1. the npm packages of deploy/ (onnxruntime-node, onnxruntime-web, pngjs, @jsquash/jpeg,
#      puppeteer-core), exactly as deploy/package-lock.json pins them;
#   2. Chromium, for the web page's test in a real browser: Debian's package, installed with
#      apt-get where it is missing and this shell may install packages (root); otherwise the
#      command to run is printed. $CHROMIUM may name another Chromium or Chrome executable.
# Needs Node.js 20 or later and npm. Re-running is safe (npm ci replaces deploy/node_modules).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
step() { printf '\n[setup_deploy] %s\n' "$*"; }

command -v node >/dev/null && command -v npm >/dev/null \
    || { echo "[setup_deploy] needs Node.js 20+ and npm (e.g. apt-get install nodejs npm)" >&2; exit 1; }
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' \
    || { echo "[setup_deploy] Node.js $(node --version) is too old: 20 or later is needed" >&2; exit 1; }

step "npm packages of deploy/ (npm ci)"
# onnxruntime-node's install script would fetch CUDA binaries; its CPU build is in the package
(cd "$ROOT/deploy" && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund --loglevel=error)

step "Chromium (for the web page's browser test)"
if [ -n "${CHROMIUM:-}" ] && [ -x "$CHROMIUM" ]; then
    echo "[setup_deploy] using \$CHROMIUM=$CHROMIUM"
elif command -v chromium >/dev/null; then
    echo "[setup_deploy] $(chromium --version 2>/dev/null || echo chromium) is installed"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    echo "[setup_deploy] installed $(chromium --version 2>/dev/null)"
else
    echo "[setup_deploy] Chromium is missing: install it (Debian: sudo apt-get install chromium)" \
         "or set CHROMIUM; the web page's test is skipped without it" >&2
fi
echo "[setup_deploy] ok"
