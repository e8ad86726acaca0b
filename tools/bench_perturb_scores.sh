#!/usr/bin/env bash
# Wall time of the perturbation scores of one trained supernet, two builds interleaved
# (A B A B ...): each run re-scores a copy of SUPERNET_DIR (its perturbation.json and
# selection.json removed; --resume then only measures the scores and derives the cell) and
# the scores each build wrote are compared byte for byte. Run on a quiet machine.
#   tools/bench_perturb_scores.sh SUPERNET_DIR SEED OLD_BIN NEW_BIN [REPEATS] > table.md
set -euo pipefail
src=$1; seed=$2; old=$3; new=$4; reps=${5:-2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "| run | build | wall s | max RSS MB |"
echo "|---|---|---|---|"
for r in $(seq 1 "$reps"); do
  for b in old new; do
    bin=$old; [ "$b" = new ] && bin=$new
    d="$work/$b-$r"
    cp -r "$src" "$d"; rm -f "$d/perturbation.json" "$d/selection.json"
    /usr/bin/time -f "%e %M" -o "$d.time" "$bin" search --seed "$seed" --threads 2 --quiet --resume "$d" > "$d.log" 2>&1 ||
      { echo "failed: $(tail -3 "$d.log")" >&2; exit 1; }
    read -r wall rss < "$d.time"
    echo "| $r | $b | $wall | $((rss / 1024)) |"
  done
done
for r in $(seq 1 "$reps"); do
  cmp -s "$work/old-$r/perturbation.json" "$work/new-1/perturbation.json" ||
    { echo "perturbation.json of old run $r differs from the new build's" >&2; exit 1; }
  cmp -s "$work/new-$r/perturbation.json" "$work/new-1/perturbation.json" ||
    { echo "perturbation.json of new run $r differs" >&2; exit 1; }
  cmp -s "$work/old-$r/genotype.json" "$work/new-$r/genotype.json" ||
    { echo "genotype.json differs in run $r" >&2; exit 1; }
done
echo
echo "perturbation.json and genotype.json identical across builds and runs"
