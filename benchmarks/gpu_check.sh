#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py), prepared to run on a GPU machine in under 5
# minutes: finds or installs what it needs, then measures and writes
# $OUT/gpu_check.json when $OUT is set, else benchmarks/gpu_check.json.
#
#   benchmarks/gpu_check.sh                  # the full check (about 4 minutes on a GPU)
#   benchmarks/gpu_check.sh --quick          # arguments go on to gpu_check.py
#   benchmarks/gpu_check.sh --fetch-wheels   # on a machine with pip access: put demgen's
#                                            # missing dependencies into .whl/ to carry
#
# With nvidia-smi: the Python is the first of $GPU_CHECK_PYTHON, python3 and the venv
# $GPU_CHECK_VENV (/tmp/gpu_check_venv) whose torch sees a GPU (an image with a CUDA torch
# already installed is used as it is; demgen accepts torch>=2.3,<2.14). Only when none
# does, that venv is made and the pinned CUDA build (2.13.0) is installed into it from
# $TORCH_INDEX (needs network). demgen's other dependencies
# that are missing come from .whl/ when it is there (a machine with no network: fetch
# them beforehand with --fetch-wheels and carry .whl), else from the registry (pinned).
# demgen itself is used from src/ (PYTHONPATH), not installed.
#
# Without nvidia-smi (the CPU machine): the existing CPU virtual environment (.venv, or
# $GPU_CHECK_PYTHON) is used as it is; nothing is installed, so no CUDA torch is pulled.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TORCH_INDEX="${TORCH_INDEX:-https://download.pytorch.org/whl/cu126}"
LIMIT_S="${GPU_CHECK_LIMIT_S:-285}"   # the whole measurement; gpu_check.py budgets 270 s
WHEELS="${GPU_CHECK_WHEELS:-.whl}"  # carried wheels; to carry, git-ignore it (/.whl/)
SITE=/tmp/gpu_check_site
VENV_GPU="${GPU_CHECK_VENV:-/tmp/gpu_check_venv}"  # made only when no torch sees the GPU
# demgen's dependencies that a CUDA image may lack (what the check imports), pinned as
# the project's CPU environment has them
DEPS=(rasterio==1.4.4 affine==3.0.1 cligj==0.7.2 click-plugins==1.1.1.2
      jsonargparse==4.53.0 docstring_parser==0.18.0 typeshed_client==2.15.0)
IMPORTS="import rasterio, affine, cligj, click_plugins, jsonargparse, docstring_parser, typeshed_client"

log() { echo "[gpu_check.sh] $*"; }

if [[ "${1:-}" == "--fetch-wheels" ]]; then
  # Python 3.12 x86-64 wheels of DEPS, for a GPU machine that cannot reach a registry
  mkdir -p "$WHEELS"
  platforms=()
  for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 \
           manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
  done
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "${WHEEL_PY:-3.12}" \
    --implementation cp "${platforms[@]}" -d "$WHEELS" "${DEPS[@]}"
  ls -la "$WHEELS"
  exit 0
fi

if [[ -n "${OUT:-}" ]]; then
  OUT_JSON="$OUT/gpu_check.json"
else
  OUT_JSON=benchmarks/gpu_check.json
fi

sees_gpu() {
  "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1
}

if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  PY=""
  for cand in "${GPU_CHECK_PYTHON:-}" python3 "$VENV_GPU"/bin/python; do
    if [[ -n "$cand" ]] && command -v "$cand" >/dev/null 2>&1 && sees_gpu "$cand"; then
      PY="$cand"
      break
    fi
  done
  if [[ -z "$PY" ]]; then
    log "no Python here has a torch that sees the GPU: installing torch==2.13.0 from $TORCH_INDEX"
    python3 -m venv "$VENV_GPU"
    "$VENV_GPU"/bin/python -m pip install -q --timeout 30 --retries 1 "torch==2.13.0" --index-url "$TORCH_INDEX"
    PY="$VENV_GPU"/bin/python
    sees_gpu "$PY" || { log "the installed torch does not see the GPU"; exit 1; }
  fi
  log "GPU path: $PY ($("$PY" -c 'import torch; print(torch.__version__)'))"
  if ! "$PY" -c "$IMPORTS" >/dev/null 2>&1; then
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
      log "installing demgen's missing dependencies from $WHEELS/ into $SITE"
      "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$WHEELS"/*.whl
    else
      log "installing demgen's missing dependencies from the registry into $SITE"
      "$PY" -m pip install -q --timeout 10 --retries 1 --no-deps --no-compile --target "$SITE" \
        "${DEPS[@]}" \
        || log "could not install them: the parts that need them will be skipped"
    fi
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  fi
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
else
  PY="${GPU_CHECK_PYTHON:-.venv/bin/python}"
  if [[ ! -x "$PY" ]] && ! command -v "$PY" >/dev/null 2>&1; then
    log "no nvidia-smi and no CPU environment at $PY: run make first (nothing is installed here)"
    exit 2
  fi
  log "no nvidia-smi: CPU path, using $PY as it is (no install)"
fi

mkdir -p "$(dirname "$OUT_JSON")"
export PYTHONUNBUFFERED=1
timeout --kill-after=10 "$LIMIT_S" "$PY" benchmarks/gpu_check.py --out "$OUT_JSON" "$@"
log "done: $OUT_JSON"
