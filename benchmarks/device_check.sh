#!/usr/bin/env bash
# Device check (issue 17, item 5): on a machine with a CUDA device, run the model tests there
# (equivariance, fast path against the reference), time forward passes and training steps for
# the cases of benchmarks/speed.py, and train / evaluate / roll out a tiny model end to end with
# --device cuda. Writes a small report (report.md) and one log per step into $OUT.
#
#   bash benchmarks/device_check.sh                       # on the GPU machine, from the repository root
#   DEVICE=cpu QUICK=1 bash benchmarks/device_check.sh    # dry run of the whole script on a CPU
#
# Environment (all optional):
#   DEVICE   torch device, default cuda (anything else skips the CUDA assertion)
#   QUICK    1: one small speed case and 2 repeats, for a dry run (default 0)
#   OUT      output directory, default benchmarks/device_report
#   PYTHON   interpreter, default python (the tests, speed.py and the CLI all run under it)
#   CASES    speed.py case indices, default "0 1 2 3 4" (QUICK: "1")
#   REPEATS  timed calls per case in speed.py's forward table, default 20 (QUICK: 2)
#   REF_REPEATS  alternating pairs per case against the reference, default 10 (QUICK: 2)
#   THREADS  CPU threads for torch, default 2 (QUICK: 1)
#
# Every step runs even if an earlier one failed, so the report always says what happened; the
# script exits 1 if any step failed, 2 if the device is missing. On an H100 the whole check
# takes a few minutes (each speed case is its own process: import + CUDA start-up dominate).

set -euo pipefail

DEVICE="${DEVICE:-cuda}"
QUICK="${QUICK:-0}"
OUT="${OUT:-benchmarks/device_report}"
PYTHON="${PYTHON:-python}"
if [[ "$QUICK" == "1" ]]; then
    CASES="${CASES:-1}"; REPEATS="${REPEATS:-2}"; REF_REPEATS="${REF_REPEATS:-2}"; THREADS="${THREADS:-1}"
else
    CASES="${CASES:-0 1 2 3 4}"; REPEATS="${REPEATS:-20}"; REF_REPEATS="${REF_REPEATS:-10}"; THREADS="${THREADS:-2}"
fi
# The model tests that exercise the model on a device: the fast path against the reference
# (outputs and gradients, float64) and the symmetry/aggregation tests of tests/models/.
TESTS=(tests/test_reference_model.py tests/models)
# Smallest shipped data: villin backbone (140 atoms, 1 ps frames); seed 4 is the held-out replica.
TRAIN_DATA=trajectories/villin/villin_seed1.xtc
HELD_OUT=trajectories/villin/villin_seed4.xtc

if [[ ! -f pyproject.toml || ! -d fastegnn_md ]]; then
    echo "device_check.sh: error: run it from the repository root (bash benchmarks/device_check.sh)" >&2
    exit 2
fi
if [[ "$DEVICE" == cuda* ]]; then
    if ! "$PYTHON" -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
        echo "device_check.sh: error: DEVICE=$DEVICE but torch sees no CUDA device (torch.cuda.is_available() is False); for a CPU dry run: DEVICE=cpu QUICK=1 bash benchmarks/device_check.sh" >&2
        exit 2
    fi
fi
mkdir -p "$OUT"

CLI=("$PYTHON" -m fastegnn_md.cli)   # the fastegnn-md command, under the same interpreter
HAVE_TIMEOUT=0
command -v timeout >/dev/null 2>&1 && HAVE_TIMEOUT=1
STEP_ROWS=()
FAILED=0
STARTED=$SECONDS

# step NAME LOG LIMIT_S CMD...: run CMD with its stdout+stderr in $OUT/LOG, at most LIMIT_S
# seconds (a hung step must not eat the device budget); record status and time for the report.
step() {
    local name=$1 log=$2 limit=$3
    shift 3
    local start=$SECONDS rc=0
    echo "device_check: $name ..." >&2
    if [[ $HAVE_TIMEOUT == 1 ]]; then
        timeout "$limit" "$@" >"$OUT/$log" 2>&1 || rc=$?
    else
        "$@" >"$OUT/$log" 2>&1 || rc=$?
    fi
    local secs=$((SECONDS - start)) status=ok
    if [[ $rc == 124 ]]; then
        status="timed out after ${limit} s"
    elif [[ $rc != 0 ]]; then
        status="FAILED (exit $rc)"
    fi
    if [[ $status != ok ]]; then
        FAILED=1
        echo "device_check: $name: $status; end of $OUT/$log:" >&2
        tail -n 20 "$OUT/$log" >&2 || true
    else
        echo "device_check: $name: ok (${secs} s)" >&2
    fi
    STEP_ROWS+=("| $name | $status | $secs | \`$log\` |")
}

# --- the device -----------------------------------------------------------------------------
{
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    else
        echo "nvidia-smi: not available"
    fi
    "$PYTHON" - "$DEVICE" <<'EOF'
import platform
import sys

import torch

device = torch.device(sys.argv[1])
print(f"python {platform.python_version()}, torch {torch.__version__}, built with CUDA {torch.version.cuda}")
if device.type == "cuda":
    props = torch.cuda.get_device_properties(device)
    print(f"device {device}: {props.name}, {props.total_memory / 2**30:.1f} GiB, "
          f"compute capability {props.major}.{props.minor}")
else:
    print(f"device {device}: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}")
EOF
} >"$OUT/device.txt" 2>&1 || true

# --- 1. model tests on the device ----------------------------------------------------------
step "model tests (FASTEGNN_TEST_DEVICE=$DEVICE)" tests.log 300 \
    env FASTEGNN_TEST_DEVICE="$DEVICE" "$PYTHON" -m pytest -q -ra -p no:cacheprovider "${TESTS[@]}"

# --- 2. speed: fast path against the reference, then the forward table ----------------------
# shellcheck disable=SC2206  # CASES is a space-separated list of indices
CASE_ARGS=($CASES)
step "speed: fast vs reference (forward, training step)" speed_reference.md 300 \
    "$PYTHON" benchmarks/speed.py --device "$DEVICE" --against-reference --cases "${CASE_ARGS[@]}" \
    --repeats "$REF_REPEATS" --threads "$THREADS" --precision full bf16-mixed
step "speed: forward per case (fastegnn, egnn)" speed.md 300 \
    "$PYTHON" benchmarks/speed.py --device "$DEVICE" --cases "${CASE_ARGS[@]}" \
    --repeats "$REPEATS" --threads "$THREADS"

# --- 3. end to end: train, evaluate, roll out with --device ---------------------------------
# A tiny FastEGNN for one epoch; every optional training term is on so that each of its code
# paths (MMD with a device generator, pushforward unroll, local/radial/gyration terms) runs on
# the device. The rollout warns instead of stopping on an unphysical backbone: the model is
# barely trained, and what is checked here is that the device path runs.
RUN="$OUT/e2e/run"
step "train --device $DEVICE" train.log 300 \
    "${CLI[@]}" train --data "$TRAIN_DATA" --jump 5 --out "$RUN" --epochs 1 --max-train 16 --max-valid 4 \
    --hidden 16 --layers 2 --batch-size 4 --mmd-weight 0.5 --sigma 1.0 --unroll 2 \
    --local-distance-weight 0.1 --radial-distance-weight 0.1 --gyration-weight 0.1 \
    --device "$DEVICE" --threads "$THREADS" --no-resume --quiet
step "evaluate --device $DEVICE" evaluate.log 300 \
    "${CLI[@]}" evaluate "$RUN/best.pt" --data "$HELD_OUT" --split all --max-examples 8 \
    --device "$DEVICE" --threads "$THREADS" --quiet
step "rollout --device $DEVICE --jumps 3" rollout.log 300 \
    "${CLI[@]}" rollout "$HELD_OUT" --checkpoint "$RUN/best.pt" --jumps 3 --report "$OUT/e2e/rollout" \
    --unphysical warn --device "$DEVICE" --threads "$THREADS" --quiet

# --- the report ------------------------------------------------------------------------------
TOTAL=$((SECONDS - STARTED))
tests_summary=$(grep -E '[0-9]+ (passed|failed|error)' "$OUT/tests.log" | tail -n 1 || true)
{
    echo "# Device check"
    echo
    echo "\`DEVICE=$DEVICE QUICK=$QUICK bash benchmarks/device_check.sh\`, $(date -u '+%Y-%m-%d %H:%M UTC'), ${TOTAL} s in all."
    echo "Speed cases: ${CASES}; repeats ${REPEATS} (forward table), ${REF_REPEATS} (against the reference); ${THREADS} CPU thread(s)."
    echo
    echo "## Device"
    echo
    echo '```'
    cat "$OUT/device.txt"
    echo '```'
    echo
    echo "## Steps"
    echo
    echo "| step | status | seconds | log |"
    echo "|---|---|---:|---|"
    printf '%s\n' "${STEP_ROWS[@]}"
    echo
    echo "## Model tests on $DEVICE"
    echo
    echo "\`FASTEGNN_TEST_DEVICE=$DEVICE python -m pytest -q ${TESTS[*]}\`: ${tests_summary:-no summary line (see tests.log)}"
    echo
    echo "## Speed: fast path against the reference"
    echo
    cat "$OUT/speed_reference.md"
    echo
    echo "## Speed: forward pass per case"
    echo
    cat "$OUT/speed.md"
    echo
    echo "## End to end (villin backbone, tiny FastEGNN, 1 epoch)"
    for name in train evaluate rollout; do
        echo
        echo "### $name"
        echo
        echo '```'
        tail -n 15 "$OUT/$name.log"
        echo '```'
    done
} >"$OUT/report.md"

echo "device_check: report: $OUT/report.md" >&2
if [[ $FAILED != 0 ]]; then
    echo "device_check: some steps failed (see the report's Steps table)" >&2
    exit 1
fi
