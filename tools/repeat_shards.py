#!/usr/bin/env python3
"""Repeated-text validation shards for tools/context_experiment.sh (docs/context-modes.md).

Each sequence of T tokens is a chunk of T/2 tokens of a real validation shard
followed by the same chunk again, so a model that can read the first half
predicts the second half by copying. No training on these: a model trained on
the text is evaluated with `flowhn eval --by-position`, and the second half's
loss against the first half's shows whether (and how much) it uses the earlier
copy. Rows start at multiples of T in the loader, so every row is one sequence.

  repeat_shards.py --val SHARD --out DIR [--T 256]
"""
import argparse, os, struct

ap = argparse.ArgumentParser()
ap.add_argument("--val", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--T", type=int, default=256)
a = ap.parse_args()
with open(a.val, "rb") as f:
    hdr = struct.unpack("<256i", f.read(1024))
    assert hdr[0] == 20240520 and hdr[1] == 1, "a version-1 (uint16) llm.c shard"
    toks = list(struct.unpack(f"<{hdr[2]}H", f.read(2 * hdr[2])))
h = a.T // 2
out = []
for i in range(len(toks) // h):
    c = toks[i * h:(i + 1) * h]
    out += c + c
out.append(out[0])   # the last row's last target
os.makedirs(a.out, exist_ok=True)
with open(os.path.join(a.out, "val_000000.bin"), "wb") as f:
    f.write(struct.pack("<256i", 20240520, 1, len(out), *([0] * 253)))
    f.write(struct.pack(f"<{len(out)}H", *out))
print(f"{a.out}/val_000000.bin: {len(toks) // h} sequences of {a.T} (a chunk of {h} tokens, then the same chunk)")
