#!/usr/bin/env bash
# Installs dg-chat and everything it needs into ./.venv.
#   scripts/setup.sh          runtime only
#   scripts/setup.sh --dev    plus the test tools and the reference oracle (transformers)
# llama-cpp-python has no wheels on PyPI, so it is built from source once (CUDA when nvcc and an
# NVIDIA GPU are both present, CPU otherwise) and the wheel is cached for later installs.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[ "${1:-}" = "--dev" ] && dev=1
python=${PYTHON:-python3}
cache=${DG_CHAT_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dg-chat/build}
llama_version=0.3.36

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "dg-chat needs Python 3.11 or newer (set PYTHON=...)" >&2; exit 1; }
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check "$@"; }
pip install -q --upgrade pip

# torch first and pinned: a bare "torch" would pull a multi-GB build where a CPU one is offered.
pip install -q torch==2.13.0

if [ "${DG_CHAT_CUDA:-auto}" = 1 ] || { [ "${DG_CHAT_CUDA:-auto}" = auto ] \
     && command -v nvcc >/dev/null && nvidia-smi -L >/dev/null 2>&1; }; then
  flavour=cuda cmake_args="-DGGML_CUDA=on -DLLAVA_BUILD=OFF"
else
  flavour=cpu cmake_args="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF"
fi
wheels="$cache/wheels-$flavour"
if ! ls "$wheels"/llama_cpp_python-$llama_version-*.whl >/dev/null 2>&1; then
  echo "Building llama-cpp-python $llama_version for $flavour (about 8 minutes on 2 cores, once)..."
  mkdir -p "$cache/sdist"
  pip download -q --no-deps --no-binary :all: -d "$cache/sdist" "llama-cpp-python==$llama_version"
  CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
    pip wheel -q --no-deps -w "$wheels" "$cache/sdist/llama_cpp_python-$llama_version.tar.gz"
fi
pip install -q --find-links "$wheels" "llama-cpp-python==$llama_version"

if [ $dev = 1 ]; then
  pip install -q -e ".[dev]"
  .venv/bin/python scripts/fetch_test_data.py >/dev/null   # public test vectors, cached in tests/.cache
else
  pip install -q -e .
fi
echo "dg-chat is installed in .venv"
