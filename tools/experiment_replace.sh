#!/usr/bin/env bash
# The replacement-score experiment of docs/search-quality.md ("Ops that replace their edge"):
# the supernets of the default searches (P1: --perturb-images 384, search seeds 0-2, made by
# tools/experiment_heldout_warmup.sh) re-derived with --perturb-mode replace (each op alone
# replaces its edge's mixture; edges ranked by the loss rise when removed), no retraining;
# the screen figures of both modes; then ONE quality protocol run of the new cells beside
# DARTS_V2, the random cells and the P1 cells (finished trainings are reused from RUNS/quality).
#   BAYESNAS=target/release/bayesnas tools/experiment_replace.sh [RUNS_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-runs}
BIN=${BAYESNAS:-target/release/bayesnas}
root="$runs/screen"
dirs=()
for s in 0 1 2; do
  src="$root/P1-perturb384-s$s"
  [ -f "$src/genotype.json" ] || { echo "missing $src (run tools/experiment_heldout_warmup.sh)"; exit 1; }
  d="$root/P5-replace-s$s"
  rm -rf "$d"; cp -r "$src" "$d"; rm -f "$d/selection.json" "$d/perturbation.json"
  /usr/bin/time -f "%e s wall" -o "$d.time" "$BIN" search --seed "$s" --threads 2 --quiet \
    --derive perturb --perturb-mode replace --perturb-images 384 --resume "$d" > "$d.log" 2>&1 \
    || { echo "re-derive failed: $d.log"; tail -5 "$d.log"; exit 1; }
  dirs+=("$d")
done
python3 tools/search_quality.py figures "${dirs[@]}" --label "P5-replace (perturb, replace) --perturb-mode replace" --json "${FIGURES:-$root/figures.jsonl}"
for s in 0 1 2; do echo "P5-replace-s$s re-derivation: $(cat "$root/P5-replace-s$s.time")"; done
[ "${SCREEN_ONLY:-0}" = 1 ] && exit 0
data=docs/search-quality-data
cells=(--cell darts_v2=darts_v2 --cell random1=random:1 --cell random2=random:2 --cell random3=random:3)
for s in 0 1 2; do cells+=(--cell "P1-s$s=$root/P1-perturb384-s$s/genotype.json"); done
for s in 0 1 2; do cells+=(--cell "P5-s$s=$root/P5-replace-s$s/genotype.json"); done
python3 tools/quality_protocol.py --out "$runs/quality" --bin "$BIN" --seeds 0 1 2 "${cells[@]}"
