#!/usr/bin/env bash
# The MD baseline of the ruler (issue 17): 4 independent realisations of 128 walkers x 781,250
# steps (1e8 energy evaluations each, 4e8 pooled) of ALDP (ff96 + OBC1, 300 K, LangevinMiddle 1 fs,
# friction 1/ps), every walker started at the minimum-energy structure, (phi, psi) recorded every
# 10 steps into 100 x 100 histograms (`--histogram-bins 100`, written at 10 frame counts per
# decade), not as values, so that each realisation's whole folder (results/md_baseline/seed-N:
# md.ckpt, cv.json, histograms/) is a few MB and is committed at the end of every session. Two
# realisations run at a time on one OpenMM thread each (seeds 101 and 102, then 103 and 104); each
# checkpoints every 10,000 steps, so running this script again, in this session or a later one,
# resumes where a run stopped. About 2.2 h per pair on 2 otherwise idle cores.
#
#   tools/md_baseline.sh [BIN]        (default: target/release/cgflow; copy it elsewhere first if you
#                                      rebuild while it runs)
#
# Started in the background with setsid, a run is its own scheduler autogroup, where nice does not
# yield to the rest of the machine: lower the group's priority with
#   for p in $(pgrep -f "md --system"); do echo 19 > /proc/$p/autogroup; done
#
# Then: cgflow compare --reference data/reference/aldp_umbrella/reference_probabilities.npy \
#         --md results/md_baseline/seed-101 --md results/md_baseline/seed-102 --md ... --groups 4,1 \
#         --system data/alanine_dipeptide/aldp_obc1.xml --out ... --plot ...
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/cgflow}
run() {
  local seed=$1 out=results/md_baseline/seed-$1 resume=""
  [ -f "$out/md.ckpt" ] && resume="--resume"
  nice -n 19 "$BIN" md --system data/alanine_dipeptide/aldp_obc1.xml \
    --positions data/alanine_dipeptide/min_energy.pdb --out "$out" --walkers 128 --steps 781250 \
    --record-every 10 --seed "$seed" --dcd-walkers 0 --checkpoint-every 10000 --property Threads=1 --histogram-bins 100 $resume \
    >> "runs/md-baseline/seed-$seed.log" 2>&1
}
mkdir -p runs/md-baseline results/md_baseline
(run 101; run 103) &
(run 102; run 104) &
wait
