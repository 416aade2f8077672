#!/usr/bin/env bash
# Stage 3 of the ALDP reference, after tools/reference_stage3.sh and tools/reference_barrier_windows.sh
# (results/ruler/README.md, "Stage 3"): the MBAR estimate from stage 2's umbrella samples, the stiff
# barrier windows and the two reference MD runs, into runs/reference-stage3; then its check against
# the MD baseline (seeds 101-104, not part of the estimate).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/cgflow}
OUT=runs/reference-stage3
"$BIN" reference --umbrella runs/umbrella-stage2 --umbrella runs/umbrella-barrier-c \
  --md data/reference/aldp_md/seed-201 --md data/reference/aldp_md/seed-202 \
  --out "$OUT" --stride 1 --bootstrap "${BOOTSTRAP:-20}" --blocks 10 ${EXTRA:-} \
  --check-md results/md_baseline/seed-101 --check-md results/md_baseline/seed-102 \
  --check-md results/md_baseline/seed-103 --check-md results/md_baseline/seed-104 > "$OUT.log" 2>&1
echo "reference written to $OUT"
