#!/usr/bin/env bash
# Install llama-cpp-python (the fast CPU engine: reasoning.backends.llamacpp) into the current
# Python. PyPI has only its source; building it takes about 20 minutes on 2 cores, so the
# built wheel is kept in a cache and reused by later installs on the same machine.
#
#   bash scripts/install_llamacpp.sh
#   LLAMACPP_CMAKE_ARGS="-DGGML_CUDA=on" bash scripts/install_llamacpp.sh   # other builds
#
# The cache folder is keyed by the CPU's
# instruction-set flags and the build options: another machine kind builds its own.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VERSION=0.3.36
# Portable AVX2 build (not -DGGML_NATIVE=ON): a native build on a CPU that reports AMX or AVX-512
# uses them, and in sandboxes that do not grant AMX tile state (this one) matmuls segfault.
CMAKE_OPTS=${LLAMACPP_CMAKE_ARGS:-"-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF"}
CACHE=${STEPSPEC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/stepspec}
key=$( { grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || uname -m; echo "$VERSION $CMAKE_OPTS"; } | sha256sum | cut -c1-12)
WHEELS="$CACHE/wheels/llama-cpp-python-$key"
mkdir -p "$WHEELS"

if "$PY" -c "import llama_cpp, sys; sys.exit(0 if llama_cpp.__version__ == '$VERSION' else 1)" 2>/dev/null; then
  echo "llama-cpp-python $VERSION already installed"
  exit 0
fi
wheel=$(ls "$WHEELS"/llama_cpp_python-"$VERSION"-*.whl 2>/dev/null | head -1 || true)
if [ -z "$wheel" ]; then
  echo "building llama-cpp-python $VERSION from source (about 20 minutes on 2 cores); cache: $WHEELS"
  t0=$(date +%s)
  CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} CMAKE_ARGS="$CMAKE_OPTS" \
    "$PY" -m pip wheel --disable-pip-version-check -q --no-deps "llama-cpp-python==$VERSION" -w "$WHEELS.tmp"
  mv "$WHEELS".tmp/llama_cpp_python-*.whl "$WHEELS"/ && rmdir "$WHEELS.tmp"
  echo "built in $(( $(date +%s) - t0 )) s"
  wheel=$(ls "$WHEELS"/llama_cpp_python-"$VERSION"-*.whl | head -1)
else
  echo "reusing the cached wheel $wheel"
fi
"$PY" -m pip install --disable-pip-version-check -q "$wheel"
"$PY" -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__, 'installed')"
