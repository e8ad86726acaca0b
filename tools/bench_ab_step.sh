#!/usr/bin/env bash
# Interleaved A/B of `bayesnas bench step` (defaults: bayesnas space, 8 cells, C=16, batch 32,
# 3x32x32, CPU, 2 threads) between two binaries, ROUNDS rounds (default 3), each printing
# its JSON line prefixed with the side and the round. Run on a quiet machine.
#   OLD=path/to/old/bayesnas NEW=target/release/bayesnas tools/bench_ab_step.sh [ROUNDS]
set -euo pipefail
old=${OLD:?OLD: the baseline binary}; new=${NEW:-target/release/bayesnas}
for r in $(seq 1 "${1:-3}"); do
  for which in old new; do
    bin=$old; [ "$which" = new ] && bin=$new
    printf '%s %s ' "$which" "$r"; "$bin" bench step --steps 3 --warmup 1 --threads 2 2>/dev/null | tail -1
  done
done
