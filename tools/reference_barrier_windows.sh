#!/usr/bin/env bash
# Stiff umbrella windows on the phi = 0 barrier of alanine dipeptide (issue 17, results/ruler/README.md,
# "Stage 3"): where stage 2's 24 x 24 windows of 100 kJ/mol/rad^2 leave bins unsampled, or sampled in
# one half only (phi in [-31, 20] degrees, psi near 0 and near 180; F 15-22 kT), which makes the
# halves' KL infinite on the raw grid. The windows of a 72 x 72 lattice (5 degree spacing) with
# centres in three boxes, at 1000 kJ/mol/rad^2 (spread about 3 degrees), reached from the
# minimum-energy structure in three pulls (a pull straight to 1000 explodes):
#   a: 100 kJ/mol/rad^2, 8 ps from the minimum-energy structure;
#   b: 300 kJ/mol/rad^2, 4 ps from a's last structures;
#   c: 1000 kJ/mol/rad^2, 8 ps of equilibration from b's, then 30 ps recorded every 50 fs.
# Only c's samples enter the reference (`cgflow reference --umbrella runs/umbrella-barrier-c ...`).
# Each stage resumes from its checkpoint when run again.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/cgflow}
boxes=(--centres-in=-36:24,135:180 --centres-in=-36:24,-180:-130 --centres-in=-36:24,-30:48)
common=(--windows 72 "${boxes[@]}" --trans-wall-k 1000 --record-every 50 --bins 100 --checkpoint-every 2000 --seed 2028 --no-analysis)
stage() {
  local out=$1; shift
  local resume=""
  [ -f "$out/umbrella.ckpt" ] && resume="--resume"
  nice -n 19 "$BIN" umbrella --out "$out" "${common[@]}" "$@" $resume
}
stage runs/umbrella-barrier-a --k 100 --equilibrate 8000 --steps 100
stage runs/umbrella-barrier-b --k 300 --equilibrate 4000 --steps 100 --positions runs/umbrella-barrier-a/final_positions_nm.npy
stage runs/umbrella-barrier-c --k 1000 --equilibrate 8000 --steps 30000 --positions runs/umbrella-barrier-b/final_positions_nm.npy
