#!/usr/bin/env bash
# Active learning of Ace-(Ala)2-Nme's 4D CG PMF (phi2, psi2, phi3, psi3) with the fast preset
# (issue 18), through the one driver: runs/ace-al-fast-seed-N. Resumable: running it again
# continues the run from its last checkpoint. Its marginal PMFs per iteration
# (pmf_0_1_iterNN_kt.npy, pmf_2_3_iterNN_kt.npy) are read against the marginal references and
# the MD baseline afterwards (`cgflow compare --method-pmf`).
#   tools/ace_ala2_nme_al.sh SEED [BIN]
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${1:?seed}
BIN=${2:-target/release/cgflow}
OUT=runs/ace-al-fast-seed-$SEED
DATA=data/ace_ala2_nme
CONFIG=runs/ace-al-fast-seed-$SEED.json
if [ ! -f "$OUT/config.json" ]; then
  "$BIN" al --preset fast --system $DATA/system_obc1.xml --structure $DATA/min_energy.pdb --cg backbone \
    --print-config | python3 -c "import json,sys; c=json.load(sys.stdin); c['seed']=$SEED; print(json.dumps(c, indent=2))" > "$CONFIG"
  exec nice -n 19 "$BIN" al --config "$CONFIG" --system $DATA/system_obc1.xml --structure $DATA/min_energy.pdb \
    --cg backbone --out "$OUT"
fi
exec nice -n 19 "$BIN" al --resume --system $DATA/system_obc1.xml --structure $DATA/min_energy.pdb --cg backbone --out "$OUT"
