#!/usr/bin/env bash
# Eight training seeds (0-7) for the default's cells of nine search seeds (P9, cap 4, cheaper
# within 2 standard errors: search seeds 0-8), DARTS_V2 and the three random cells, in ONE
# quality protocol run (docs/search-quality.md, "Eight training seeds"). Finished trainings
# (seeds 0-4 of most cells) are reused from RUNS/quality; each new one takes 60-100 s on 2 cores.
#   BAYESNAS=target/release/bayesnas tools/experiment_training_seeds8.sh [RUNS_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-runs}
BIN=${BAYESNAS:-target/release/bayesnas}
root="$runs/screen"
cells=(--cell darts_v2=darts_v2 --cell random1=random:1 --cell random2=random:2 --cell random3=random:3)
for s in 0 1 2 3 4 5 6 7 8; do
  g="$root/P9-cheaper2-cap4-s$s/genotype.json"
  [ -f "$g" ] || { echo "missing $g (tools/experiment_cheaper.sh, tools/experiment_cheaper_new_seeds.sh)"; exit 1; }
  cells+=(--cell "P9-cap4-s$s=$g")
done
python3 tools/quality_protocol.py --out "$runs/quality" --bin "$BIN" --seeds ${TRAIN_SEEDS:-0 1 2 3 4 5 6 7} "${cells[@]}"
