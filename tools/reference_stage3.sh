#!/usr/bin/env bash
# Stage 3 of the ALDP reference (issue 17; results/ruler/README.md, "Stage 3"): the stage-2 umbrella
# samples at full resolution plus two independent unbiased MD realisations in the same MBAR estimate.
#
#   1. runs/umbrella-stage2: stage 2 of the reference (24 x 24 windows, seed 2027, 100 ps of
#      equilibration, 150 ps recorded every 50 fs). Its full samples are 14 MB and live only in
#      runs/; when that folder is missing, the run is restored from its state at 100 of 150 ps,
#      committed in bf226aa (results/ruler/umbrella_stage2_state/), and resumed to the end.
#   2. data/reference/aldp_md/seed-201 and seed-202: unbiased MD for the estimate, independent of
#      the MD baseline (seeds 101-104, which the reference is checked against): 64 walkers x
#      500,000 steps each from the minimum-energy structure, (phi, psi) every 10 steps into
#      100 x 100 cumulative histograms (a few MB, committed, resumed from their checkpoints).
#
# Everything runs at nice 19; runs started with setsid are their own scheduler autogroup, where nice
# does not yield to the rest of the machine, so lower the groups' weight too:
#   (setsid tools/reference_stage3.sh runs/cgflow-bin > runs/stage3.log 2>&1 &)
#   for p in $(pgrep -f "cgflow-bin"); do echo 19 > /proc/$p/autogroup; done
# Run it again (this session or a later one) to resume. Then the estimate:
#   cgflow reference --umbrella runs/umbrella-stage2 --md data/reference/aldp_md/seed-201 \
#       --md data/reference/aldp_md/seed-202 --out runs/reference-stage3 --stride 1 --bootstrap 20
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/cgflow}
U=runs/umbrella-stage2
if [ ! -f "$U/umbrella.ckpt" ]; then
  mkdir -p "$U"
  for f in umbrella.ckpt cv.json cv.f32; do
    git show "bf226aa:results/ruler/umbrella_stage2_state/$f" > "$U/$f" || exit 1
  done
fi
md() {
  local seed=$1 out=data/reference/aldp_md/seed-$1 resume=""
  [ -f "$out/md.ckpt" ] && resume="--resume"
  nice -n 19 "$BIN" md --system data/alanine_dipeptide/aldp_obc1.xml \
    --positions data/alanine_dipeptide/min_energy.pdb --out "$out" --walkers 64 --steps 500000 \
    --record-every 10 --seed "$seed" --dcd-walkers 0 --checkpoint-every 10000 --property Threads=1 \
    --histogram-bins 100 $resume
}
md 201 & md 202 &
nice -n 19 "$BIN" umbrella --out "$U" --windows 24 --k 100 --trans-wall-k 1000 --steps 150000 \
  --equilibrate 100000 --record-every 50 --bins 100 --checkpoint-every 5000 --seed 2027 --resume \
  --no-analysis &
wait
