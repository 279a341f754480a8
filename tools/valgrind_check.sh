#!/bin/sh
# valgrind --leak-check=full on a short train (2 steps, validation, checkpoint)
# and a generate run, on data the script makes itself. Exit status != 0 on any
# memory error or definite leak. Usage: tools/valgrind_check.sh   (after make)
set -eu
d=$(mktemp -d /tmp/flowhn-valgrind.XXXXXX)
trap 'rm -rf "$d"' EXIT
python3 - "$d" <<'PY'
import json, sys
d = sys.argv[1]
open(d + "/text.txt", "w").write("".join("line %d: the quick brown fox jumps over the lazy dog.\n" % i for i in range(3000)))
c = json.load(open("configs/tiny-flowhn-fac.json"))
c["vocab_size"] = 512
json.dump(c, open(d + "/config.json", "w"))
PY
./flowhn tokenizer train --input "$d/text.txt" --vocab-size 512 --out "$d/tok.json" > /dev/null
./flowhn prepare --tokenizer "$d/tok.json" --input "$d/text.txt" --out "$d/data" > /dev/null
VG="valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=9 -q"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
$VG ./flowhn train --config "$d/config.json" --data "$d/data" --out "$d/run" --steps 2 --batch 2 --seq-len 16 \
    --val-every 1 --val-batches 1 > "$d/train.log" 2>&1 || { cat "$d/train.log"; exit 1; }
$VG ./flowhn generate --checkpoint "$d/run/checkpoint.bin" --tokenizer "$d/tok.json" --prompt "line" \
    --max-tokens 8 > "$d/gen.log" 2>&1 || { cat "$d/gen.log"; exit 1; }
echo "valgrind: train and generate clean (no memory errors, no definite leaks)"
