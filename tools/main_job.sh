#!/usr/bin/env bash
# The default main job (README): on a fresh Debian machine with no GPU,
# install what is needed, build, take a default English corpus from a Debian
# package, train a byte-level BPE tokenizer, make token shards, train a small
# FlowHN (FAC_Split) on the CPU for about ten minutes, and print samples, the
# validation loss against a unigram baseline, and where the loss plot is.
#
#   tools/main_job.sh [--data FILE_OR_DIR ...] [--minutes M] [--out DIR]
#
# --data takes text / JSON-lines files, or a directory of token shards from
# `flowhn prepare` (with its tokenizer.json), instead of the default corpus.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=runs/main
MINUTES=10
DATA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --data) DATA+=("$2"); shift 2 ;;
        --minutes) MINUTES="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "main_job: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

say() { printf '\n== %s\n' "$*"; }

say "1/6 installing build dependencies and the default corpus (Debian package 'fortunes')"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
need=""
for p in build-essential libopenblas-dev libopenblas-openmp-dev libcjson-dev fortunes; do dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"; done
if [ -n "$need" ]; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq $need >/dev/null
fi

say "2/6 building"
make -j"$(nproc)" flowhn >/dev/null
mkdir -p "$OUT"

if [ ${#DATA[@]} -eq 1 ] && [ -d "${DATA[0]}" ]; then
    SHARDS="${DATA[0]}"
    TOKENIZER="$SHARDS/tokenizer.json"
    [ -f "$TOKENIZER" ] || { echo "main_job: $SHARDS has no tokenizer.json next to its shards" >&2; exit 1; }
    say "3/6 using token shards in $SHARDS"
else
    if [ ${#DATA[@]} -eq 0 ]; then
        # fortunes: ~2.5 MB of clean English prose and verse (quotations), the
        # largest clean-prose text package in Debian main that installs in
        # seconds; the ascii-art file is left out (pictures, not language).
        CORPUS="$OUT/corpus.txt"
        # fortunes are separated by lines holding a single '%': make them blank lines
        find /usr/share/games/fortunes -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' ! -name 'ascii-art' \
            -print0 | sort -z | xargs -0 cat | sed 's/^%$//' > "$CORPUS"
        DATA=("$CORPUS")
        say "3/6 corpus: Debian 'fortunes', $(wc -c < "$CORPUS") bytes -> $CORPUS"
    else
        say "3/6 corpus: ${DATA[*]}"
    fi
    TOKENIZER="$OUT/tokenizer.json"
    ./flowhn tokenizer train --input "${DATA[@]}" --vocab-size 4096 --out "$TOKENIZER"
    SHARDS="$OUT/data"
    ./flowhn prepare --tokenizer "$TOKENIZER" --input "${DATA[@]}" --out "$SHARDS" --val-fraction 0.05
fi

say "4/6 training a small FlowHN (FAC_Split) on the CPU for about $MINUTES minutes"
CONFIG=configs/main-flowhn-fac.json
# Steps from a measured speed: time 3 steps, then fill the budget.
./flowhn train --config "$CONFIG" --data "$SHARDS" --out "$OUT/probe" --steps 3 --batch 8 --val-every 0 > "$OUT/probe.txt"
TPS=$(grep -o '[0-9]* tokens/s' "$OUT/probe.txt" | awk '{print $1}')
T=$(grep -o '"max_position_embeddings": *[0-9]*' "$CONFIG" | grep -o '[0-9]*$')
STEPS=$(( TPS * MINUTES * 60 / (8 * T) ))
[ "$STEPS" -lt 20 ] && STEPS=20
echo "measured ${TPS} tokens/s -> $STEPS steps of 8 x $T tokens"
./flowhn train --config "$CONFIG" --data "$SHARDS" --out "$OUT" --steps "$STEPS" --batch 8 --lr 2e-3 \
    --val-every $(( STEPS / 10 > 0 ? STEPS / 10 : 1 )) --val-batches 16 --ckpt-every 100 | tee "$OUT/train.txt"

say "5/6 samples"
for prompt in "The meaning of life is" "A man walks into a bar" "Q: Why"; do
    ./flowhn generate --checkpoint "$OUT/checkpoint.bin" --tokenizer "$TOKENIZER" --prompt "$prompt" \
        --max-tokens 60 --temperature 0.8 --seed 1
    echo
done

say "6/6 results"
grep -E "^done" "$OUT/train.txt" || true
echo "checkpoint:  $OUT/checkpoint.bin"
echo "log:         $OUT/log.jsonl"
echo "loss plot:   $OUT/loss.svg"
