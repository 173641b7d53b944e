#!/usr/bin/env bash
# Create (or reuse) the virtual environment .venv with reglab and everything it needs.
# PyTorch: a local CPU wheel if this machine has one (pip's find-links), else the CPU build from
# PyTorch's index, so a CPU machine never pulls the multi-GB CUDA build. GPU users: set
# REGLAB_TORCH to the pip arguments of the build they want, e.g.
#   REGLAB_TORCH="torch --index-url https://download.pytorch.org/whl/cu124" make test
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
stamp="$VENV/.reglab-installed"
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip "$@"; }
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if [ -n "${REGLAB_TORCH:-}" ]; then
    pip install -q $REGLAB_TORCH
  else
    wheel=""
    for dir in ${PIP_FIND_LINKS:-} /opt/wheels; do
      pyver=$("$VENV/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
      cand=$(ls "$dir"/torch-*+cpu-"$pyver"-*.whl 2>/dev/null | sort -V | tail -n 1 || true)
      if [ -n "$cand" ]; then wheel=$cand; break; fi
    done
    if [ -n "$wheel" ]; then
      pip install -q "$wheel"
    else
      pip install -q torch --index-url https://download.pytorch.org/whl/cpu
    fi
  fi
fi
pip install -q -e ".[dev,cluster]"
touch "$stamp"
