#!/usr/bin/env bash
# The second peptide's active-learning table (issue 18): the 2D marginal references from the
# umbrella runs of tools/ace_ala2_nme_runs.sh (with the reference MD runs in the same estimate),
# then, per marginal, MD's cost curve from the MD baseline and the active-learning run's speedup
# at every iteration (its marginal PMFs pmf_I_J_iterNN_kt.npy against the marginal reference).
#   tools/ace_ala2_nme_table.sh RUN [BIN] [MD_THROUGHPUT]
# RUN: an active-learning run folder of tools/ace_ala2_nme_al.sh (e.g. runs/ace-al-fast-seed-1).
# Writes results/ace_ala2_nme_al/<run name>/{reference_R, compare_I_J.json, speedup_I_J.txt, ...}.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:?run folder}
BIN=${2:-target/release/cgflow}
THROUGHPUT=${3:-}
S=data/ace_ala2_nme/system_obc1.xml
OUT=results/ace_ala2_nme_al/$(basename "$RUN")
mkdir -p "$OUT"
cp "$RUN/log.jsonl" "$RUN/config.json" "$RUN/summary.json" "$OUT/" 2>/dev/null || true
for residue in 2 3; do
  pair=$(( 2 * (residue - 2) )),$(( 2 * (residue - 2) + 1 ))
  tag=${pair/,/_}
  REF=results/ace_ala2_nme_reference/residue-$residue
  if [ ! -f "$REF/reference_probabilities.npy" ]; then
    "$BIN" reference --system $S --umbrella runs/ace-umbrella-res$residue \
      --md results/ace_ala2_nme_md/seed-401 --md results/ace_ala2_nme_md/seed-402 --md-pair "$pair" \
      --check-md results/ace_ala2_nme_md/seed-301 --check-md results/ace_ala2_nme_md/seed-302 \
      --out "$REF" --bootstrap "${BOOTSTRAP:-10}" > "$REF.log" 2>&1
  fi
  methods=()
  while read -r it evals wall; do
    methods+=(--method-pmf "$RUN/pmf_${tag}_iter${it}_kt.npy:$evals:$wall")
  done < <(python3 -c "
import json
for line in open('$RUN/log.jsonl'):
    d = json.loads(line)
    print('%02d' % d['iteration'], d['evaluations'], d['wall_s'])")
  extra=()
  [ -n "$THROUGHPUT" ] && extra=(--md-throughput "$THROUGHPUT")
  "$BIN" compare --system $S --reference "$REF/reference_probabilities.npy" \
    --md results/ace_ala2_nme_md/seed-301 --md results/ace_ala2_nme_md/seed-302 --cv-pair "$pair" --groups 2,1 \
    "${methods[@]}" "${extra[@]}" --method-label "active learning, fast preset, $(basename "$RUN")" \
    --plot "$OUT/kld_vs_evaluations_$tag.png" --out "$OUT/compare_$tag.json" > "$OUT/speedup_$tag.txt"
done
echo "written: $OUT"
