#!/usr/bin/env bash
# Does training on the GPU follow the CPU's loss curve? Trains the same model
# from the same seed on the same batches three times: CPU fp32 (the oracle),
# CUDA fp32 and CUDA with bf16 matmuls, then compares the curves window by
# window (tools/loss_track_compare.py) and fails if they part.
#
#   tools/loss_track.sh --data SHARD_DIR [--bin build/flowhn-cuda] [--config C]
#                       [--steps 300] [--batch 8] [--seq-len 256] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/flowhn-cuda; CONFIG=configs/main-flowhn-fac.json; STEPS=300; BATCH=8; SEQ=256; OUT=runs/loss_track; DATA=""
while [ $# -gt 0 ]; do
    case "$1" in
        --data) DATA="$2"; shift 2 ;;
        --bin) BIN="$2"; shift 2 ;;
        --config) CONFIG="$2"; shift 2 ;;
        --steps) STEPS="$2"; shift 2 ;;
        --batch) BATCH="$2"; shift 2 ;;
        --seq-len) SEQ="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "loss_track: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ -n "$DATA" ] || { echo "loss_track: --data SHARD_DIR is required (token shards from flowhn prepare)" >&2; exit 2; }
mkdir -p "$OUT"
common=(--config "$CONFIG" --data "$DATA" --steps "$STEPS" --batch "$BATCH" --seq-len "$SEQ" --lr 2e-3
        --val-every $((STEPS / 6)) --val-batches 8 --seed 1)
for run in cpu:fp32 cuda:fp32 cuda:bf16; do
    dev=${run%%:*}; prec=${run##*:}
    echo "== $dev $prec"
    "$BIN" train "${common[@]}" --device "$dev" --precision "$prec" --out "$OUT/$dev-$prec" > "$OUT/$dev-$prec.txt" 2>&1
    grep -E "^done" "$OUT/$dev-$prec.txt"
done
python3 tools/loss_track_compare.py "$OUT/cpu-fp32/log.jsonl" "$OUT/cuda-fp32/log.jsonl" "$OUT/cuda-bf16/log.jsonl" \
    --labels "cpu fp32" "cuda fp32" "cuda bf16" --bounds 0 0.01 0.02 --out "$OUT"
