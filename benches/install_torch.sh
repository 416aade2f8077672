#!/usr/bin/env bash
# Installs the PyTorch side of the flow benchmark (benches/flow_torch.py) into ./.venv-torch:
# torch 2.15.0 and numpy from PyPI, in a virtual environment of its own, apart from ./.venv (OpenMM).
# Idempotent: does nothing when .venv-torch already imports torch 2.15.0.
#   benches/install_torch.sh
#   .venv-torch/bin/python benches/flow_torch.py
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_VERSION=2.15.0
VENV=.venv-torch

installed_version() {
    # torch reports e.g. "2.15.0+cu132"; the local part after "+" names the build, not the release.
    "$VENV/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true
}

if [ -x "$VENV/bin/python" ] && [ "$(installed_version)" = "$TORCH_VERSION" ]; then
    echo "install_torch.sh: torch $TORCH_VERSION already installed in $PWD/$VENV; nothing to do"
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "torch==$TORCH_VERSION" numpy
version=$(installed_version)
if [ "$version" != "$TORCH_VERSION" ]; then
    echo "install_torch.sh: expected torch $TORCH_VERSION in $PWD/$VENV, found '${version}'" >&2
    exit 1
fi
echo "install_torch.sh: installed torch $TORCH_VERSION and numpy in $PWD/$VENV"
echo "run the benchmark with: $PWD/$VENV/bin/python benches/flow_torch.py"
