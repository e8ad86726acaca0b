#!/usr/bin/env bash
# Builds, on this CPU-only machine, everything a GPU check needs, into the git-ignored
# gpu-bundle/: the release `bayesnas`, the test executables (device_parity,
# device_parity_edges, the engine's unit tests, the search's device_step) stripped of debug
# info, with their PTX embedded; the Python tools the check calls; bundle.env (revision,
# kernel count, and the newest GLIBC_x.y symbol version the executables need, from objdump -T);
# and run.sh, a copy of tools/gpu-run.sh: the ONE command to run on the lent GPU machine
# (which has nvcc, PyTorch and python3 but no cargo and no network).
#
#   tools/gpu-check.sh            # here: nvcc from .venv-cuda (created if missing), PTX embedded
#   (device tool) carry: ["gpu-bundle"], command: "bash gpu-bundle/run.sh", timeout_s: 420
#
# run.sh (tools/gpu-run.sh has the details), in one run of under 6 minutes with a timeout per
# step (caps 341 s in all, no step started past 345 s): 1. glibc check (stops on an older
# glibc); 2. the parity tests with BAYESNAS_REQUIRE_GPU=1 (a missing GPU or PTX load failure
# FAILS them), then memcheck and racecheck under compute-sanitizer; 3. failing tests re-run
# alone with CUDA_LAUNCH_BLOCKING=1 BAYESNAS_CUDA_SYNC=1; 4. kernel timings against PyTorch;
# 5. `bench step` at C=36, 8 cells, batch 64 against tools/torch_supernet.py --device cuda;
# 6. `search --preset paper` on generated CIFAR-10-format data against the 3-minute target;
# 7. peak GPU memory per image. One summary table at the end, also in $OUT/summary.md; the
# raw output of every step under $OUT. `GPU_CHECK_SMOKE=1 bash gpu-bundle/run.sh` runs the
# same plumbing here on the CPU (a check of the script, not of the GPU).
#
# Environment: GPU_CHECK_PROFILE=release (default) or dev for the bayesnas binary;
# GPU_CHECK_SKIP_BUILD=1 re-packs already built artifacts.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PROFILE=${GPU_CHECK_PROFILE:-release}
BUNDLE=$ROOT/gpu-bundle

echo "== nvcc (.venv-cuda with the pinned wheels)"
if ! ls .venv-cuda/lib/python3*/site-packages/nvidia/cu13/bin/nvcc >/dev/null 2>&1; then
    python3 -m venv .venv-cuda
    .venv-cuda/bin/pip install -q nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 \
        nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
fi
NVCC_PATH=$(ls "$ROOT"/.venv-cuda/lib/python3*/site-packages/nvidia/cu13/bin/nvcc | head -n1)
export NVCC=${NVCC:-$NVCC_PATH}
export BAYESNAS_REQUIRE_NVCC=1
"$NVCC" --version | tail -n2

if [ "${GPU_CHECK_SKIP_BUILD:-0}" != 1 ]; then
    echo "== build ($PROFILE bayesnas, parity test executables)"
    if [ "$PROFILE" = release ]; then
        cargo build --release --locked -p bayesnas-cli --bin bayesnas
    else
        cargo build --locked -p bayesnas-cli --bin bayesnas
    fi
fi
BIN_DIR=$ROOT/target/$([ "$PROFILE" = release ] && echo release || echo debug)
# The test executables, found from cargo's own artifact messages (no guessing of hashes).
{
    cargo test --locked --no-run --message-format=json -p bayesnas-engine --test device_parity \
        --test device_parity_edges --lib
    cargo test --locked --no-run --message-format=json -p bayesnas-search --test device_step
    cargo test --locked --no-run --message-format=json -p bayesnas-engine --test device_parity_multi
} >"$ROOT/target/gpu-check-artifacts.json"
mapfile -t TESTS < <(python3 - "$ROOT/target/gpu-check-artifacts.json" <<'EOF'
import json, sys
seen = set()
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") \
            and m.get("executable"):
        name = m["target"]["name"]
        kind = m["target"]["kind"][0]
        label = "engine_lib" if kind == "lib" else name
        if label not in seen:
            seen.add(label)
            print(f"{label}={m['executable']}")
EOF
)
[ "${#TESTS[@]}" -ge 4 ] || { echo "error: test executables not found" >&2; exit 1; }

echo "== bundle"
rm -rf "$BUNDLE"
mkdir -p "$BUNDLE/tests"
strip_copy() { objcopy --strip-debug "$1" "$2" 2>/dev/null || cp "$1" "$2"; chmod +x "$2"; }
strip_copy "$BIN_DIR/bayesnas" "$BUNDLE/bayesnas"
for t in "${TESTS[@]}"; do
    strip_copy "${t#*=}" "$BUNDLE/tests/${t%%=*}"
done
cp tools/torch_cuda_kernels.py tools/compare_cuda_kernels.py tools/torch_supernet.py \
    tools/make_cifar10_like.py tools/gpu_check_report.py "$BUNDLE/"
# The binaries must carry the kernels: refuse a bundle whose PTX is missing.
for f in "$BUNDLE/bayesnas" "$BUNDLE/tests/device_parity" "$BUNDLE/tests/device_parity_edges"; do
    n=$(grep -c -a '\.visible \.entry' "$f" || true)
    if [ "$n" -lt 1 ]; then
        echo "error: $f has no embedded PTX (build.rs compiled no kernels)" >&2
        exit 1
    fi
done
ENTRIES=$(grep -a -o '\.visible \.entry [A-Za-z_0-9]*' "$BUNDLE/bayesnas" | sort -u | wc -l)
GIT_REV=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!gpu-bundle' || echo "+dirty")

# The newest glibc symbol version any bundled executable needs: run.sh compares it with the
# GPU machine's glibc before running anything.
GLIBC_REQUIRED=$(for f in "$BUNDLE/bayesnas" "$BUNDLE"/tests/*; do objdump -T "$f"; done |
    grep -oE 'GLIBC_[0-9]+\.[0-9]+(\.[0-9]+)?' | sed 's/^GLIBC_//' | sort -uV | tail -n1)
[ -n "$GLIBC_REQUIRED" ] || { echo "error: no GLIBC_ symbol versions found (objdump -T)" >&2; exit 1; }
cat >"$BUNDLE/bundle.env" <<EOF
# Written by tools/gpu-check.sh; read by run.sh.
GIT_REV=$GIT_REV
ENTRIES=$ENTRIES
GLIBC_REQUIRED=$GLIBC_REQUIRED
EOF
cp tools/gpu-run.sh "$BUNDLE/run.sh"
chmod +x "$BUNDLE/run.sh"
du -sh "$BUNDLE"
SIZE=$(du -sm "$BUNDLE" | cut -f1)
[ "$SIZE" -lt 60 ] || { echo "error: bundle is ${SIZE} MiB, over the 64 MiB carry limit" >&2; exit 1; }
echo "ok: $BUNDLE ($ENTRIES kernel entries, ${#TESTS[@]} test executables, needs glibc >= $GLIBC_REQUIRED)"
echo "run on the GPU machine: bash gpu-bundle/run.sh   (carry: gpu-bundle)"
