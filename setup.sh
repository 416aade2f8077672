#!/usr/bin/env bash
# One command from a fresh clone to a first real job:
#   1. installs OpenMM 8.6.1 and libclang from PyPI into ./.venv (no root, no conda);
#   2. links them where .cargo/config.toml expects them (./.openmm);
#   3. builds cgflow (release);
#   4. evaluates the energy and forces of alanine dipeptide's minimum-energy structure.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
if ! command -v cargo >/dev/null 2>&1; then
    echo "setup.sh: cargo not found; install Rust (https://rustup.rs) first" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
# PNG plots need a TrueType font (DejaVu Sans). Without a system copy, matplotlib's wheel brings one.
font_found=${CGFLOW_FONT:-}
for candidate in /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf /usr/share/fonts/dejavu/DejaVuSans.ttf \
        /usr/share/fonts/TTF/DejaVuSans.ttf; do
    [ -f "$candidate" ] && font_found=$candidate
done
if [ -z "$font_found" ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check matplotlib
fi
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p .openmm
ln -sfn "$site/OpenMM.libs" .openmm/OpenMM.libs
ln -sfn "$site/clang" .openmm/clang

cargo build --release --bins --examples

echo
./target/release/cgflow info
echo
echo "First job: energy and forces of alanine dipeptide (AMBER ff96 + OBC1) at its minimum:"
./target/release/cgflow energy \
    --system data/alanine_dipeptide/aldp_obc1.xml \
    --positions data/alanine_dipeptide/min_energy.pdb \
    --forces
