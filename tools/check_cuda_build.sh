#!/usr/bin/env bash
# Compile check of the `cuda` feature on a machine without a GPU or a system CUDA toolkit.
#
# Why: `cargo build --features cuda` needs nvcc (candle-kernels compiles its .cu files to PTX and a
# static libmoe.a) and the CUDA libraries to link against (cudarc is built by candle with
# `dynamic-linking`: -lcuda -lcublas -lcublasLt -lcurand -lnvrtc -lcudart). Neither is on the
# project's machines, so this script installs a CUDA toolkit from NVIDIA's PyPI wheels into a
# folder of its own, lays it out like a normal toolkit, and runs the build and clippy against it.
# Nothing is run on a GPU: the point is that the CUDA code paths compile and lint cleanly.
#
# Which CUDA: 13.0 (Update 2). The CUDA 12 nvcc wheels (nvidia-cuda-nvcc-cu12, every 12.x) ship
# only ptxas and libnvvm, not the nvcc driver, cicc or cudafe++, so they cannot compile .cu files;
# the CUDA 13 wheels (nvidia-cuda-nvcc + nvidia-nvvm + nvidia-cuda-crt) are a complete nvcc. Keep
# the minor version within what cudarc knows (cudarc 0.19.10: up to 13.4), or its build script
# panics with "Unsupported cuda toolkit version".
#
# The wheels carry no libcuda.so (it comes with the NVIDIA driver), so the script builds a link-time
# stub from the driver symbols cudarc declares, in <prefix>/cuda/lib64/stubs (never on a run-time
# library path). The binaries are therefore linkable but only runnable where a driver is installed.
#
# Usage: tools/check_cuda_build.sh [PREFIX]
#   PREFIX             where the toolkit goes (default: .cuda-toolkit under the repo root)
#   CUDA_COMPUTE_CAP   target compute capability (default 90, i.e. H100/H200)
#   JOBS               cargo -j and nvcc threads (default: nproc)
#   PYTHON             python used to create the venv (default: python3)
#   CHECK_CUDA_SETUP_ONLY=1   install and print the environment, but skip cargo
# Build output goes to target-cuda/ under the repo root, separate from the CPU build's target/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="$(realpath -m "${1:-$ROOT/.cuda-toolkit}")"
PYTHON="${PYTHON:-python3}"
JOBS="${JOBS:-$(nproc)}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CARGO_TARGET_DIR="$ROOT/target-cuda"

# One consistent release: CUDA 13.0 Update 2.
WHEELS=(
  "nvidia-cuda-nvcc==13.0.88"
  "nvidia-nvvm==13.0.88"
  "nvidia-cuda-crt==13.0.88"
  "nvidia-cuda-runtime==13.0.96"
  "nvidia-cuda-nvrtc==13.0.88"
  "nvidia-cuda-cccl==13.0.85"
  "nvidia-cublas==13.1.0.3"
  "nvidia-curand==10.4.0.35"
)

echo "== CUDA toolkit from PyPI into $PREFIX"
mkdir -p "$PREFIX"
if [[ ! -x "$PREFIX/venv/bin/python" ]]; then
  "$PYTHON" -m venv "$PREFIX/venv"
fi
"$PREFIX/venv/bin/python" -m pip install --quiet --disable-pip-version-check "${WHEELS[@]}"

SITE="$("$PREFIX/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
WHEEL_ROOT="$SITE/nvidia/cu13"
[[ -x "$WHEEL_ROOT/bin/nvcc" ]] || { echo "no nvcc in $WHEEL_ROOT/bin" >&2; exit 1; }

# Toolkit layout: bin/ include/ nvvm/ from the wheels, lib64/ with the unversioned .so names the
# linker needs, lib64/stubs/libcuda.so built below.
CUDA="$PREFIX/cuda"
rm -rf "$CUDA"
mkdir -p "$CUDA/lib64/stubs"
for d in bin include nvvm; do ln -s "$WHEEL_ROOT/$d" "$CUDA/$d"; done
for f in "$WHEEL_ROOT"/lib/*.so.*; do
  base="$(basename "$f")"
  ln -s "$f" "$CUDA/lib64/$base"
  ln -sf "$base" "$CUDA/lib64/${base%%.so.*}.so"
done

# libcuda.so link stub: one dummy function per driver entry point in cudarc's bindings.
CUDARC_DIR="$(cd "$ROOT" && cargo metadata --format-version 1 --features cuda --locked 2>/dev/null |
  "$PREFIX/venv/bin/python" -c '
import json, os, sys
pkgs = json.load(sys.stdin)["packages"]
print(next(os.path.dirname(p["manifest_path"]) for p in pkgs if p["name"] == "cudarc"))')"
STUB_SRC="$CUDA/lib64/stubs/libcuda_stub.c"
grep -oP '^pub unsafe fn \Kcu\w+' "$CUDARC_DIR/src/driver/sys/mod.rs" | sort -u |
  awk '{ print "int " $1 "(void) { return 999; /* CUDA_ERROR_UNKNOWN */ }" }' >"$STUB_SRC"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CUDA/lib64/stubs/libcuda.so" "$STUB_SRC"

# CUDA_HOME: cudarc's link search (lib64, lib64/stubs); PATH: nvcc for cudaforge (candle-kernels)
# and for cudarc's version detection; CUDAFORGE_THREADS: how many nvcc run at once.
export CUDA_HOME="$CUDA"
export PATH="$CUDA/bin:$PATH"
export CUDAFORGE_THREADS="$JOBS"

echo "== environment"
echo "CUDA_HOME=$CUDA_HOME"
echo "PATH=$CUDA/bin:..."
echo "CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"
echo "CUDAFORGE_THREADS=$CUDAFORGE_THREADS"
echo "CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
nvcc --version | tail -2
if [[ "${CHECK_CUDA_SETUP_ONLY:-0}" == 1 ]]; then
  echo "CHECK_CUDA_SETUP_ONLY=1: skipping cargo"
  exit 0
fi

cd "$ROOT"
echo "== cargo build --release --features cuda"
cargo build --release --features cuda -j "$JOBS" --lib --bins
echo "== cargo clippy --release --features cuda -- -D warnings"
cargo clippy --release --features cuda -j "$JOBS" --lib --bins -- -D warnings
echo "cuda feature: build and clippy passed"
