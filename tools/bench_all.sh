#!/usr/bin/env bash
# Training throughput of every architecture on one GPU, as a markdown table.
#
#   tools/bench_all.sh [--bin build/flowhn-cuda] [--precision bf16] [--out DIR]
#                      [--sizes "135m 350m 1b"] [--archs "..."] [--seqs "1024 4096"]
#                      [--tokens 8192] [--steps 5]
#
# Each (architecture, size, T) runs `flowhn bench --device cuda` with
# B = max(1, tokens / T) sequences, so every row trains on about the same
# number of tokens per step. Configs whose max_position_embeddings is below T
# are copied with the limit raised (RoPE has no learned positions). The table
# (and FlowHN / LLaMA ratios) goes to stdout and DIR/bench_all.md; raw output to
# DIR/bench_all.log; plots (tools/plot_bench.py, where matplotlib is installed) to DIR/bench_all_*.svg.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=build/flowhn-cuda; DEV=cuda; PREC=bf16; OUT=runs/bench_all; SIZES="135m"; SEQS="1024"; TOKENS=8192; STEPS=5
ARCHS="llama flowhn-fac flowhn-fa flowhn-ae flowhn-nosplit mamba1 mamba2 jamba shm hymba"
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) BIN="$2"; shift 2 ;;
        --device) DEV="$2"; shift 2 ;;
        --precision) PREC="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --sizes) SIZES="$2"; shift 2 ;;
        --archs) ARCHS="$2"; shift 2 ;;
        --seqs) SEQS="$2"; shift 2 ;;
        --tokens) TOKENS="$2"; shift 2 ;;
        --steps) STEPS="$2"; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "bench_all: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
mkdir -p "$OUT"
LOG="$OUT/bench_all.log"; : > "$LOG"
for size in $SIZES; do for T in $SEQS; do for arch in $ARCHS; do
    cfg="configs/$arch-$size.json"
    [ -f "$cfg" ] || { echo "bench_all: no $cfg, skipped" >&2; continue; }
    maxpos=$(grep -o '"max_position_embeddings": *[0-9]*' "$cfg" | grep -o '[0-9]*$')
    if [ "$maxpos" -lt "$T" ]; then
        sed "s/\"max_position_embeddings\": *[0-9]*/\"max_position_embeddings\": $T/" "$cfg" > "$OUT/$arch-$size-T$T.json"
        cfg="$OUT/$arch-$size-T$T.json"
    fi
    B=$(( TOKENS / T > 0 ? TOKENS / T : 1 ))
    echo "== $arch-$size T=$T B=$B" | tee -a "$LOG" >&2
    timeout 300 "$BIN" bench --config "$cfg" --device "$DEV" --precision "$PREC" --batch "$B" --seq-len "$T" \
        --steps "$STEPS" --warmup 2 >> "$LOG" 2>&1 || echo "BENCHFAIL arch=$arch-$size T=$T" >> "$LOG"
    echo "BENCHTAG arch=$arch size=$size" >> "$LOG"
done; done; done
python3 - "$LOG" "$PREC" <<'PY' | tee "$OUT/bench_all.md"
import sys, re
log, prec = sys.argv[1], sys.argv[2]
rows, pending = [], None
for line in open(log):
    if line.startswith("BENCH "):
        pending = dict(kv.split("=", 1) for kv in line.split()[1:])
    elif line.startswith("BENCHFAIL"):
        a = dict(kv.split("=", 1) for kv in line.split()[1:]); rows.append(("fail", a)); pending = None
    elif line.startswith("BENCHTAG") and pending:
        t = dict(kv.split("=", 1) for kv in line.split()[1:]); pending.update(t); rows.append(("ok", pending)); pending = None
print(f"Training (forward + backward + AdamW), matmul precision {prec}; MFU = model FLOPs / 989 TFLOP/s (H100 SXM bf16 dense)\n")
print("| arch | size | T | B | tokens/s | step ms | TFLOP/s | MFU | peak GiB | / LLaMA |")
print("|---|---|---|---|---|---|---|---|---|---|")
llama = {(r["size"], r["T"]): float(r["tokens_per_s"]) for k, r in rows if k == "ok" and r["arch"] == "llama"}
for k, r in rows:
    if k == "fail":
        print(f"| {r['arch']} | | {r['T']} | | failed (see log) | | | | | |"); continue
    tps = float(r["tokens_per_s"]); ref = llama.get((r["size"], r["T"]))
    ratio = f"{tps / ref:.2f}x" if ref else "-"
    print(f"| {r['arch']} | {r['size']} | {r['T']} | {r['B']} | {tps:,.0f} | {float(r['step_ms']):.1f} | "
          f"{float(r['tflops']):.1f} | {100 * float(r['mfu_bf16']):.1f}% | {float(r['peak_alloc_gib']):.1f} | {ratio} |")
PY
# plots beside the table (DIR/bench_all_sizes.svg, DIR/bench_all_seq.svg) where matplotlib is installed
python3 tools/plot_bench.py "$LOG" --out "$OUT/bench_all" --title "$PREC" || true
