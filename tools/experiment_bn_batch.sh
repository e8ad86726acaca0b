#!/usr/bin/env bash
# The batch-statistics experiment of docs/search-quality.md (P8): the six supernets of the
# default searches (P1, search seeds 0-5: tools/experiment_heldout_warmup.sh and
# tools/experiment_more_seeds.sh) re-scored by perturbation with --perturb-bn batch (each
# held-out batch normalised with its own statistics, so a removal's change of scale does not
# count), no retraining; read with the default cap (4 parameter-free ops in the normal cell)
# and without it (--max-param-free none, the scores reused); the screen figures; then ONE
# quality protocol run (training seeds 0-2) beside DARTS_V2, the random cells and the P1 and
# P7 cells (finished trainings are reused from RUNS/quality, identical cells trained once).
#   BAYESNAS=target/release/bayesnas tools/experiment_bn_batch.sh [RUNS_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-runs}
BIN=${BAYESNAS:-target/release/bayesnas}
root="$runs/screen"
SEARCH_SEEDS=${SEARCH_SEEDS:-0 1 2 3 4 5}
for s in $SEARCH_SEEDS; do
  src="$root/P1-perturb384-s$s"
  [ -f "$src/genotype.json" ] || { echo "missing $src"; exit 1; }
  for variant in cap4 nocap; do
    d="$root/P8-batchbn-$variant-s$s"
    [ -f "$d/selection.json" ] && continue
    rm -rf "$d"; cp -r "$src" "$d"; rm -f "$d/selection.json" "$d/perturbation.json"
    # the nocap variant reuses the cap4 variant's batch-statistics scores
    [ "$variant" = nocap ] && cp "$root/P8-batchbn-cap4-s$s/perturbation.json" "$d/"
    cap=(); [ "$variant" = nocap ] && cap=(--max-param-free none)
    /usr/bin/time -f "%e s wall" -o "$d.time" "$BIN" search --seed "$s" --threads 2 --quiet \
      --derive perturb --perturb-images 384 --perturb-bn batch "${cap[@]}" --resume "$d" > "$d.log" 2>&1 \
      || { echo "re-derive failed: $d.log"; tail -5 "$d.log"; exit 1; }
  done
done
for variant in cap4 nocap; do
  dirs=(); for s in $SEARCH_SEEDS; do dirs+=("$root/P8-batchbn-$variant-s$s"); done
  python3 tools/search_quality.py figures "${dirs[@]}" --label "P8 perturb, --perturb-bn batch, $variant, search seeds ${SEARCH_SEEDS// /,}" --json "${FIGURES:-$root/figures.jsonl}"
  for s in $SEARCH_SEEDS; do echo "P8-batchbn-$variant-s$s re-derivation: $(cat "$root/P8-batchbn-$variant-s$s.time")"; done
done
[ "${SCREEN_ONLY:-0}" = 1 ] && exit 0
cells=(--cell darts_v2=darts_v2 --cell random1=random:1 --cell random2=random:2 --cell random3=random:3)
for s in $SEARCH_SEEDS; do cells+=(--cell "P1-s$s=$root/P1-perturb384-s$s/genotype.json"); done
for s in $SEARCH_SEEDS; do cells+=(--cell "P7-cap4-s$s=$root/P7-cap4-s$s/genotype.json"); done
for v in cap4 nocap; do
  for s in $SEARCH_SEEDS; do cells+=(--cell "P8-$v-s$s=$root/P8-batchbn-$v-s$s/genotype.json"); done
done
python3 tools/quality_protocol.py --out "$runs/quality" --bin "$BIN" --seeds ${TRAIN_SEEDS:-0 1 2} "${cells[@]}"
