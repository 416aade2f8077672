#!/usr/bin/env bash
# Every test, in one command (after ./setup.sh): the Rust suite (`cargo test --release`, arguments
# are passed on to it), then the Python package rebuilt from this tree and its pytest suite.
set -euo pipefail
cd "$(dirname "$0")"
cargo test --release "$@"
echo "== Python package (python/tests)"
python/install.sh
.venv/bin/python -m pytest -q python/tests
