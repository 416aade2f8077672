#!/usr/bin/env bash
# Re-reads the committed ALDP results on the reference in data/reference/aldp_umbrella (issue 17,
# item 5): MD's throughput on this machine (two single-thread 128-walker runs side by side, MD's
# best arrangement on 2 cores), the MD cost curve of the baseline, the active-learning runs of the
# fast preset (seeds 1-3) and the grid control, each through `cgflow compare`.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/cgflow}
REF=data/reference/aldp_umbrella/reference_probabilities.npy
MD=(--md results/md_baseline/seed-101 --md results/md_baseline/seed-102 --md results/md_baseline/seed-103 --md results/md_baseline/seed-104)
tmp=$(mktemp -d)
start=$(date +%s.%N)
for s in 1 2; do
  "$BIN" md --system data/alanine_dipeptide/aldp_obc1.xml --positions data/alanine_dipeptide/min_energy.pdb \
    --out "$tmp/md$s" --walkers 128 --steps 3000 --record-every 10 --seed $s --dcd-walkers 0 \
    --property Threads=1 > /dev/null 2>&1 &
done
wait
end=$(date +%s.%N)
THROUGHPUT=$(python3 -c "print(round(2 * 128 * 3000 / ($end - $start)))")
rm -rf "$tmp"
echo "MD throughput: $THROUGHPUT walker-steps/s (2 x 128 walkers x 3000 steps, one thread each, side by side)"
"$BIN" compare --reference $REF "${MD[@]}" --groups 4,1 --milestones 1e6,1e7,1e8,4e8 \
  --plot results/md_baseline/md_curve.png --out results/md_baseline/md_curve.json > results/md_baseline/md_curve.txt
"$BIN" compare --reference $REF "${MD[@]}" --groups 4,1 \
  --method-pmf results/aldp_al_fast/pmf_kt.npy:1857030:4528.7 \
  --method-pmf results/aldp_al_fast/seed2/pmf_kt.npy:1855278:4534.1 \
  --method-pmf results/aldp_al_fast/seed3/pmf_kt.npy:1856926:2824.7 \
  --method-label "active learning, fast preset, seeds 1-3 (final PMFs)" --md-throughput "$THROUGHPUT" \
  --plot results/aldp_al_fast/new_ruler/kld_vs_evaluations.png \
  --out results/aldp_al_fast/new_ruler/compare.json > results/aldp_al_fast/new_ruler/speedup.txt
"$BIN" compare --reference $REF "${MD[@]}" --groups 4,1 \
  --method-pmf results/aldp_grid_fast/new_ruler/pmf_kt.npy:354845:171.3 \
  --method-label "grid conditioning (fast preset of 2026-11-23, rerun 2026-12-06)" --md-throughput "$THROUGHPUT" \
  --out results/aldp_grid_fast/new_ruler/compare.json > results/aldp_grid_fast/new_ruler/speedup.txt
echo "written: results/md_baseline/md_curve.{json,png,txt}, results/aldp_al_fast/new_ruler/, results/aldp_grid_fast/new_ruler/"
