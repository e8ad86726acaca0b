#!/usr/bin/env bash
# The parameter-free cap experiment of docs/search-quality.md ("A cap on parameter-free ops
# over three search seeds (P7)"): the supernets of the default searches (P1: search seeds 0-2,
# made by tools/experiment_heldout_warmup.sh) re-derived by perturbation with
# --max-param-free CAP for each CAP in $CAPS (default "4 2"), no retraining (the scores in
# each run's perturbation.json are reused, so a re-derivation takes seconds); the screen
# figures; then ONE quality protocol run (training seeds 0-4) of the capped cells beside
# DARTS_V2, the random cells and the P1 cells (finished trainings are reused from
# RUNS/quality).
# SEARCH_SEEDS (default "0 1 2") picks the P1 supernets, TRAIN_SEEDS (default "0 1 2 3 4") the
# protocol's training seeds.
#   BAYESNAS=target/release/bayesnas tools/experiment_cap.sh [RUNS_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-runs}
BIN=${BAYESNAS:-target/release/bayesnas}
CAPS=${CAPS:-4 2}
SEARCH_SEEDS=${SEARCH_SEEDS:-0 1 2}
root="$runs/screen"
for cap in $CAPS; do
  dirs=()
  for s in $SEARCH_SEEDS; do
    src="$root/P1-perturb384-s$s"
    [ -f "$src/genotype.json" ] || { echo "missing $src (run tools/experiment_heldout_warmup.sh, or tools/experiment_more_seeds.sh for seeds 3-5)"; exit 1; }
    d="$root/P7-cap$cap-s$s"
    if [ ! -f "$d/selection.json" ]; then
      # perturbation.json stays: the re-derivation reuses the scores of this supernet
      rm -rf "$d"; cp -r "$src" "$d"; rm -f "$d/selection.json"
      /usr/bin/time -f "%e s wall" -o "$d.time" "$BIN" search --seed "$s" --threads 2 --quiet \
        --derive perturb --perturb-images 384 --max-param-free "$cap" --resume "$d" > "$d.log" 2>&1 \
        || { echo "re-derive failed: $d.log"; tail -5 "$d.log"; exit 1; }
    fi
    dirs+=("$d")
  done
  python3 tools/search_quality.py figures "${dirs[@]}" --label "P7-cap$cap (perturb) --max-param-free $cap" --json "${FIGURES:-$root/figures.jsonl}"
  for s in $SEARCH_SEEDS; do echo "P7-cap$cap-s$s re-derivation: $(cat "$root/P7-cap$cap-s$s.time")"; done
done
[ "${SCREEN_ONLY:-0}" = 1 ] && exit 0
cells=(--cell darts_v2=darts_v2 --cell random1=random:1 --cell random2=random:2 --cell random3=random:3)
for s in $SEARCH_SEEDS; do cells+=(--cell "P1-s$s=$root/P1-perturb384-s$s/genotype.json"); done
for cap in $CAPS; do
  for s in $SEARCH_SEEDS; do cells+=(--cell "P7-cap$cap-s$s=$root/P7-cap$cap-s$s/genotype.json"); done
done
python3 tools/quality_protocol.py --out "$runs/quality" --bin "$BIN" --seeds ${TRAIN_SEEDS:-0 1 2 3 4} "${cells[@]}"
