#!/bin/bash
# Stage 2 of the ALDP umbrella reference (results/ruler/README.md, finding 3): 24 x 24 windows,
# seed 2027, 100 ps of equilibration per window before recording (stage 1's windows still drifted
# after 100 ps), then 150 ps recorded every 50 fs. Resumable across sessions: the run lives in
# runs/umbrella-stage2; when that folder is missing, it is restored from the state committed in
# results/ruler/umbrella_stage2_state/ (that state was removed once the run was complete, 2026-12-06:
# its reference is data/reference/aldp_umbrella/). Runs niced; lower its scheduler group's weight too:
#   (setsid tools/umbrella_stage2.sh > runs/umbrella-stage2.log 2>&1 &)
#   echo 19 > /proc/$(pgrep -f "cgflow umbrella")/autogroup
# Before a session ends: kill it (it checkpoints every 5000 steps; a resume loses and repeats no
# sample) and copy umbrella.ckpt, cv.json and cv.f32 back into the state folder.
set -e
cd "$(dirname "$0")/.."
BIN=${1:-target/release/cgflow}
OUT=runs/umbrella-stage2
STATE=results/ruler/umbrella_stage2_state
if [ ! -f "$OUT/umbrella.ckpt" ] && [ -f "$STATE/umbrella.ckpt" ]; then
  mkdir -p "$OUT" && cp "$STATE/umbrella.ckpt" "$STATE/cv.json" "$STATE/cv.f32" "$OUT/"
fi
args="--out $OUT --windows 24 --k 100 --trans-wall-k 1000 --steps 150000 --equilibrate 100000 --record-every 50 --bins 100 --checkpoint-every 5000 --seed 2027"
[ -f "$OUT/umbrella.ckpt" ] && args="$args --resume"
exec nice -n 19 "$BIN" umbrella $args
