#!/usr/bin/env bash
# The held-out size and warm-up experiment of docs/search-quality.md ("Held-out size and a
# longer warm-up"): P1 = --perturb-images 384 (three times the default 128), P2 =
# --warmup-steps 150 (about ten times the default's 14 warm-up steps), search seeds 0-2
# each, screened with tools/screen.sh, then ONE quality protocol run that trains, under the
# same budget and training seeds, DARTS_V2, three random cells, the default's three
# perturbation cells (docs/search-quality-data) and the P1 and P2 cells.
#   BAYESNAS=target/release/bayesnas tools/experiment_heldout_warmup.sh [RUNS_DIR]
# Takes about 75 minutes on 2 cores (6 searches, 39 trainings); finished searches and
# trainings are reused when run again.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-runs}
export BAYESNAS=${BAYESNAS:-target/release/bayesnas}
tools/screen.sh "$runs/screen" P1-perturb384 "0 1 2" -- --perturb-images 384
tools/screen.sh "$runs/screen" P2-warm150 "0 1 2" -- --warmup-steps 150
data=docs/search-quality-data
cells=(--cell darts_v2=darts_v2 --cell random1=random:1 --cell random2=random:2 --cell random3=random:3)
for s in 0 1 2; do cells+=(--cell "default-perturb-s$s=$data/default-perturb-search$s-genotype.json"); done
for s in 0 1 2; do cells+=(--cell "P2-s$s=$runs/screen/P2-warm150-s$s/genotype.json"); done
for s in 0 1 2; do cells+=(--cell "P1-s$s=$runs/screen/P1-perturb384-s$s/genotype.json"); done
python3 tools/quality_protocol.py --out "$runs/quality" --bin "$BAYESNAS" --seeds 0 1 2 "${cells[@]}"
