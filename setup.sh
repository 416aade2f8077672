#!/usr/bin/env bash
# One command from a fresh clone to a first real job:
#   1. installs OpenMM 8.6.1 and libclang from PyPI into ./.venv (no root, no conda);
#   2. links them where .cargo/config.toml expects them (./.openmm);
#   3. builds cgflow (release), and the Python package (`import cgflow`) into .venv;
#   4. evaluates the energy and forces of alanine dipeptide's minimum-energy structure.
# Option --opencl-cpu also installs an OpenCL implementation for CPUs (pocl) and the OpenCL loader
# from PyPI into .venv, so that OpenMM's OpenCL platform runs on a machine without a GPU.
set -euo pipefail
cd "$(dirname "$0")"

opencl_cpu=0
for arg in "$@"; do
    case "$arg" in
        --opencl-cpu) opencl_cpu=1 ;;
        -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "setup.sh: unknown option '$arg' (known: --opencl-cpu)" >&2; exit 1 ;;
    esac
done

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
if [ "$opencl_cpu" = 1 ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-opencl-cpu.txt
    pocl=$(ls "$site"/pyopencl/.libs/libpocl-*.so 2>/dev/null | head -n 1)
    loader=$site/nvidia/cuda_opencl/lib/libOpenCL.so.1
    if [ -z "$pocl" ] || [ ! -f "$loader" ]; then
        echo "setup.sh: pocl or the OpenCL loader is missing after pip install" >&2
        exit 1
    fi
    mkdir -p .openmm/opencl
    ln -sfn "$pocl" .openmm/opencl/libpocl.so
    ln -sfn "$loader" .openmm/opencl/libOpenCL.so.1
fi

cargo build --release --bins --examples

# The Python package: an abi3 wheel built by maturin over the same crate (target/wheels), installed
# into .venv. Its extension links the openmm wheel's libOpenMM, so `import openmm, cgflow` share it.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r python/requirements.txt
python/install.sh

echo
./target/release/cgflow info
echo
echo "First job: energy and forces of alanine dipeptide (AMBER ff96 + OBC1) at its minimum:"
./target/release/cgflow energy \
    --system data/alanine_dipeptide/aldp_obc1.xml \
    --positions data/alanine_dipeptide/min_energy.pdb \
    --forces
echo
echo "The same from Python (.venv/bin/python):"
.venv/bin/python -c 'import cgflow, openmm.app as app, numpy as np
x = app.PDBFile("data/alanine_dipeptide/min_energy.pdb").getPositions(asNumpy=True)
e, f = cgflow.Energy("data/alanine_dipeptide/aldp_obc1.xml").evaluate(x)
print(f"cgflow {cgflow.__version__} (OpenMM {cgflow.openmm_version()}): U = {e:.6f} kJ/mol, |F|max = {np.abs(f).max():.3f} kJ/mol/nm")'
