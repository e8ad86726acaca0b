#!/usr/bin/env bash
# The preference for cheaper ops among those the held-out set cannot tell apart (P9 in
# docs/search-quality.md): the six supernets of the default searches (P1: search seeds 0-5,
# made by tools/experiment_heldout_warmup.sh and tools/experiment_more_seeds.sh) read by
# perturbation with --cheaper-within Z (default 2 standard errors), with the default cap of 4
# parameter-free ops and without it. The scores are measured once more per supernet (the
# per-image standard errors are new; the rises are the same, bit for bit), the uncapped
# re-derivation reuses them. Then the screen figures and ONE quality protocol run of the
# capped cells (training seeds 0-2) beside DARTS_V2, the random cells and the P7 cells
# (finished trainings are reused from RUNS/quality).
#   BAYESNAS=target/release/bayesnas tools/experiment_cheaper.sh [RUNS_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-runs}
BIN=${BAYESNAS:-target/release/bayesnas}
Z=${Z:-2}
SEARCH_SEEDS=${SEARCH_SEEDS:-0 1 2 3 4 5}
root="$runs/screen"
for variant in cap4 nocap; do
  dirs=()
  for s in $SEARCH_SEEDS; do
    src="$root/P1-perturb384-s$s"
    [ -f "$src/genotype.json" ] || { echo "missing $src"; exit 1; }
    d="$root/P9-cheaper$Z-$variant-s$s"
    if [ ! -f "$d/selection.json" ]; then
      rm -rf "$d"; cp -r "$src" "$d"; rm -f "$d/selection.json"
      # the capped run measures the scores with their standard errors; the uncapped one
      # starts from its perturbation.json and reuses them
      [ "$variant" = nocap ] && cp "$root/P9-cheaper$Z-cap4-s$s/perturbation.json" "$d/"
      cap=4; [ "$variant" = nocap ] && cap=none
      /usr/bin/time -f "%e s wall" -o "$d.time" "$BIN" search --seed "$s" --threads 2 --quiet \
        --derive perturb --perturb-images 384 --max-param-free "$cap" --cheaper-within "$Z" \
        --resume "$d" > "$d.log" 2>&1 || { echo "re-derive failed: $d.log"; tail -5 "$d.log"; exit 1; }
    fi
    dirs+=("$d")
  done
  python3 tools/search_quality.py figures "${dirs[@]}" --label "P9-cheaper$Z-$variant (perturb)" --json "${FIGURES:-$root/figures.jsonl}"
done
[ "${SCREEN_ONLY:-0}" = 1 ] && exit 0
cells=(--cell darts_v2=darts_v2 --cell random1=random:1 --cell random2=random:2 --cell random3=random:3)
for s in $SEARCH_SEEDS; do cells+=(--cell "P1-s$s=$root/P1-perturb384-s$s/genotype.json"); done
for s in $SEARCH_SEEDS; do cells+=(--cell "P7-cap4-s$s=$root/P7-cap4-s$s/genotype.json"); done
for s in $SEARCH_SEEDS; do cells+=(--cell "P9-cap4-s$s=$root/P9-cheaper$Z-cap4-s$s/genotype.json"); done
for s in $SEARCH_SEEDS; do cells+=(--cell "P9-nocap-s$s=$root/P9-cheaper$Z-nocap-s$s/genotype.json"); done
python3 tools/quality_protocol.py --out "$runs/quality" --bin "$BIN" --seeds ${TRAIN_SEEDS:-0 1 2} "${cells[@]}"
