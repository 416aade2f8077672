#!/usr/bin/env bash
# Builds the Python package from this tree (an abi3 wheel, by maturin, in target/wheels) and installs
# it into ./.venv; ./setup.sh and ./test.sh call it. Needs ./setup.sh's .venv (openmm, maturin).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -f target/wheels/cgflow-*.whl
.venv/bin/maturin build --quiet --release -m python/Cargo.toml -i .venv/bin/python --out target/wheels
.venv/bin/python -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps target/wheels/cgflow-*.whl
