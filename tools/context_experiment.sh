#!/usr/bin/env bash
# FlowHN's two context modes at a tiny CPU scale (docs/context-modes.md):
# trains a byte-level BPE tokenizer (1024 tokens), makes token shards, trains
# LLaMA, FlowHN-FAC with context "isolated" and FlowHN-FAC with context
# "prefix" (configs/ctx-*.json, ~2.1M parameters each) for the same steps,
# batch, learning rate and seed, then evaluates each checkpoint on the
# validation shards with the loss by position (flowhn eval --by-position 8 and
# 32), on repeated text (tools/repeat_shards.py: a 128-token chunk, then the
# same chunk), times a training step alone (flowhn bench), and writes
# OUT/results.md (tables) and OUT/loss_by_position.svg (OUT: runs/context).
#
#   tools/context_experiment.sh [--data FILE] [--steps N] [--batch B] [--models "a b c"] [--seed S]
#                               [--out DIR] [--fresh]
#                               [--passkey] [--passkey-only] [--passkey-steps N] [--passkey-T T]
#                               [--passkey-alphabet A] [--passkey-batch B] [--passkey-lr X]
#
# --passkey adds the passkey probe: synthetic shards (tools/passkey_shards.py)
# where a random key follows a marker and is repeated after a second marker:
# "across": a 64-token key after the marker at 32 (first half), repeated after
# the marker at 159 (second half); "within": a 32-token key after the marker at
# 136, repeated after the marker at 191 (both in the second half). Each model
# is trained on each layout from scratch (--passkey-steps, batch 4) and the
# loss on the repeated key (input positions repeat .. repeat+K-1) is read from
# eval --by-position T into runs/context/passkey.md. PK_LAYOUTS
# ("name:first:repeat:K ...", or "periodic:P" for a random block of P tokens
# repeated, reported by where the copied token lies relative to the split at
# T/2: first half, across, within the second half) and PK_MODELS (environment) choose the layouts
# and models. --passkey-T (sequence length, default 256; the models' config
# must have max_position_embeddings = T, as eval runs at that length, e.g.
# configs/ctx-pk-*.json for 128), --passkey-alphabet (key ids, default 256),
# --passkey-batch (default 4) and --passkey-lr (default --lr's) set the probe;
# the learnable CPU-scale probe of docs/context-modes.md is
#   PK_MODELS="ctx-pk-llama ctx-pk-flowhn-fac-isolated ctx-pk-flowhn-fac-prefix" PK_LAYOUTS=periodic:32 \
#   tools/context_experiment.sh --passkey-only --out runs/context-pk --passkey-T 128 \
#       --passkey-alphabet 32 --passkey-batch 8 --passkey-lr 3e-3 --passkey-steps 300
#
# Default data: /work/shared/data/text/tinyshakespeare.txt. A model whose
# checkpoint already exists in runs/context/<model>/ is not trained again
# unless --fresh is given (so the evaluation can be redone alone).
# FLOWHN=path runs another flowhn binary (default ./flowhn).
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=/work/shared/data/text/tinyshakespeare.txt
OUT=runs/context
STEPS=280
BATCH=8
LR=2e-3
SEED=1
BUCKETS=8
EVAL_BATCHES=20
MODELS="ctx-llama ctx-flowhn-fac-isolated ctx-flowhn-fac-prefix"
FRESH=0
PASSKEY=0
TEXT=1
PK_STEPS=300
PK_T=256
PK_ALPHABET=256
PK_BATCH=4
PK_LR=
FLOWHN=${FLOWHN:-./flowhn}
while [ $# -gt 0 ]; do
    case "$1" in
        --data) DATA="$2"; shift 2 ;;
        --steps) STEPS="$2"; shift 2 ;;
        --batch) BATCH="$2"; shift 2 ;;
        --models) MODELS="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --seed) SEED="$2"; shift 2 ;;
        --fresh) FRESH=1; shift ;;
        --passkey) PASSKEY=1; shift ;;
        --passkey-only) PASSKEY=1; TEXT=0; shift ;;
        --passkey-steps) PK_STEPS="$2"; shift 2 ;;
        --passkey-T) PK_T="$2"; shift 2 ;;
        --passkey-alphabet) PK_ALPHABET="$2"; shift 2 ;;
        --passkey-batch) PK_BATCH="$2"; shift 2 ;;
        --passkey-lr) PK_LR="$2"; shift 2 ;;
        -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
        *) echo "context_experiment: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ -f "$DATA" ] || { echo "context_experiment: no data file $DATA (give --data FILE)" >&2; exit 1; }
[ -x "$FLOWHN" ] || make -j"$(nproc)" flowhn >/dev/null
mkdir -p "$OUT/data"
SHARDS="$OUT/data"
TOK="$SHARDS/tokenizer.json"

if [ "$TEXT" = 1 ]; then
if [ ! -f "$TOK" ] || [ "$FRESH" = 1 ]; then
    echo "== tokenizer (1024 tokens) and shards from $DATA"
    "$FLOWHN" tokenizer train --input "$DATA" --vocab-size 1024 --out "$TOK"
    "$FLOWHN" prepare --tokenizer "$TOK" --input "$DATA" --out "$SHARDS" --val-fraction 0.05
fi

for m in $MODELS; do
    d="$OUT/$m"
    if [ -f "$d/checkpoint.bin" ] && [ "$FRESH" = 0 ]; then echo "== $m: checkpoint exists, not retrained"; continue; fi
    echo "== training $m: $STEPS steps, batch $BATCH x 256, lr $LR, seed $SEED"
    mkdir -p "$d"
    "$FLOWHN" info --config "configs/$m.json" > "$d/info.txt"
    start=$(date +%s)
    "$FLOWHN" train --config "configs/$m.json" --data "$SHARDS" --out "$d" --steps "$STEPS" --batch "$BATCH" \
        --lr "$LR" --seed "$SEED" --val-every 0 2> "$d/train.stderr" > "$d/train.txt"
    echo $(( $(date +%s) - start )) > "$d/train_seconds"
done

for m in $MODELS; do
    d="$OUT/$m"
    echo "== evaluating $m"
    "$FLOWHN" eval --checkpoint "$d/checkpoint.bin" --data "$SHARDS" --batches "$EVAL_BATCHES" \
        --by-position "$BUCKETS" > "$d/eval.txt"
    cat "$d/eval.txt"
done
# finer buckets (8 positions) to see the first tokens after the split boundary at 128
for m in $MODELS; do
    "$FLOWHN" eval --checkpoint "$OUT/$m/checkpoint.bin" --data "$SHARDS" --batches "$EVAL_BATCHES" \
        --by-position 32 > "$OUT/$m/eval_fine.txt"
done
# the repeated-text probe (tools/repeat_shards.py): validation chunks of 128 tokens, each followed by itself
python3 tools/repeat_shards.py --val "$SHARDS/val_000000.bin" --out "$OUT/repeat"
for m in $MODELS; do
    "$FLOWHN" eval --checkpoint "$OUT/$m/checkpoint.bin" --data "$OUT/repeat" --batches 40 --by-position 8 \
        > "$OUT/$m/eval_repeat.txt"
done
# throughput on its own (training tokens/s of a full step, batch 8 x 256), one model at a time, so that the
# training logs' figures (taken while anything else ran on the machine) are not the only ones
for m in $MODELS; do
    "$FLOWHN" bench --config "configs/$m.json" --batch 8 --steps 10 --warmup 2 > "$OUT/$m/bench.txt" 2>&1
done

python3 - "$OUT" $MODELS <<'EOF'
import json, re, statistics, sys
out, models = sys.argv[1], sys.argv[2:]
rows, series, fines = [], {}, {}
for m in models:
    d = f"{out}/{m}"
    ev = open(f"{d}/eval.txt").read()
    loss = float(re.search(r"loss ([0-9.]+) nats/token", ev).group(1))
    buckets = [(int(a), int(b), float(x)) for a, b, x in
               re.findall(r"POSLOSS bucket=\d+ from=(\d+) to=(\d+) loss=([0-9.]+)", ev)]
    log = [json.loads(l) for l in open(f"{d}/log.jsonl")]
    # steady-state throughput: the median step after the first 10% (warm-up, allocation)
    tps = statistics.median(r["tokens_per_s"] for r in log[len(log) // 10:])
    info = open(f"{d}/info.txt").read()
    params = int(re.search(r"total\s+(\d+)", info).group(1))
    secs = open(f"{d}/train_seconds").read().strip()
    bench = float(re.search(r"BENCH .*tokens_per_s=([0-9.]+)", open(f"{d}/bench.txt").read()).group(1))
    rep = [float(x) for x in re.findall(r"POSLOSS bucket=\d+ from=\d+ to=\d+ loss=([0-9.]+)",
                                        open(f"{d}/eval_repeat.txt").read())]
    fine = [(int(a), int(b), float(x)) for a, b, x in re.findall(
        r"POSLOSS bucket=\d+ from=(\d+) to=(\d+) loss=([0-9.]+)", open(f"{d}/eval_fine.txt").read())]
    fines[m] = fine
    rows.append((m, params, log[-1]["step"], log[-1]["loss"], loss, tps, secs, buckets, bench, rep))
    series[m] = buckets
with open(f"{out}/results.md", "w") as f:
    f.write("| model | params | steps | last train loss | val loss | train tokens/s (median step of the run) | "
            "bench tokens/s (alone) | train wall s |\n")
    f.write("|---|---|---|---|---|---|---|---|\n")
    for m, p, s, tl, vl, tps, secs, _, bench, _ in rows:
        f.write(f"| {m} | {p} | {s} | {tl:.4f} | {vl:.4f} | {tps:.0f} | {bench:.0f} | {secs} |\n")
    f.write("\nValidation loss by position bucket (nats/token; positions of the input token, 0-based):\n\n")
    b0 = rows[0][7]
    f.write("| model | " + " | ".join(f"{a}-{b - 1}" for a, b, _ in b0) + " |\n")
    f.write("|---|" + "---|" * len(b0) + "\n")
    for m, *_, bk, _, _ in rows:
        f.write(f"| {m} | " + " | ".join(f"{x:.4f}" for _, _, x in bk) + " |\n")
    sel = [i for i, (a, b, _) in enumerate(next(iter(fines.values()))) if a < 24 or 104 <= a < 176]
    f0 = next(iter(fines.values()))
    f.write("\nThe same validation windows in buckets of 8 positions (the first three, and 104-175 around the "
            "FAC split boundary at 128):\n\n")
    f.write("| model | " + " | ".join(f"{f0[i][0]}-{f0[i][1] - 1}" for i in sel) + " |\n")
    f.write("|---|" + "---|" * len(sel) + "\n")
    for m, fine in fines.items():
        f.write(f"| {m} | " + " | ".join(f"{fine[i][2]:.4f}" for i in sel) + " |\n")
    f.write("\nRepeated text (a validation chunk of 128 tokens, then the same chunk): loss by position bucket; "
            "positions 128-255 can be copied from 0-127:\n\n")
    f.write("| model | " + " | ".join(f"{a}-{b - 1}" for a, b, _ in b0) + " | first half | second half |\n")
    f.write("|---|" + "---|" * (len(b0) + 2) + "\n")
    for m, *_, rep in rows:
        h = len(rep) // 2
        f.write(f"| {m} | " + " | ".join(f"{x:.4f}" for x in rep) +
                f" | {sum(rep[:h]) / h:.4f} | {sum(rep[h:]) / h:.4f} |\n")
# SVG: loss by position bucket, one polyline per model (written here: no plotting library needed)
W, H, L, R, T, B = 640, 400, 60, 200, 30, 45
allx = [x for s in series.values() for _, _, x in s]
lo, hi = min(allx), max(allx)
pad = (hi - lo) * 0.08 or 0.1
lo, hi = lo - pad, hi + pad
Tn = max(b for s in series.values() for _, b, _ in s)
sx = lambda p: L + (W - L - R) * p / Tn
sy = lambda v: T + (H - T - B) * (hi - v) / (hi - lo)
colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{L}" y="18" font-size="14">validation loss by position (bucket means)</text>',
       f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>',
       f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>',
       f'<text x="{(L + W - R) / 2 - 40}" y="{H - 8}">token position</text>',
       f'<text x="14" y="{(T + H - B) / 2}" transform="rotate(-90 14 {(T + H - B) / 2})">loss (nats)</text>']
for i in range(5):
    v = lo + (hi - lo) * i / 4
    svg.append(f'<line x1="{L - 4}" y1="{sy(v):.1f}" x2="{W - R}" y2="{sy(v):.1f}" stroke="#ddd"/>')
    svg.append(f'<text x="{L - 8}" y="{sy(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>')
for p in range(0, Tn + 1, Tn // 8 if Tn >= 8 else 1):
    svg.append(f'<text x="{sx(p):.1f}" y="{H - B + 16}" text-anchor="middle">{p}</text>')
for k, (m, s) in enumerate(series.items()):
    c = colors[k % len(colors)]
    pts = " ".join(f"{sx((a + b) / 2):.1f},{sy(x):.1f}" for a, b, x in s)
    svg.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{pts}"/>')
    for a, b, x in s:
        svg.append(f'<circle cx="{sx((a + b) / 2):.1f}" cy="{sy(x):.1f}" r="3" fill="{c}"/>')
    svg.append(f'<line x1="{W - R + 10}" y1="{T + 20 * k + 6}" x2="{W - R + 30}" y2="{T + 20 * k + 6}" stroke="{c}" stroke-width="2"/>')
    svg.append(f'<text x="{W - R + 35}" y="{T + 20 * k + 10}">{m}</text>')
svg.append("</svg>")
open(f"{out}/loss_by_position.svg", "w").write("\n".join(svg) + "\n")
print(open(f"{out}/results.md").read())
print(f"plot: {out}/loss_by_position.svg")
EOF
fi

[ "$PASSKEY" = 1 ] || exit 0
PK_LAYOUTS=${PK_LAYOUTS:-"across:32:159:64 within:136:191:32"}
PK_MODELS=${PK_MODELS:-$MODELS}
PK_LR=${PK_LR:-$LR}
for layout in $PK_LAYOUTS; do
    IFS=: read -r name first repeat K <<< "$layout"
    PK="$OUT/passkey-$name"
    if [ "$name" = periodic ]; then   # "periodic:P": a random block of P tokens repeated (passkey_shards.py --period)
        gen=(--period "$first")
    else
        gen=(--first "$first" --repeat "$repeat" --K "$K")
    fi
    [ -f "$PK/data/train_000000.bin" ] ||
        python3 tools/passkey_shards.py --out "$PK/data" "${gen[@]}" --T "$PK_T" --alphabet "$PK_ALPHABET"
    for m in $PK_MODELS; do
        d="$PK/$m"
        if [ -f "$d/checkpoint.bin" ] && [ "$FRESH" = 0 ]; then echo "== passkey $name $m: checkpoint exists"; else
            echo "== passkey $name: training $m, $PK_STEPS steps, batch $PK_BATCH x $PK_T, lr $PK_LR, seed $SEED"
            mkdir -p "$d"
            start=$(date +%s)
            "$FLOWHN" train --config "configs/$m.json" --data "$PK/data" --out "$d" --steps "$PK_STEPS" \
                --batch "$PK_BATCH" --seq-len "$PK_T" --lr "$PK_LR" --seed "$SEED" --val-every 0 \
                2> "$d/train.stderr" > "$d/train.txt"
            echo $(( $(date +%s) - start )) > "$d/train_seconds"
        fi
        "$FLOWHN" eval --checkpoint "$d/checkpoint.bin" --data "$PK/data" --batches 32 --by-position "$PK_T" > "$d/eval.txt"
        echo "$layout:$PK_ALPHABET" > "$d/layout"
    done
done
python3 - "$OUT" <<'EOF'
import glob, math, re, sys
out = sys.argv[1]
lines = ["| layout: marker at first, repeat; key K | model | steps | train wall s | val loss (all) | "
         "loss on the first key | loss on the repeated key | chance ln A | filler loss |",
         "|---|---|---|---|---|---|---|---|---|"]
periodic = ["| model | steps | train wall s | val loss (all) | first block (chance) | copies in the first half | "
            "copies across the split | copies within the second half | chance ln A |", "|---|---|---|---|---|---|---|---|---|"]
for d in sorted(glob.glob(f"{out}/passkey-*/*/layout")):
    d = d[:-len("/layout")]
    f = open(f"{d}/layout").read().strip().split(":")
    if f[0] == "periodic":
        P, A = int(f[1]), int(f[-1])
        ev = open(f"{d}/eval.txt").read()
        pos = {int(a): float(x) for a, x in re.findall(r"POSLOSS bucket=\d+ from=(\d+) to=\d+ loss=([0-9.]+)", ev)}
        loss = float(re.search(r"loss ([0-9.]+) nats/token", ev).group(1))
        T = max(pos) + 1
        h = T // 2   # the split boundary of configs/ctx-pk-flowhn-* (n_a = T/2, flowhn info)
        # input p predicts token p+1, a copy of token p+1-P; the isolated split can reach it only when p and
        # p+1-P lie in the same half (the last input, whose target is the next sequence's first token, is left out)
        reg = {"first": [], "fh": [], "across": [], "within": []}
        for p in range(T - 1):
            src = p + 1 - P
            key = "first" if src < 0 else "fh" if p < h else "across" if src < h else "within"
            reg[key].append(pos[p])
        mean = {k: sum(v) / len(v) for k, v in reg.items()}
        steps = sum(1 for _ in open(f"{d}/log.jsonl"))
        secs = open(f"{d}/train_seconds").read().strip()
        periodic.append(f"| {d.split('/')[-1]} | {steps} | {secs} | {loss:.4f} | {mean['first']:.3f} | {mean['fh']:.3f} | "
                        f"{mean['across']:.3f} | {mean['within']:.3f} | {math.log(A):.3f} |")
        continue
    name, first, repeat, K = f[0], int(f[1]), int(f[2]), int(f[3])
    A = int(f[4]) if len(f) > 4 else 256   # layout files written before --passkey-alphabet
    ev = open(f"{d}/eval.txt").read()
    pos = {int(a): float(x) for a, x in re.findall(r"POSLOSS bucket=\d+ from=(\d+) to=\d+ loss=([0-9.]+)", ev)}
    loss = float(re.search(r"loss ([0-9.]+) nats/token", ev).group(1))
    steps = sum(1 for _ in open(f"{d}/log.jsonl"))
    # input position p predicts token p+1: the key after the marker at q is predicted from q .. q+K-1
    k1 = sum(pos[p] for p in range(first, first + K)) / K
    k2 = sum(pos[p] for p in range(repeat, repeat + K)) / K
    # filler: every input position whose target is neither a marker nor a key token; the last position
    # is left out too, its target is the next sequence's first token (a random phase of the cycle)
    T = max(pos) + 1
    skip = {first - 1, repeat - 1, T - 1} | set(range(first, first + K)) | set(range(repeat, repeat + K))
    fill = [x for p, x in pos.items() if p not in skip]
    secs = open(f"{d}/train_seconds").read().strip()
    lines.append(f"| {name}: {first}, {repeat}; {K} | {d.split('/')[-1]} | {steps} | {secs} | {loss:.4f} | "
                 f"{k1:.3f} | {k2:.3f} | {math.log(A):.3f} | {sum(fill) / len(fill):.4f} |")
txt = ""
if len(lines) > 2:
    txt += "\n".join(lines) + "\n\nchance on a key token: ln A (A key ids); perfect retrieval: 0.\n"
if len(periodic) > 2:
    txt += ("\nPeriodic layout (a random block repeated), mean loss by where the copied token lies:\n\n" +
            "\n".join(periodic) + "\n")
open(f"{out}/passkey.md", "w").write(txt)
print(txt)
EOF
