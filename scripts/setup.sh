#!/usr/bin/env bash
# Sets up everything on a fresh machine: Debian packages (graphviz, Fashion-MNIST) and a venv with the workbench.
# Usage: scripts/setup.sh [VENV_DIR]   (default .venv). Safe to re-run.
set -euo pipefail
venv=${1:-.venv}
cd "$(dirname "$0")/.."

need_apt=()
command -v dot >/dev/null || need_apt+=(graphviz)
[ -d /usr/share/datasets/fashion-mnist ] || need_apt+=(dataset-fashion-mnist)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)  # headless browser for tests/test_browser.py
if ((${#need_apt[@]})); then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: please install Debian packages: ${need_apt[*]} (sudo apt-get install ${need_apt[*]})" >&2
  fi
fi

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
# Pinned first: these torch/torchvision builds are on the local disk; an unpinned torch would pull GBs from the network.
"$venv/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
"$venv/bin/python" -m pip install -q -e ".[all]"  # dev extra has playwright: it drives /usr/bin/chromium
echo "setup: ready in $venv"
