#!/usr/bin/env bash
# Installs sdkd-pipeline (editable) into the active Python environment.
#   bash scripts/setup.sh          # the project
#   bash scripts/setup.sh --dev    # the project and its test tools
#
# A Python that refuses pip installs (Debian/Ubuntu's system Python, PEP 668 "externally
# managed") gets a project virtualenv instead: .venv is created (or reused) and the project
# installed there; activate it with `source .venv/bin/activate` before `kedro run`.
#
# torch comes first, chosen for the machine: with an NVIDIA GPU, pip's default (CUDA) build; without
# one, a CPU build (a wheel already on disk if pip's find-links has one, else PyTorch's CPU index), so
# a laptop or CI box never downloads the multi-GB CUDA wheel. An installed torch is kept as it is,
# and pyproject.toml sets no upper bound on it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=""
if [ "${1:-}" = "--dev" ]; then extras="[dev]"; fi

# PEP 668: an externally managed Python outside a virtualenv makes pip refuse to install
externally_managed() {
  "$1" -c 'import os, sys, sysconfig
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
sys.exit(0 if os.path.exists(marker) and sys.prefix == sys.base_prefix else 1)'
}
made_venv=""
if externally_managed "$PY"; then
  if [ ! -x .venv/bin/python ]; then
    echo "setup: $("$PY" -c 'import sys; print(sys.executable)') is externally managed (PEP 668):" \
      "creating the project virtualenv .venv"
    "$PY" -m venv .venv
  else
    echo "setup: $PY is externally managed (PEP 668): installing into the existing .venv"
  fi
  PY=.venv/bin/python
  made_venv=1
fi

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found, installing the default (CUDA) torch build"
    "$PY" -m pip install torch
  else
    local_wheel=""
    for dir in ${PIP_FIND_LINKS:-} $("$PY" -m pip config get global.find-links 2>/dev/null || true); do
      [ -d "$dir" ] || continue
      local_wheel=$(ls "$dir"/torch-*+cpu-*.whl 2>/dev/null | sort -V | tail -n 1 || true)
      [ -n "$local_wheel" ] && break
    done
    if [ -n "$local_wheel" ]; then
      version=$(basename "$local_wheel" | cut -d- -f2 | cut -d+ -f1)
      echo "setup: no GPU, installing the CPU torch $version found in $(dirname "$local_wheel")"
      "$PY" -m pip install "torch==$version"
    else
      echo "setup: no GPU, installing torch from PyTorch's CPU index"
      "$PY" -m pip install torch --index-url https://download.pytorch.org/whl/cpu
    fi
  fi
fi
"$PY" -m pip install -e ".$extras"
if [ -n "$made_venv" ]; then
  echo "setup: installed into .venv; activate it before running anything:"
  echo "  source .venv/bin/activate && kedro run"
fi
