#!/usr/bin/env bash
# Width of the band of --cheaper-within against the agreement of search seeds
# (docs/search-quality.md, "How wide a band"): the nine default supernets of search seeds 0-8
# (their P9 folders, whose perturbation.json holds the rises and standard errors) re-derived
# with --cheaper-within Z for each Z given, the default cap of 4 parameter-free ops kept. No
# training and no new scores: each re-derivation reuses perturbation.json and takes seconds.
# Figures per seed triple (0-2, 3-5, 6-8) and over all nine seeds.
#   BAYESNAS=target/release/bayesnas tools/experiment_cheaper_width.sh [RUNS_DIR] [Z ...]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-runs}
shift || true
widths=("$@")
[ ${#widths[@]} -gt 0 ] || widths=(0 1 2 3 4 6 100)
BIN=${BAYESNAS:-target/release/bayesnas}
root="$runs/screen"
out=${FIGURES:-$root/cheaper-width-figures.jsonl}
rm -f "$out"
for Z in "${widths[@]}"; do
  for s in 0 1 2 3 4 5 6 7 8; do
    src="$root/P9-cheaper2-cap4-s$s"
    [ -f "$src/perturbation.json" ] || { echo "missing $src (tools/experiment_cheaper.sh, tools/experiment_cheaper_new_seeds.sh)"; exit 1; }
    d="$root/ZW-cheaper$Z-cap4-s$s"
    if [ ! -f "$d/selection.json" ]; then
      rm -rf "$d"; cp -r "$src" "$d"; rm -f "$d/selection.json"
      "$BIN" search --seed "$s" --threads 2 --quiet --derive perturb --perturb-images 384 \
        --max-param-free 4 --cheaper-within "$Z" --resume "$d" > "$d.log" 2>&1 ||
        { echo "re-derive failed: $d.log"; tail -5 "$d.log"; exit 1; }
    fi
  done
  for triple in "0 1 2" "3 4 5" "6 7 8" "0 1 2 3 4 5 6 7 8"; do
    dirs=()
    for s in $triple; do dirs+=("$root/ZW-cheaper$Z-cap4-s$s"); done
    python3 tools/search_quality.py figures "${dirs[@]}" --label "cheaper within $Z, seeds $triple" --json "$out" > /dev/null
  done
done
python3 tools/search_quality.py table "$out"
