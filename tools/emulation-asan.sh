#!/usr/bin/env bash
# Runs the host-emulated kernel tests (crates/kernel-emulation) with the kernels, the shim and
# the launchers compiled under AddressSanitizer, so an out-of-bounds read or write in a kernel
# (which the device might silently tolerate) fails the run with ASan's report.
#
#   tools/emulation-asan.sh              # every kernel-emulation test binary under ASan
#   tools/emulation-asan.sh --self-test  # shows ASan catches the planted out-of-bounds write
#                                        # (csrc/planted.cpp); succeeds only if it is caught
#
# Only the C++ side is instrumented (BAYESNAS_EMU_SANITIZE=address, read by
# crates/kernel-emulation/build.rs); the Rust test binaries run with the ASan runtime
# preloaded (LD_PRELOAD=$(g++ -print-file-name=libasan.so)), which also puts red zones around
# the Rust Vecs the kernels write, as they are malloc'd. Builds into target/asan
# (CARGO_TARGET_DIR), so the normal build is untouched. Needs g++ with libasan.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mode=all
case "${1:-}" in
  --self-test) mode=self-test ;;
  "") ;;
  *) echo "usage: $0 [--self-test]" >&2; exit 2 ;;
esac

cxx=${CXX:-g++}
asan_lib=$("$cxx" -print-file-name=libasan.so)
if [ ! -e "$asan_lib" ]; then
  echo "emulation-asan: $cxx has no libasan.so (install libasan / gcc's sanitizer runtime)" >&2
  exit 1
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/asan}
export BAYESNAS_EMU_SANITIZE=address
# Leak checking is off: the test harness and the shim's fiber stacks live until exit.
asan_options=detect_leaks=0:abort_on_error=0:halt_on_error=1:strict_string_checks=1:detect_stack_use_after_return=0

start=$(date +%s)
json=$(mktemp)
trap 'rm -f "$json"' EXIT
cargo test -p bayesnas-kernel-emulation --tests --no-run --message-format=json >"$json"
# The test executables cargo built (lib unit tests and tests/*.rs).
mapfile -t bins < <(python3 - "$json" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])
PY
)
if [ "${#bins[@]}" -eq 0 ]; then
  echo "emulation-asan: no test binaries were built" >&2
  exit 1
fi

run() {
  LD_PRELOAD="$asan_lib" ASAN_OPTIONS="$asan_options" "$@"
}

if [ "$mode" = self-test ]; then
  bin=""
  for b in "${bins[@]}"; do
    case "$(basename "$b")" in edge_cases-*) bin=$b ;; esac
  done
  [ -n "$bin" ] || { echo "emulation-asan: edge_cases test binary not found" >&2; exit 1; }
  log=$(mktemp)
  set +e
  run "$bin" --ignored --exact planted_out_of_bounds_write >"$log" 2>&1
  rc=$?
  set -e
  if [ "$rc" -ne 0 ] && grep -q "heap-buffer-overflow" "$log" && grep -q "planted_oob_write" "$log"; then
    grep -m1 "ERROR: AddressSanitizer" "$log"
    grep -m1 "planted_oob_write" "$log"
    echo "emulation-asan self-test: ASan caught the planted out-of-bounds write (exit $rc)" \
      "in $(( $(date +%s) - start ))s"
    rm -f "$log"
    exit 0
  fi
  cat "$log"
  echo "emulation-asan self-test FAILED: the planted out-of-bounds write was not reported (exit $rc)" >&2
  rm -f "$log"
  exit 1
fi

failed=0
for b in "${bins[@]}"; do
  echo "== $(basename "$b") (ASan)"
  if ! run "$b" --test-threads="${ASAN_TEST_THREADS:-2}"; then
    failed=1
    echo "emulation-asan: $(basename "$b") FAILED" >&2
  fi
done
echo "emulation-asan: ${#bins[@]} test binaries, $([ $failed = 0 ] && echo passed || echo FAILED)" \
  "in $(( $(date +%s) - start ))s"
exit $failed
