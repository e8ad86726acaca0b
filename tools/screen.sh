#!/usr/bin/env bash
# Screens search settings with the quick discrimination figures (docs/search-quality.md).
#   tools/screen.sh OUT_ROOT LABEL SEEDS -- [bayesnas search options...]
# Runs one search per seed with --derive perturb (which also writes the gamma_tilde scores),
# then re-derives each finished run with the threshold rule (the note's: op relevance against
# the cell type's best), the threshold rule against the op's own edge with every node keeping
# an input ("threshold-edge"), and the DARTS rule (--resume of a copy: no training), and
# prints the figures of each rule with tools/search_quality.py. A seed whose search folder
# already holds a genotype is not searched again (only re-derived).
set -euo pipefail
BIN=${BAYESNAS:-target/release/bayesnas}
root=$1; label=$2; seeds=$3; shift 4
mkdir -p "$root"
dirs_p=(); dirs_t=(); dirs_e=(); dirs_d=()
for s in $seeds; do
  d="$root/$label-s$s"
  if [ ! -f "$d/genotype.json" ]; then
    /usr/bin/time -f "%e s wall" -o "$d.time" "$BIN" search --seed "$s" --threads 2 --quiet --derive perturb --out "$d" "$@" > "$d.log" 2>&1 || { echo "search failed: $d.log"; tail -5 "$d.log"; exit 1; }
  fi
  for rule in threshold threshold-edge darts; do
    rd="$d-$rule"
    case $rule in
      threshold-edge) how=(--derive threshold --op-scope edge --node-repair keep-best-input);;
      *) how=(--derive "$rule");;
    esac
    rm -rf "$rd"; cp -r "$d" "$rd"; rm -f "$rd/selection.json" "$rd/perturbation.json"
    "$BIN" search --seed "$s" --threads 2 --quiet "${how[@]}" --resume "$rd" "$@" > "$rd.log" 2>&1 || { echo "re-derive failed: $rd.log"; exit 1; }
  done
  dirs_p+=("$d"); dirs_t+=("$d-threshold"); dirs_e+=("$d-threshold-edge"); dirs_d+=("$d-darts")
done
for rule in perturb threshold threshold-edge darts; do
  case $rule in
    perturb) ds=("${dirs_p[@]}");; threshold) ds=("${dirs_t[@]}");;
    threshold-edge) ds=("${dirs_e[@]}");; darts) ds=("${dirs_d[@]}");;
  esac
  python3 tools/search_quality.py figures "${ds[@]}" --label "$label ($rule) $*" --json "${FIGURES:-$root/figures.jsonl}"
done
for s in $seeds; do echo "$label-s$s: $(cat "$root/$label-s$s.time")"; done
