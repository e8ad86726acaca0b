#!/usr/bin/env bash
# Builds, on this CPU-only machine, everything a GPU check needs, into the git-ignored
# gpu-bundle/, and writes gpu-bundle/run.sh: the ONE command to run on the lent GPU machine
# (which has no cargo and no network).
#
#   tools/gpu-check.sh            # here: nvcc from .venv-cuda (created if missing), PTX embedded
#   (device tool) carry: ["gpu-bundle"], command: "bash gpu-bundle/run.sh", timeout_s: 420
#
# run.sh: nvidia-smi; the CUDA-vs-CPU parity tests with BAYESNAS_REQUIRE_GPU=1 (a missing GPU
# or a PTX load failure FAILS them: no silent CPU fallback); `bayesnas bench kernels`; the
# PyTorch timings of the same shapes; a comparison table. Everything is written under $OUT.
# Whole run budgeted under 6 minutes: each step has its own timeout (tests 90 + 45 + 30 s,
# bench 70 s, torch 100 s; under 5.7 min at worst, normally far less).
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
    cargo test --locked --no-run --message-format=json -p bayesnas-engine --test device_parity --lib
    cargo test --locked --no-run --message-format=json -p bayesnas-search --test device_step
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
[ "${#TESTS[@]}" -ge 3 ] || { echo "error: test executables not found" >&2; exit 1; }

echo "== bundle"
rm -rf "$BUNDLE"
mkdir -p "$BUNDLE/tests"
strip_copy() { objcopy --strip-debug "$1" "$2" 2>/dev/null || cp "$1" "$2"; chmod +x "$2"; }
strip_copy "$BIN_DIR/bayesnas" "$BUNDLE/bayesnas"
for t in "${TESTS[@]}"; do
    strip_copy "${t#*=}" "$BUNDLE/tests/${t%%=*}"
done
cp tools/torch_cuda_kernels.py tools/compare_cuda_kernels.py "$BUNDLE/"
# The binaries must carry the kernels: refuse a bundle whose PTX is missing.
for f in "$BUNDLE/bayesnas" "$BUNDLE/tests/device_parity"; do
    n=$(grep -c -a '\.visible \.entry' "$f" || true)
    if [ "$n" -lt 1 ]; then
        echo "error: $f has no embedded PTX (build.rs compiled no kernels)" >&2
        exit 1
    fi
done
ENTRIES=$(grep -a -o '\.visible \.entry [A-Za-z_0-9]*' "$BUNDLE/bayesnas" | sort -u | wc -l)
GIT_REV=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!gpu-bundle' || echo "+dirty")

cat >"$BUNDLE/run.sh" <<EOF
#!/usr/bin/env bash
# GPU check of bayesnas $GIT_REV ($ENTRIES kernel entries embedded). Run on the GPU machine:
#   bash gpu-bundle/run.sh          (outputs under \$OUT, or gpu-bundle/out without it)
set -uo pipefail
HERE=\$(cd "\$(dirname "\$0")" && pwd)
OUT=\${OUT:-\$HERE/out}
mkdir -p "\$OUT"
START=\$(date +%s)
step() { echo "== \$1 (t=\$((\$(date +%s) - START))s)" | tee -a "\$OUT/summary.txt"; }
# libcuda and libcublas: the loader's path, else the usual places.
if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so'; then
    export LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
fi
have_cublas() {
    ldconfig -p 2>/dev/null | grep -q 'libcublas\.so' && return 0
    local d
    for d in \$(echo "\${LD_LIBRARY_PATH:-}" | tr ':' ' '); do
        ls "\$d"/libcublas.so* >/dev/null 2>&1 && return 0
    done
    return 1
}
if ! have_cublas; then
    for d in /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/local/cuda-12*/lib64 \\
        \$(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null) \\
        \$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null); do
        if ls "\$d"/libcublas.so* >/dev/null 2>&1; then
            export LD_LIBRARY_PATH=\$d\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
            break
        fi
    done
fi
if ! have_cublas; then
    hit=\$(find /usr /opt \$(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null) \\
        -maxdepth 8 -name 'libcublas.so*' 2>/dev/null | head -n1)
    [ -n "\$hit" ] && export LD_LIBRARY_PATH=\$(dirname "\$hit")\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
fi
echo "LD_LIBRARY_PATH=\${LD_LIBRARY_PATH:-}" >"\$OUT/env.txt"

step "nvidia-smi"
nvidia-smi >"\$OUT/nvidia-smi.txt" 2>&1; head -n 15 "\$OUT/nvidia-smi.txt"
"\$HERE/bayesnas" info --device cuda -q >"\$OUT/info.txt" 2>&1; cat "\$OUT/info.txt" | grep -E 'cuda|device' || true

step "parity tests (BAYESNAS_REQUIRE_GPU=1)"
export BAYESNAS_REQUIRE_GPU=1 RUST_BACKTRACE=1
PARITY=0
for t in "\$HERE"/tests/*; do
    name=\$(basename "\$t")
        case "\$name" in
        device_parity) limit=90 ;;
        device_step) limit=45 ;;
        *) limit=30 ;;
    esac
    timeout \$limit "\$t" --test-threads=1 >"\$OUT/test-\$name.txt" 2>&1
    rc=\$?
    [ \$rc -ne 0 ] && PARITY=\$rc
    echo "\$name: rc=\$rc \$(grep -E '^test result' "\$OUT/test-\$name.txt" | tail -n1)" | tee -a "\$OUT/summary.txt"
    grep -E '^test .* FAILED|panicked at|norm-relative' "\$OUT/test-\$name.txt" | head -n 20 | tee -a "\$OUT/summary.txt"
done

step "bayesnas bench kernels"
timeout 70 "\$HERE/bayesnas" bench kernels --device cuda >"\$OUT/bench-ours.jsonl" 2>"\$OUT/bench-ours.err"
echo "bench rc=\$? lines=\$(wc -l <"\$OUT/bench-ours.jsonl")" | tee -a "\$OUT/summary.txt"
tail -n 5 "\$OUT/bench-ours.err"

step "torch timings"
timeout 100 python3 "\$HERE/torch_cuda_kernels.py" >"\$OUT/bench-torch.jsonl" 2>"\$OUT/bench-torch.err"
echo "torch rc=\$? lines=\$(wc -l <"\$OUT/bench-torch.jsonl")" | tee -a "\$OUT/summary.txt"
tail -n 5 "\$OUT/bench-torch.err"

step "compare"
python3 "\$HERE/compare_cuda_kernels.py" "\$OUT/bench-ours.jsonl" "\$OUT/bench-torch.jsonl" | tee "\$OUT/compare.txt"
step "done: parity rc=\$PARITY"
exit \$PARITY
EOF
chmod +x "$BUNDLE/run.sh"
du -sh "$BUNDLE"
SIZE=$(du -sm "$BUNDLE" | cut -f1)
[ "$SIZE" -lt 60 ] || { echo "error: bundle is ${SIZE} MiB, over the 64 MiB carry limit" >&2; exit 1; }
echo "ok: $BUNDLE ($ENTRIES kernel entries, ${#TESTS[@]} test executables)"
echo "run on the GPU machine: bash gpu-bundle/run.sh   (carry: gpu-bundle)"
