#!/usr/bin/env bash
# P9 on search seeds the rule was not conceived on (docs/search-quality.md, P9): default
# searches (the build's defaults: --derive perturb, 384 held-out images, at most 4
# parameter-free ops in the normal cell) for SEARCH_SEEDS (default "6 7 8") with
# tools/screen.sh, each finished run re-derived with --cheaper-within 2 (the scores, with
# their standard errors, are reused: seconds), the screen figures of both, then ONE quality
# protocol run of both cells per search seed (training seeds 0-2) beside DARTS_V2 and the
# random cells (finished trainings are reused from RUNS/quality).
#   BAYESNAS=target/release/bayesnas tools/experiment_cheaper_new_seeds.sh [RUNS_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-runs}
BIN=${BAYESNAS:-target/release/bayesnas}
export BAYESNAS=$BIN
SEARCH_SEEDS=${SEARCH_SEEDS:-6 7 8}
root="$runs/screen"
FIGURES=${FIGURES:-$root/figures.jsonl} tools/screen.sh "$root" D-cap4 "$SEARCH_SEEDS" --
dirs=()
for s in $SEARCH_SEEDS; do
  src="$root/D-cap4-s$s"; d="$root/P9-cheaper2-cap4-s$s"
  if [ ! -f "$d/selection.json" ]; then
    rm -rf "$d"; cp -r "$src" "$d"; rm -f "$d/selection.json"
    /usr/bin/time -f "%e s wall" -o "$d.time" "$BIN" search --seed "$s" --threads 2 --quiet \
      --cheaper-within 2 --resume "$d" > "$d.log" 2>&1 || { echo "re-derive failed: $d.log"; tail -5 "$d.log"; exit 1; }
  fi
  dirs+=("$d")
done
python3 tools/search_quality.py figures "${dirs[@]}" --label "P9-cheaper2-cap4 (perturb), new search seeds" --json "${FIGURES:-$root/figures.jsonl}"
[ "${SCREEN_ONLY:-0}" = 1 ] && exit 0
cells=(--cell darts_v2=darts_v2 --cell random1=random:1 --cell random2=random:2 --cell random3=random:3)
for s in $SEARCH_SEEDS; do cells+=(--cell "D-cap4-s$s=$root/D-cap4-s$s/genotype.json"); done
for s in $SEARCH_SEEDS; do cells+=(--cell "P9-cap4-s$s=$root/P9-cheaper2-cap4-s$s/genotype.json"); done
python3 tools/quality_protocol.py --out "$runs/quality" --bin "$BIN" --seeds ${TRAIN_SEEDS:-0 1 2} "${cells[@]}"
