#!/usr/bin/env bash
# The GPU check: everything issue 14 asks of `--device cuda`, in one go, offline.
#
#   benchmarks/gpu_check.sh DATA_DIR OUT_DIR
#
# DATA_DIR holds the four MNIST IDX files; torch and jax (CUDA builds) are already installed; the project
# runs from this source tree (PYTHONPATH, no install). Steps: probe; every backend for 5 epochs;
# torch-compile and jax for 50 epochs (compiling cold), jax again for 50 epochs (warm cache), torch-compile
# in every other compile mode for 50 epochs; parity; a run interrupted and resumed, compared with an
# uninterrupted one; `check --profile full --from` the 50-epoch run; the CUDA-marked tests.
# Everything lands in OUT_DIR: runs/<step>/ (results.json, report.md), logs/<step>.log, steps.tsv and
# summary.md (each step's status and seconds, the figures of every run, the goals of the issue). A
# failed step does not stop the others; the exit status is 1 if any step failed.
#
# Environment:
#   GPU_CHECK_DEVICE=cpu   dry run on the CPU (default cuda)
#   GPU_CHECK_TINY=1       512 training / 256 test samples, 2 and 3 epochs instead of 5 and 50 (and
#                          `check --profile ci`, since the full profile judges epoch 50)
#   GPU_CHECK_TIMEOUT=S    seconds per backend in each run (default 300)
#   GPU_CHECK_COMPILE_MODES="default reduce-overhead ..."   the torch-compile modes (default: all four)
#   PYTHON=...             the interpreter with the frameworks (default python3)
set -uo pipefail

if [ $# -ne 2 ]; then
    echo "usage: benchmarks/gpu_check.sh DATA_DIR OUT_DIR" >&2
    exit 2
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=$(cd "$1" 2>/dev/null && pwd) || { echo "gpu_check: DATA_DIR $1 is not a folder" >&2; exit 2; }
mkdir -p "$2" && OUT=$(cd "$2" && pwd) || { echo "gpu_check: cannot create OUT_DIR $2" >&2; exit 2; }
cd "$ROOT" || exit 2

DEVICE=${GPU_CHECK_DEVICE:-cuda}
PY=${PYTHON:-python3}
TIMEOUT=${GPU_CHECK_TIMEOUT:-300}
MODES=${GPU_CHECK_COMPILE_MODES:-default reduce-overhead max-autotune max-autotune-no-cudagraphs}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" VAE_BENCH_DATA="$DATA"
if [ "${GPU_CHECK_TINY:-0}" = 1 ]; then
    LIMITS=(--train-limit 512 --test-limit 256); SHORT=2; LONG=3; PARITY_STEPS=3; PROBE_REPEATS=1
    PROFILE=ci  # the full profile judges epoch 50; a tiny run ends before it
else
    LIMITS=(); SHORT=5; LONG=50; PARITY_STEPS=50; PROBE_REPEATS=5; PROFILE=full
fi
# Resumed and uninterrupted runs are bit-identical on one CPU thread (on two, identical torch eager
# processes sometimes differ in the last float32 digits: docs/correctness.md); a GPU may reduce in
# another order.
if [ "$DEVICE" = cpu ]; then RTOL=${GPU_CHECK_RESUME_RTOL:-0}; RESUME_THREADS=(--threads 1)
else RTOL=${GPU_CHECK_RESUME_RTOL:-1e-4}; RESUME_THREADS=(); fi

RUNS=$OUT/runs
LOGS=$OUT/logs
mkdir -p "$RUNS" "$LOGS"
: > "$OUT/steps.tsv"
H=("$PY" -m harness)
COMMON=(--device "$DEVICE" --data-dir "$DATA" --timeout "$TIMEOUT" ${LIMITS[@]+"${LIMITS[@]}"})

step() {  # step NAME COMMAND...: run it with its output in logs/NAME.log, record status and seconds
    local name=$1 start end code status
    shift
    echo "== $name: $*"
    start=$(date +%s.%N)
    "$@" > "$LOGS/$name.log" 2>&1
    code=$?
    end=$(date +%s.%N)
    if [ "$code" -eq 0 ]; then status=ok; else status=failed; fi
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.1f", b - a}')" \
        "$code" >> "$OUT/steps.tsv"
    echo "   $status (exit $code), $(tail -n 1 "$OUT/steps.tsv" | cut -f3) s"
}

run() {  # run NAME FLAGS...: one harness run into runs/NAME
    local name=$1
    shift
    "${H[@]}" run "${COMMON[@]}" --out "$RUNS/$name" --force "$@"
}

interrupted_then_resumed() {
    local straight=$RUNS/resume-straight interrupted=$RUNS/resume-interrupted pid code
    run resume-straight --backends torch,torch-compile,jax --epochs "$SHORT" --no-probe --no-report \
        ${RESUME_THREADS[@]+"${RESUME_THREADS[@]}"} || return 1
    # Started directly, not through `run`: $! must be the harness itself, which turns SIGTERM into a clean stop.
    "${H[@]}" run "${COMMON[@]}" --out "$interrupted" --force --backends torch,torch-compile,jax \
        --epochs "$SHORT" --no-probe --no-report ${RESUME_THREADS[@]+"${RESUME_THREADS[@]}"} &
    pid=$!
    if ! "$PY" benchmarks/gpu_check.py wait-epoch "$interrupted" --timeout "$TIMEOUT"; then
        kill -TERM "$pid"; wait "$pid"; return 1
    fi
    kill -TERM "$pid"
    wait "$pid"
    code=$?
    if [ "$code" -ne 130 ]; then
        echo "the run to interrupt exited with $code, not 130 (interrupted): did it end before the signal?"
        return 1
    fi
    echo "interrupted after the first epoch; resuming"
    "${H[@]}" run --resume "$interrupted" --data-dir "$DATA" --no-report || return 1
    "${H[@]}" compare "$straight" "$interrupted" --markdown "$OUT/resume-compare.md"
    "$PY" benchmarks/gpu_check.py same-losses "$straight" "$interrupted" --rtol "$RTOL"
}

echo "gpu check: device $DEVICE, data $DATA, output $OUT"
command -v nvidia-smi > /dev/null && nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1

step probe "${H[@]}" probe --device "$DEVICE" --allow-tf32 --repeats "$PROBE_REPEATS" ${LIMITS[@]+"${LIMITS[@]:0:2}"}
step all-5 run all-5 --backends torch-reference,torch,torch-compile,jax --epochs "$SHORT"
step full-50 run full-50 --backends torch-compile,jax --epochs "$LONG" --cold-compile
step jax-warm-50 run jax-warm-50 --backends jax --epochs "$LONG" --no-probe --no-report
for mode in $MODES; do
    [ "$mode" = default ] && continue  # full-50 ran the default mode
    step "torch-compile-$mode-50" run "torch-compile-$mode-50" --backends torch-compile \
        --compile-mode "$mode" --epochs "$LONG" --no-probe
done
step parity env XLA_PYTHON_CLIENT_PREALLOCATE=false "${H[@]}" parity --device "$DEVICE" --data-dir "$DATA" \
    --backends torch-reference,torch,torch-compile,jax --steps "$PARITY_STEPS" --out "$RUNS/parity"
step resume interrupted_then_resumed
step check "${H[@]}" check --profile "$PROFILE" --from "$RUNS/full-50"
step pytest-cuda env XLA_PYTHON_CLIENT_PREALLOCATE=false "$PY" -m pytest -m cuda -q -p no:cacheprovider \
    --junitxml "$OUT/pytest-cuda.xml" tests

"$PY" benchmarks/gpu_check.py summary "$OUT" --device "$DEVICE" > /dev/null
echo "summary: $OUT/summary.md"
if cut -f2 "$OUT/steps.tsv" | grep -qv '^ok$'; then
    echo "gpu check FAILED: $(awk -F'\t' '$2 != "ok" {print $1}' "$OUT/steps.tsv" | tr '\n' ' ')"
    exit 1
fi
echo "gpu check passed"
