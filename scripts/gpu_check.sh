#!/usr/bin/env bash
# Everything a GPU machine checks, in one call, in under 8 minutes:
#   the card's name, the tests marked `gpu` (a model split between cuda:0 and the CPU gives
#   the single-device figures), then the three benchmarks on CUDA in float32 and bfloat16.
#
#     bash scripts/gpu_check.sh [OUT_DIR]        # default runs/gpu_check
#
# Each step runs under `timeout` (the caps add up to 7 min 50 s); its output goes to
# OUT_DIR/<step>.log and its exit status to OUT_DIR/summary.txt (124: it ran out of time).
# The script goes on after a failed step and exits 1 if any step failed.
# Without a GPU, `bash -n scripts/gpu_check.sh` checks its syntax (tests/test_device_map.py
# also checks that every script it calls exists and takes the flags given here).
set -u
cd "$(dirname "$0")/.."
OUT="${1:-runs/gpu_check}"
mkdir -p "$OUT" || exit 2
PY="${PYTHON:-python}"
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
: > "$OUT/summary.txt"
failed=0

step() {  # step NAME SECONDS COMMAND...
    local name="$1" cap="$2"
    shift 2
    echo "== $name (at most ${cap} s): $*"
    local t0=$SECONDS
    timeout "$cap" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 12 "$OUT/$name.log"
    echo "$name rc=$rc $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
    [ "$rc" -eq 0 ] || failed=1
}

card=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 \
       || echo "no nvidia-smi")
echo "card: $card" | tee "$OUT/card.txt"

step gpu_tests 90 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_device_map.py
for dtype in float32 bfloat16; do
    step "classify_$dtype" 50 "$PY" scripts/bench_classify.py --n 256 --no-memory \
        --device cuda --dtype "$dtype"
    step "patching_$dtype" 80 "$PY" scripts/bench_patching.py --n 16 --threads 1 \
        --device cuda --dtype "$dtype"
    step "probes_$dtype" 60 "$PY" scripts/bench_probes.py --n 500 --sk-cells 4 \
        --device cuda --dtype "$dtype"
done
echo "summary ($OUT/summary.txt):"
cat "$OUT/summary.txt"
exit "$failed"
