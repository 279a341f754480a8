#!/usr/bin/env bash
# Nsight Compute on chosen kernels of one training step: what holds a kernel (throughput against the
# SOL ceilings, occupancy and its limiter, warp stall reasons, memory traffic), for the kernels whose op
# profile says they are slow (`bench --profile` gives ms and TFLOP/s per op, not why).
#
#   tools/gpu/ncu_kernels.sh [--bin FLOWHN_CUDA] [--out DIR] CONFIG REGEX [COUNT]      (on a GPU machine)
#
#   e.g. tools/gpu/ncu_kernels.sh configs/llama-gpt2small.json 'attention_tc_(fwd|bwd)_kernel' 2
#   NCU_EXTRA="--section SourceCounters --section SchedulerStats" adds sections (SourceCounters: the
#   source lines where warps stall most, with -lineinfo builds)
#
# Runs `bench --steps 1 --warmup 1 --no-graph` (launched op by op, so each kernel is its own launch),
# profiles the first COUNT (default 2) launches matching REGEX after skipping the warm-up step's, and
# writes DIR/ncu.txt (the sections below, human-readable) and DIR/ncu.csv (raw metrics) from one profiling run (DIR/ncu.ncu-rep).
# --clock-control none everywhere: the device notes (METHOD.md) say to leave the GPU's clocks alone.
set -uo pipefail
BIN=${FLOWHN_CUDA:-build/flowhn-cuda}; OUTD=runs/ncu
while [ $# -gt 0 ]; do case $1 in
    --bin) BIN=$2; shift 2 ;; --out) OUTD=$2; shift 2 ;; *) break ;; esac; done
[ $# -ge 2 ] || { sed -n '2,12p' "$0"; exit 2; }
CONFIG=$1; REGEX=$2; COUNT=${3:-2}
command -v ncu > /dev/null || { echo "ncu_kernels: no ncu on PATH (Nsight Compute; it ships with the CUDA toolkit)" >&2; exit 2; }
[ -x "$BIN" ] || { echo "ncu_kernels: $BIN is not an executable (--bin or FLOWHN_CUDA)" >&2; exit 2; }
mkdir -p "$OUTD"
# the warm-up step launches each kernel as often as the measured one: skip that many
SKIP=$(( $(ncu --clock-control none --kernel-name "regex:$REGEX" --launch-count 1000 --metrics sm__cycles_elapsed.avg --csv \
    "$BIN" bench --config "$CONFIG" --device cuda --batch 8 --seq-len 1024 --steps 1 --warmup 1 --precision bf16 \
    --no-graph 2>/dev/null | grep -c '"sm__cycles_elapsed.avg"') / 2 ))
# one profiling run into a report, then two views of it (the run is the slow part: each kernel is replayed
# once per metric pass)
rm -f "$OUTD/ncu.ncu-rep"
ncu --clock-control none --kernel-name "regex:$REGEX" --launch-skip "$SKIP" --launch-count "$COUNT" \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis ${NCU_EXTRA:-} -o "$OUTD/ncu" \
    "$BIN" bench --config "$CONFIG" --device cuda --batch 8 --seq-len 1024 --steps 1 --warmup 1 --precision bf16 \
    --no-graph > "$OUTD/ncu.err" 2>&1
ncu -i "$OUTD/ncu.ncu-rep" --csv --page raw > "$OUTD/ncu.csv" 2>> "$OUTD/ncu.err"
ncu -i "$OUTD/ncu.ncu-rep" --page details > "$OUTD/ncu.txt" 2>> "$OUTD/ncu.err"
echo "ncu_kernels: skipped $SKIP warm-up launches; $OUTD/ncu.txt, $OUTD/ncu.csv"
grep -E "^  [a-zA-Z_].*\(|Duration|Compute \(SM\) Throughput|Memory Throughput|Achieved Occupancy|Theoretical Occupancy|Block Limit|Registers Per Thread" "$OUTD/ncu.txt" | head -60
