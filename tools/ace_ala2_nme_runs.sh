#!/usr/bin/env bash
# The long runs behind the second peptide's ruler (issue 18): Ace-(Ala)2-Nme, AMBER ff96 + OBC1,
# 300 K, all peptide bonds held trans by walls (the ensemble unbiased MD samples).
#   1. Umbrella sampling of each (phi_i, psi_i) pair, the other pair free: 20 x 20 windows,
#      k = 100 kJ/mol/rad^2, 20 ps of equilibration, then 80 ps recorded every 50 fs
#      (runs/ace-umbrella-res2, runs/ace-umbrella-res3): the 2D marginal references, by
#      `cgflow reference` with the MD runs below in the same estimate.
#   2. Unbiased MD, 4 realisations of 64 walkers x 250,000 steps (1.6e7 evaluations each), all four
#      CVs kept as 100 x 100 histograms two by two (results/ace_ala2_nme_md/seed-N): the MD
#      baseline (seeds 301-302) and MD data for the reference (seeds 401-402).
# Every run checkpoints; running this script again, in this session or a later one, resumes where
# a run stopped. Before a session ends: stop the runs (kill; each resumes from its last checkpoint)
# and copy each unfinished umbrella folder's umbrella.ckpt, cv.json and cv.f32 into
# results/ace_ala2_nme_reference/umbrella_state/resN/ (restored from there on a fresh machine);
# the MD folders live in results/ and are committed as they are. A second argument runs one part (umbrella, md-baseline, md-reference; default
# all, in that order). Runs niced; started with setsid, lower the scheduler group's weight too:
#   (setsid tools/ace_ala2_nme_runs.sh runs/cgflow-ace > runs/ace-runs.log 2>&1 &)
#   for p in $(pgrep -f cgflow-ace); do echo 19 > /proc/$p/autogroup; done
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/cgflow}
DATA=data/ace_ala2_nme
STATE=results/ace_ala2_nme_reference/umbrella_state
umbrella() {
  local residue=$1 out=runs/ace-umbrella-res$1 resume=""
  # A fresh machine: continue from the state committed at the end of the last session, if any.
  if [ ! -f "$out/umbrella.ckpt" ] && [ -f "$STATE/res$residue/umbrella.ckpt" ]; then
    mkdir -p "$out" && cp "$STATE/res$residue/umbrella.ckpt" "$STATE/res$residue/cv.json" "$STATE/res$residue/cv.f32" "$out/"
  fi
  [ -f "$out/umbrella.ckpt" ] && resume="--resume"
  if [ -f "$out/done" ]; then return; fi
  nice -n 19 "$BIN" umbrella --system $DATA/system_obc1.xml --positions $DATA/min_energy.pdb \
    --topology $DATA/min_energy.pdb --cg "phi:$residue psi:$residue" --trans-walls omegas \
    --out "$out" --windows 20 --k 100 --trans-wall-k 1000 --steps 80000 --equilibrate 20000 \
    --record-every 50 --bins 100 --checkpoint-every 5000 --seed $((2100 + residue)) --no-analysis $resume
  touch "$out/done"
}
md() {
  local seed=$1 out=results/ace_ala2_nme_md/seed-$1 resume=""
  [ -f "$out/md.ckpt" ] && resume="--resume"
  nice -n 19 "$BIN" md --system $DATA/system_obc1.xml --positions $DATA/min_energy.pdb --out "$out" \
    --walkers 64 --steps 250000 --record-every 10 --seed "$seed" --cg backbone --dcd-walkers 0 \
    --checkpoint-every 10000 --property Threads=1 --histogram-bins 100 $resume
}
case "${2:-all}" in
  umbrella) umbrella 2; umbrella 3 ;;
  md-baseline) md 301 & md 302 & wait ;;
  md-reference) md 401 & md 402 & wait ;;
  all) umbrella 2; umbrella 3; md 301 & md 302 & wait; md 401 & md 402 & wait ;;
  *) echo "usage: $0 [BIN] [umbrella|md-baseline|md-reference|all]" >&2; exit 2 ;;
esac
echo "runs done: ${2:-all}"
