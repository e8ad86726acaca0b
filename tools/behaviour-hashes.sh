#!/usr/bin/env bash
# Hashes of the outputs that a behaviour-preserving change must leave byte-identical:
# genotype.json, relevance.json and selection.json of `bayesnas search --max-batches 40`
# (seeds 0 and 1, embedded data) and report.json of a short `bayesnas compress` run per model
# (MNIST from ../shared/data/mnist). Usage: tools/behaviour-hashes.sh [OUT_DIR]
# BAYESNAS names the binary (default: target/release/bayesnas). Prints `sha256  path` lines.
# report.json records wall-clock "seconds" fields; those lines are dropped before hashing
# (report.nosec.json), every other byte counts.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${BAYESNAS:-$root/target/release/bayesnas}
out=${1:-$(mktemp -d)}
mnist=${MNIST_DIR:-$root/../shared/data/mnist}
mkdir -p "$out"
for seed in 0 1; do
  "$bin" search --max-batches 40 --seed "$seed" --threads 2 --out "$out/search-s$seed" >/dev/null 2>&1
done
for model in lenet-300-100 lenet5; do
  "$bin" compress --model "$model" --data-dir "$mnist" --loops 2 --epochs-per-loop 1 \
    --weight-loops 1 --finetune-epochs 1 --max-batches 20 --threads 2 --seed 0 \
    --out "$out/compress-$model" >/dev/null 2>&1
done
cd "$out"
for model in lenet-300-100 lenet5; do
  grep -v '"seconds":' "compress-$model/report.json" > "compress-$model/report.nosec.json"
done
sha256sum search-s*/genotype.json search-s*/relevance.json search-s*/selection.json \
  compress-*/report.nosec.json
