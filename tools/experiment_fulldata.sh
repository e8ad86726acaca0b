#!/usr/bin/env bash
# The search-budget experiment of docs/search-quality.md ("A six times larger search budget,
# P6"): the default search settings on the full Fashion-MNIST training set (60,000 images:
# 5,400 warm-up images, 48,600 switch images, 6,000 held out; the embedded default searches
# 10,000 images) instead of the embedded data, search seeds 0-2, screened with
# tools/screen.sh, then ONE quality protocol run that trains, under the protocol's budget
# and training seeds, DARTS_V2, the three random cells, the default's (P1) three cells and the
# P6 cells. Trainings already in the protocol's output folder are reused.
#   BAYESNAS=target/release/bayesnas tools/experiment_fulldata.sh [RUNS_DIR]
# Takes about 80 minutes on 2 cores (3 searches of about 15 minutes, 9 new trainings).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-runs}
export BAYESNAS=${BAYESNAS:-target/release/bayesnas}
fmnist=${FMNIST_DIR:-../shared/data/fashion-mnist}
tools/screen.sh "$runs/screen" P6-fulldata "0 1 2" -- --data-dir "$fmnist"
cells=(--cell darts_v2=darts_v2 --cell random1=random:1 --cell random2=random:2 --cell random3=random:3)
for s in 0 1 2; do cells+=(--cell "P1-s$s=$runs/screen/P1-perturb384-s$s/genotype.json"); done
for s in 0 1 2; do cells+=(--cell "P6-s$s=$runs/screen/P6-fulldata-s$s/genotype.json"); done
python3 tools/quality_protocol.py --out "$runs/quality" --bin "$BAYESNAS" --seeds 0 1 2 "${cells[@]}"
