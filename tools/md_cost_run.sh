#!/bin/bash
# MD baseline for the cost curve (issue 5): one run of 128 walkers x 781,250 steps = 1.0e8 energy
# evaluations of ALDP (ff96 + OBC1, 300 K, LangevinMiddle 1 fs, friction 1/ps), all walkers started
# from the minimum-energy structure, (phi, psi) recorded every 100 steps. About 2 h on 2 idle cores;
# checkpointed every 10,000 steps, so running this script again resumes a killed run.
#
#   tools/md_cost_run.sh [OUT_DIR] [SEED]      (defaults: runs/md-cost-run1, 11)
#
# Then: cgflow compare --reference data/reference/aldp_umbrella/reference_probabilities.npy \
#           --md OUT_DIR --system data/alanine_dipeptide/aldp_obc1.xml --plot ... (see README)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/md-cost-run1}
SEED=${2:-11}
BIN=target/release/cgflow
ARGS=(md --system data/alanine_dipeptide/aldp_obc1.xml --positions data/alanine_dipeptide/min_energy.pdb
      --out "$OUT" --walkers 128 --steps 781250 --record-every 100 --seed "$SEED" --checkpoint-every 10000)
if [ -f "$OUT/md.ckpt" ]; then ARGS+=(--resume); fi
exec "$BIN" "${ARGS[@]}"
