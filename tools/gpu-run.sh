#!/usr/bin/env bash
# The GPU check's one command: tools/gpu-check.sh copies this file to gpu-bundle/run.sh next to
# the binaries it built, bundle.env (revision, kernel count, required glibc) and the Python
# tools. On the lent GPU machine (no cargo, no network):
#
#   bash gpu-bundle/run.sh        outputs under $OUT (gpu-bundle/out without it)
#
# Steps, each with its own timeout (caps below; they add up to 341 s, and no step starts past
# the 345 s deadline: the whole run stays under 6 minutes):
#   1. glibc: the machine's against the newest GLIBC_x.y symbol the bundled executables need
#      (computed at bundle time); older: stop here with a message.
#      Then nvidia-smi and `bayesnas info --device cuda` (warms the driver's PTX JIT cache).
#   2. parity: every bundled test executable with BAYESNAS_REQUIRE_GPU=1 (no silent CPU
#      fallback); then device_parity and device_parity_edges under compute-sanitizer
#      memcheck, and the mixed-op and batch-norm parity tests under racecheck (skipped, with
#      the reason, when no compute-sanitizer is found).
#   3. the failing tests of 2 (the first 5) re-run alone with CUDA_LAUNCH_BLOCKING=1 and
#      BAYESNAS_CUDA_SYNC=1, so that the error names the faulting kernel.
#   4. `bayesnas bench kernels` and tools/torch_cuda_kernels.py, 10 back-to-back calls per
#      CUDA event pair, and their comparison.
#   5. `bayesnas bench step` at C=36, 8 cells, batch 64, 3x32x32 against
#      tools/torch_supernet.py --device cuda at the same shape (ratio of step times); also
#      our step at batch 18 (the paper preset's search batch, for the estimate of 6).
#   6. CIFAR-10-format random data (tools/make_cifar10_like.py, 50,000 + 10,000 images,
#      written outside $OUT) and `bayesnas search --preset paper --dataset cifar10` on it,
#      timed against the 3-minute target; if it hits its cap, an estimate of the whole run.
#   7. peak GPU memory per image of the two step benches of 5: our memory pool's high-water
#      mark against torch.cuda.max_memory_allocated, and nvidia-smi samples (whole process,
#      context included) for both.
# One table (step, status, seconds, key figure) ends the run and is written to
# $OUT/summary.md; every step's raw output is under $OUT. Exit status: 0 when parity (2) and
# glibc (1) pass, else 1 (2 for a glibc abort).
#
# GPU_CHECK_SMOKE=1 runs the same plumbing on a CPU-only machine (tiny shapes, --device cpu
# for the step and search, a small data set): a check of this script, not of the GPU.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$HERE/out}
mkdir -p "$OUT"
# shellcheck source=/dev/null
. "$HERE/bundle.env"
START_NS=$(date +%s%N)
DEADLINE=${GPU_CHECK_DEADLINE:-345}
SMOKE=${GPU_CHECK_SMOKE:-0}
ROWS=$OUT/rows.tsv
LOG=$OUT/log.txt
: >"$ROWS"
: >"$LOG"
REPORT=(python3 "$HERE/gpu_check_report.py")

# Caps (seconds) of each step; their sum is printed and checked against the deadline.
CAP_GLIBC=3 CAP_SMI=5 CAP_INFO=10
CAP_PARITY_MAIN=15 CAP_PARITY_EDGES=8 CAP_PARITY_LIB=6 CAP_PARITY_STEP=20
CAP_MEMCHECK_MAIN=25 CAP_MEMCHECK_EDGES=10 CAP_RACECHECK=12
CAP_RERUNS=12
CAP_KERNELS_OURS=15 CAP_KERNELS_TORCH=22
CAP_STEP_OURS=18 CAP_STEP_OURS18=10 CAP_STEP_TORCH=22
CAP_DATA=12 CAP_SEARCH=116
CAPS_TOTAL=$((CAP_GLIBC + CAP_SMI + CAP_INFO + CAP_PARITY_MAIN + CAP_PARITY_EDGES + CAP_PARITY_LIB \
    + CAP_PARITY_STEP + CAP_MEMCHECK_MAIN + CAP_MEMCHECK_EDGES + CAP_RACECHECK + CAP_RERUNS \
    + CAP_KERNELS_OURS + CAP_KERNELS_TORCH + CAP_STEP_OURS + CAP_STEP_OURS18 + CAP_STEP_TORCH \
    + CAP_DATA + CAP_SEARCH))

now_s() { echo $((($(date +%s%N) - START_NS) / 1000000000)); }
log() { echo "== $* (t=$(now_s)s)" | tee -a "$LOG"; }
# row STEP STATUS SECONDS FIGURE: one line of the summary table (the figure cut at 300
# characters; the raw outputs have the rest).
row() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:0:300}" >>"$ROWS"; }

# capped CAP FILE CMD...: runs CMD with stdout and stderr into FILE, under a timeout of CAP
# seconds or what is left before the deadline, whichever is less. Sets RC (124: timed out,
# 125: not started, out of time) and SECS (wall seconds, one decimal).
capped() {
    local cap=$1 file=$2 left lim t0
    shift 2
    left=$((DEADLINE - $(now_s)))
    lim=$((cap < left ? cap : left))
    if [ "$lim" -lt 2 ]; then
        echo "not run: the ${DEADLINE} s deadline is reached" >"$file"
        RC=125 SECS=0
        return
    fi
    t0=$(date +%s%N)
    timeout -k 3 "$lim" "$@" >"$file" 2>&1
    RC=$?
    SECS=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
    [ "$RC" = 137 ] && RC=124
}

# A status word from an exit code.
status_of() {
    case $1 in
        0) echo PASS ;;
        124) echo TIMEOUT ;;
        125) echo "NOT RUN" ;;
        *) echo FAIL ;;
    esac
}

# The status of a step made of two commands (ours and PyTorch's).
status2() {
    if [ "$1" = 125 ] && [ "$2" = 125 ]; then echo "NOT RUN"
    elif [ "$1" = 124 ] || [ "$2" = 124 ]; then echo TIMEOUT
    elif [ "$1" != 0 ] || [ "$2" != 0 ]; then echo FAIL
    else echo PASS
    fi
}

finish() {
    local rc=$1
    {
        echo "# GPU check of bayesnas $GIT_REV ($ENTRIES kernel entries), $(date -u +%FT%TZ)"
        echo
        echo "Device: ${GPU_NAME:-unknown}; run time $(now_s) s (caps ${CAPS_TOTAL} s, deadline ${DEADLINE} s); raw outputs beside this file."
        [ "$SMOKE" = 1 ] && echo "SMOKE RUN (GPU_CHECK_SMOKE=1): CPU plumbing check, no GPU figures."
        echo
        "${REPORT[@]}" table "$ROWS"
    } >"$OUT/summary.md"
    echo
    cat "$OUT/summary.md"
    exit "$rc"
}

log "GPU check of bayesnas $GIT_REV; caps add up to ${CAPS_TOTAL} s, deadline ${DEADLINE} s"
if [ "$CAPS_TOTAL" -gt "$DEADLINE" ]; then
    echo "warning: the step caps (${CAPS_TOTAL} s) exceed the deadline (${DEADLINE} s)" | tee -a "$LOG"
fi

# --- 1. glibc --------------------------------------------------------------------------
log "1 glibc"
t0=$(date +%s%N)
HAVE_GLIBC=$(timeout "$CAP_GLIBC" getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
[ -n "$HAVE_GLIBC" ] || HAVE_GLIBC=$(timeout "$CAP_GLIBC" ldd --version 2>/dev/null | head -n1 | grep -oE '[0-9]+\.[0-9]+' | tail -n1)
{ getconf GNU_LIBC_VERSION; ldd --version | head -n1; echo "required by the bundle: $GLIBC_REQUIRED"; } >"$OUT/glibc.txt" 2>&1
SECS=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
if [ -z "$HAVE_GLIBC" ]; then
    row "1 glibc" FAIL "$SECS" "cannot read the machine's glibc version (getconf, ldd); bundle needs $GLIBC_REQUIRED"
    echo "error: cannot tell this machine's glibc version; the bundle needs glibc >= $GLIBC_REQUIRED" >&2
    finish 2
elif [ "$(printf '%s\n%s\n' "$GLIBC_REQUIRED" "$HAVE_GLIBC" | sort -V | head -n1)" != "$GLIBC_REQUIRED" ]; then
    row "1 glibc" FAIL "$SECS" "machine glibc $HAVE_GLIBC is older than the $GLIBC_REQUIRED the bundled binaries need: ABORTED"
    echo "error: this machine has glibc $HAVE_GLIBC but the bundled executables need GLIBC_$GLIBC_REQUIRED; rebuild the bundle on an older system (or with an older glibc target) — nothing else was run" >&2
    finish 2
fi
row "1 glibc" PASS "$SECS" "machine $HAVE_GLIBC >= bundle's $GLIBC_REQUIRED"

# libcuda and libcublas: the loader's path, else the usual places.
if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so'; then
    export LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
have_cublas() {
    ldconfig -p 2>/dev/null | grep -q 'libcublas\.so' && return 0
    local d
    for d in $(echo "${LD_LIBRARY_PATH:-}" | tr ':' ' '); do
        ls "$d"/libcublas.so* >/dev/null 2>&1 && return 0
    done
    return 1
}
if ! have_cublas; then
    for d in /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/local/cuda-12*/lib64 \
        $(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null) \
        $(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null); do
        if ls "$d"/libcublas.so* >/dev/null 2>&1; then
            export LD_LIBRARY_PATH=$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
            break
        fi
    done
fi
if ! have_cublas; then
    mapfile -t SITE < <(python3 -c 'import site; print("\n".join(site.getsitepackages()))' 2>/dev/null)
    hit=$(find /usr /opt "${SITE[@]}" -maxdepth 8 -name 'libcublas.so*' 2>/dev/null | head -n1)
    if [ -n "$hit" ]; then
        LD_LIBRARY_PATH=$(dirname "$hit")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
        export LD_LIBRARY_PATH
    fi
fi
echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}" >"$OUT/env.txt"

DEV=cuda
[ "$SMOKE" = 1 ] && DEV=cpu
capped "$CAP_SMI" "$OUT/nvidia-smi.txt" nvidia-smi
GPU_NAME=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n1)
head -n 15 "$OUT/nvidia-smi.txt"
capped "$CAP_INFO" "$OUT/info.txt" "$HERE/bayesnas" info --device cuda -q
CUDA_LINE=$(grep -m1 -E '^ *cuda' "$OUT/info.txt" || tail -n1 "$OUT/info.txt")
row "1 device (nvidia-smi, bayesnas info)" "$(status_of "$RC")" "$SECS" "${GPU_NAME:-no nvidia-smi}; ${CUDA_LINE:0:150}"

# --- 2. parity, memcheck, racecheck ---------------------------------------------------
log "2 parity tests (BAYESNAS_REQUIRE_GPU=1)"
export BAYESNAS_REQUIRE_GPU=1 RUST_BACKTRACE=1
unset BAYESNAS_CUDA_SYNC CUDA_LAUNCH_BLOCKING
PARITY=0
FAILED_TESTS=()
# Failing tests of a libtest output: "test NAME ... FAILED", and the test that was running
# when the process died (a "test NAME ..." line without a result).
failing_tests() {
    grep -aoE '^test [^ ]+ \.\.\. FAILED' "$1" | awk '{print $2}'
    tail -n 3 "$1" | grep -aoE '^test [^ ]+ \.\.\. *$' | awk '{print $2}'
}
for t in "$HERE"/tests/*; do
    name=$(basename "$t")
    case "$name" in
        device_parity) cap=$CAP_PARITY_MAIN ;;
        device_parity_edges) cap=$CAP_PARITY_EDGES ;;
        device_step) cap=$CAP_PARITY_STEP ;;
        *) cap=$CAP_PARITY_LIB ;;
    esac
    capped "$cap" "$OUT/test-$name.txt" "$t" --test-threads=1
    [ "$RC" != 0 ] && PARITY=1
    result=$(grep -aE '^test result' "$OUT/test-$name.txt" | tail -n1 | sed 's/; finished in.*//')
    fails=$(failing_tests "$OUT/test-$name.txt" | sort -u | tr '\n' ' ')
    for f in $fails; do FAILED_TESTS+=("$name:$f"); done
    row "2 parity $name" "$(status_of "$RC")" "$SECS" "${result:-no result line (rc $RC)}${fails:+; failing: $fails}"
done

find_sanitizer() {
    local d f sp
    if command -v compute-sanitizer >/dev/null 2>&1; then command -v compute-sanitizer; return 0; fi
    for d in /usr/local/cuda/bin /usr/local/cuda-*/bin /opt/nvidia/*/bin /opt/cuda/bin; do
        if [ -x "$d/compute-sanitizer" ]; then echo "$d/compute-sanitizer"; return 0; fi
    done
    for sp in $(python3 -c 'import site; print(" ".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null); do
        f=$(find "$sp/nvidia" -maxdepth 4 -type f -name compute-sanitizer -perm -u+x 2>/dev/null | head -n1)
        if [ -n "$f" ]; then echo "$f"; return 0; fi
    done
    return 1
}
# The sanitizer's error count ("ERROR SUMMARY: N errors" or racecheck's "N hazards").
sanitizer_errors() {
    grep -aoE '(ERROR SUMMARY: [0-9]+ error|RACECHECK SUMMARY: [0-9]+ hazard)' "$1" | grep -oE '[0-9]+' | awk '{s += $1} END {print s + 0}'
}
SAN=$(find_sanitizer)
if [ -z "$SAN" ]; then
    for r in "2 memcheck" "2 racecheck"; do
        row "$r" SKIP 0 "compute-sanitizer not found (PATH, /usr/local/cuda*/bin, /opt, pip nvidia wheels)"
    done
else
    echo "compute-sanitizer: $SAN" >>"$LOG"
    SAN_OPTS=(--error-exitcode 86 --report-api-errors no --print-limit 40)
    for spec in "device_parity:$CAP_MEMCHECK_MAIN" "device_parity_edges:$CAP_MEMCHECK_EDGES"; do
        name=${spec%%:*} cap=${spec##*:}
        [ -x "$HERE/tests/$name" ] || continue
        capped "$cap" "$OUT/memcheck-$name.txt" "$SAN" --tool memcheck "${SAN_OPTS[@]}" "$HERE/tests/$name" --test-threads=1
        result=$(grep -aE '^test result' "$OUT/memcheck-$name.txt" | tail -n1 | sed 's/; finished in.*//')
        errs=$(sanitizer_errors "$OUT/memcheck-$name.txt")
        first=$(grep -aE '^========= (Invalid|Misaligned|Out-of-range|Program hit|Uninitialized)' "$OUT/memcheck-$name.txt" | head -n1 | sed 's/^========= //')
        row "2 memcheck $name" "$(status_of "$RC")" "$SECS" "$errs sanitizer errors; ${result:-no result line (rc $RC)}${first:+; first: ${first:0:120}}"
    done
    capped "$CAP_RACECHECK" "$OUT/racecheck.txt" "$SAN" --tool racecheck "${SAN_OPTS[@]}" "$HERE/tests/device_parity" fused_mixed_op batch_norm_all_paths --test-threads=1
    result=$(grep -aE '^test result' "$OUT/racecheck.txt" | tail -n1 | sed 's/; finished in.*//')
    row "2 racecheck mixed op + batch norm" "$(status_of "$RC")" "$SECS" "$(sanitizer_errors "$OUT/racecheck.txt") hazards; ${result:-no result line (rc $RC)}"
fi

# --- 3. failing tests re-run, kernel named ---------------------------------------------
log "3 re-runs of failing tests"
if [ "${#FAILED_TESTS[@]}" -eq 0 ]; then
    row "3 re-run failing tests" SKIP 0 "no failing test"
else
    rerun_deadline=$(($(now_s) + CAP_RERUNS))
    if [ "${#FAILED_TESTS[@]}" -gt 5 ]; then
        row "3 re-run failing tests" INFO 0 "${#FAILED_TESTS[@]} failing tests; the first 5 are re-run"
    fi
    for ft in "${FAILED_TESTS[@]:0:5}"; do
        exe=${ft%%:*} test=${ft#*:}
        left=$((rerun_deadline - $(now_s)))
        file="$OUT/rerun-$exe-${test//[^A-Za-z0-9_]/_}.txt"
        capped "$left" "$file" env CUDA_LAUNCH_BLOCKING=1 BAYESNAS_CUDA_SYNC=1 "$HERE/tests/$exe" "$test" --exact --test-threads=1 --nocapture
        named=$(grep -aoE '(cuda: kernel [^ ]+ failed|launch of [^ ]+ failed|last kernel launched: [^;)]+)' "$file" | head -n1)
        panic=$(grep -aE -m1 'panicked at|norm-relative' "$file" -A1 | tr '\n' ' ')
        row "3 re-run $exe $test" "$(status_of "$RC")" "$SECS" "${named:-no kernel named}; ${panic:0:160}"
    done
fi

# --- 4. kernel timings ---------------------------------------------------------------
log "4 kernel timings (10 calls per event pair)"
KARGS=(--reps 10 --calls 10 --warmup 2)
capped "$CAP_KERNELS_OURS" "$OUT/bench-kernels-ours.txt" "$HERE/bayesnas" bench kernels --device cuda "${KARGS[@]}"
RC_K=$RC SECS_K=$SECS
capped "$CAP_KERNELS_TORCH" "$OUT/bench-kernels-torch.txt" python3 "$HERE/torch_cuda_kernels.py" "${KARGS[@]}"
RC_T=$RC SECS_T=$SECS
python3 "$HERE/compare_cuda_kernels.py" "$OUT/bench-kernels-ours.txt" "$OUT/bench-kernels-torch.txt" >"$OUT/compare-kernels.txt" 2>&1
row "4 kernels (ours rc $RC_K, torch rc $RC_T)" "$(status2 "$RC_K" "$RC_T")" "$(awk -v a="$SECS_K" -v b="$SECS_T" 'BEGIN { print a + b }')" "$("${REPORT[@]}" kernels "$OUT/compare-kernels.txt")"

# --- 5. supernet step against PyTorch (with 7's memory samples) ------------------------
log "5 supernet step at C=36, 8 cells, batch 64"
if [ "$SMOKE" = 1 ]; then
    SHAPE=(--channels 4 --cells 3 --batch 8 --image 32 --in-channels 3) STEPS=(--steps 2 --warmup 1)
    SHAPE18=(--channels 4 --cells 3 --batch 4 --image 32 --in-channels 3)
else
    SHAPE=(--channels 36 --cells 8 --batch 64 --image 32 --in-channels 3) STEPS=(--steps 5 --warmup 2)
    SHAPE18=(--channels 36 --cells 8 --batch 18 --image 32 --in-channels 3)
fi
# sampled FILE CAP OUTFILE CMD...: capped, with nvidia-smi's memory.used sampled every 100 ms
# into FILE (first line: the baseline before the command).
sampled() {
    local samples=$1 pid
    shift
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 >"$samples" 2>/dev/null
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 100 >>"$samples" 2>/dev/null &
    pid=$!
    capped "$@"
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
}
sampled "$OUT/smi-step-ours.txt" "$CAP_STEP_OURS" "$OUT/step-ours.txt" "$HERE/bayesnas" bench step --device "$DEV" "${SHAPE[@]}" "${STEPS[@]}"
RC_O=$RC SECS_O=$SECS
sampled "$OUT/smi-step-torch.txt" "$CAP_STEP_TORCH" "$OUT/step-torch.txt" python3 "$HERE/torch_supernet.py" --device "$DEV" "${SHAPE[@]}" --steps 5 --warmup 3
RC_T=$RC SECS_T=$SECS
capped "$CAP_STEP_OURS18" "$OUT/step-ours-b18.txt" "$HERE/bayesnas" bench step --device "$DEV" "${SHAPE18[@]}" "${STEPS[@]}"
RC_18=$RC SECS_18=$SECS
row "5 step C=36 8 cells b64 (ours rc $RC_O, torch rc $RC_T)" "$(status2 "$RC_O" "$RC_T")" "$(awk -v a="$SECS_O" -v b="$SECS_T" 'BEGIN { print a + b }')" "$("${REPORT[@]}" step "$OUT/step-ours.txt" "$OUT/step-torch.txt")"
row "5 step b18 (ours, for the search estimate)" "$(status_of "$RC_18")" "$SECS_18" "$("${REPORT[@]}" step "$OUT/step-ours-b18.txt" /dev/null)"

# --- 6. the search protocol on CIFAR-10-format data -----------------------------------
log "6 search --preset paper on CIFAR-10-format random data"
DATA=${TMPDIR:-/tmp}/bayesnas-gpu-check-cifar10
RUN=${TMPDIR:-/tmp}/bayesnas-gpu-check-search
rm -rf "$DATA" "$RUN"
if [ "$SMOKE" = 1 ]; then
    DATA_ARGS=(--train 1000 --test 100)
    SEARCH_ARGS=(--channels 4 --cells 3 --batch 16 --max-batches 2)
else
    DATA_ARGS=()
    SEARCH_ARGS=()
fi
capped "$CAP_DATA" "$OUT/make-cifar10.txt" python3 "$HERE/make_cifar10_like.py" --out "$DATA" "${DATA_ARGS[@]}"
row "6 CIFAR-10-format data" "$(status_of "$RC")" "$SECS" "$(tail -n1 "$OUT/make-cifar10.txt" | cut -c1-150)"
if [ "$RC" = 0 ]; then
    capped "$CAP_SEARCH" "$OUT/search.txt" "$HERE/bayesnas" search --preset paper --dataset cifar10 --data-dir "$DATA" --device "$DEV" --out "$RUN" "${SEARCH_ARGS[@]}"
    mkdir -p "$OUT/search"
    for f in metrics.jsonl genotype.json relevance.json selection.json; do
        [ -f "$RUN/$f" ] && cp "$RUN/$f" "$OUT/search/"
    done
    verdict=$("${REPORT[@]}" search "$OUT/search/metrics.jsonl" "$OUT/search.txt" "$RC" "$SECS" "$CAP_SEARCH" "$OUT/step-ours-b18.txt" "$OUT/step-ours.txt")
    case "$verdict" in
        *$'\t'*) row "6 search --preset paper (full protocol)" "${verdict%%$'\t'*}" "$SECS" "${verdict#*$'\t'}" ;;
        *) row "6 search --preset paper (full protocol)" "$(status_of "$RC")" "$SECS" "$verdict" ;;
    esac
else
    row "6 search --preset paper (full protocol)" "NOT RUN" 0 "no data"
fi
rm -rf "$DATA" "$RUN"

# --- 7. memory per image ----------------------------------------------------------------
log "7 peak GPU memory per image"
row "7 memory per image (step b64)" INFO 0 "$("${REPORT[@]}" memory "$OUT/step-ours.txt" "$OUT/step-torch.txt" "$OUT/smi-step-ours.txt" "$OUT/smi-step-torch.txt")"

log "done"
finish "$PARITY"
