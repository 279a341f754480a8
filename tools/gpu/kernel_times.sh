#!/usr/bin/env bash
# Every kernel of one training step, timed by Nsight Compute: which kernels an op's time is made of
# (`bench --profile` times ops, and an op may launch several kernels, ours or a library's).
#
#   tools/gpu/kernel_times.sh [--bin FLOWHN_CUDA] [--out DIR] CONFIG [ENV=VALUE ...]     (on a GPU machine)
#
# Runs `bench --steps 1 --warmup 1 --no-graph` under ncu with one metric (gpu__time_duration.sum) on every
# launch, with FLOWHN_LT_TUNE=0 so the warm-up step launches what the measured one does (lt-tune would time
# candidates there), keeps the second half of the launches (the measured step), and prints a table per
# kernel name: launches, total us, mean us, share; DIR/kernels.csv holds the raw rows. Times are of each
# kernel alone (ncu serialises launches), so they add to more than a step where branches overlap.
set -uo pipefail
BIN=${FLOWHN_CUDA:-build/flowhn-cuda}; OUTD=runs/ktimes
while [ $# -gt 0 ]; do case $1 in
    --bin) BIN=$2; shift 2 ;; --out) OUTD=$2; shift 2 ;; *) break ;; esac; done
[ $# -ge 1 ] || { sed -n '2,11p' "$0"; exit 2; }
CONFIG=$1; shift
command -v ncu > /dev/null || { echo "kernel_times: no ncu on PATH" >&2; exit 2; }
mkdir -p "$OUTD"
env FLOWHN_LT_TUNE=0 "$@" ncu --clock-control none --metrics gpu__time_duration.sum --csv \
    "$BIN" bench --config "$CONFIG" --device cuda --batch 8 --seq-len 1024 --steps 1 --warmup 1 --precision bf16 \
    --no-graph > "$OUTD/kernels.csv" 2> "$OUTD/kernels.err"
python3 - "$OUTD/kernels.csv" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10 and r[-3] == 'gpu__time_duration.sum']
if not rows: print("kernel_times: no rows (see kernels.err)"); sys.exit(1)
# columns: "ID","Process ID","Process Name","Host Name","Kernel Name",...,"Metric Name","Metric Unit","Metric Value"
step = rows[len(rows) // 2:]
unit = step[0][-2]
scale = {'ns': 1e-3, 'nsecond': 1e-3, 'us': 1.0, 'usecond': 1.0, 'ms': 1e3, 'msecond': 1e3}[unit]
agg = collections.defaultdict(lambda: [0, 0.0])
for r in step:
    name = r[4].split('(')[0][:90]
    agg[name][0] += 1; agg[name][1] += float(r[-1].replace(',', '')) * scale
tot = sum(v[1] for v in agg.values())
print(f"| kernel | launches | total us | mean us | share |  ({len(step)} launches, {tot/1e3:.3f} ms)")
for name, (n, t) in sorted(agg.items(), key=lambda kv: -kv[1][1])[:40]:
    print(f"| {name} | {n} | {t:.1f} | {t/n:.1f} | {100*t/tot:.1f}% |")
PY
