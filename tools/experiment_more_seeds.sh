#!/usr/bin/env bash
# Three more search seeds (3, 4, 5) for the choice between the default (P1: perturbation on
# 384 held-out images, no cap) and the parameter-free cap (P7: --max-param-free 4) in
# docs/search-quality.md: the default searches with tools/screen.sh, their supernets
# re-derived with the cap (tools/experiment_cap.sh, scores reused), then ONE quality protocol
# run of both cells of each new search seed, training seeds 0-2, beside DARTS_V2 and the random
# cells (finished trainings are reused from RUNS/quality).
#   BAYESNAS=target/release/bayesnas tools/experiment_more_seeds.sh [RUNS_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-runs}
export BAYESNAS=${BAYESNAS:-target/release/bayesnas}
tools/screen.sh "$runs/screen" P1-perturb384 "3 4 5" -- --perturb-images 384
SEARCH_SEEDS="3 4 5" CAPS=4 TRAIN_SEEDS="0 1 2" tools/experiment_cap.sh "$runs"
