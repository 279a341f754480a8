#!/usr/bin/env python3
"""Synthetic passkey shards for tools/context_experiment.sh (docs/context-modes.md).

Every sequence is exactly T tokens, so each row of a batch is one sequence
(the loader's rows start at multiples of T): filler, a marker, a random key of
K tokens, filler, the marker again at position --repeat, the same key again.
Filler is the cycle 0..49 from a random phase (predictable from the previous
token), the marker is token 60, key tokens are uniform over 100..355 (chance
loss ln 256 = 5.545 nats). The repeated key is predicted from input positions
repeat .. repeat+K-1; its loss there measures retrieval across the distance.

  passkey_shards.py --out DIR --first P --repeat R [--seqs N] [--val-seqs N] [--seed S]
"""
import argparse, os, random, struct

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--first", type=int, required=True, help="position of the first marker")
ap.add_argument("--repeat", type=int, required=True, help="position of the second marker")
ap.add_argument("--T", type=int, default=256)
ap.add_argument("--K", type=int, default=8)
ap.add_argument("--seqs", type=int, default=4000)
ap.add_argument("--val-seqs", type=int, default=128)
ap.add_argument("--seed", type=int, default=1)
a = ap.parse_args()
assert a.first + a.K < a.repeat and a.repeat + a.K < a.T
rng = random.Random(a.seed)

def seq():
    phase = rng.randrange(50)
    s = [(phase + i) % 50 for i in range(a.T)]
    key = [rng.randrange(100, 356) for _ in range(a.K)]
    for p in (a.first, a.repeat):
        s[p] = 60
        s[p + 1:p + 1 + a.K] = key
    return s

def write(path, n):
    toks = [t for _ in range(n) for t in seq()]
    toks.append(toks[0])   # the last row's last target
    hdr = [20240520, 1, len(toks)] + [0] * 253
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", *hdr))
        f.write(struct.pack(f"<{len(toks)}H", *toks))

os.makedirs(a.out, exist_ok=True)
write(os.path.join(a.out, "train_000000.bin"), a.seqs)
write(os.path.join(a.out, "val_000000.bin"), a.val_seqs)
print(f"{a.out}: {a.seqs} train and {a.val_seqs} val sequences of {a.T}; marker at {a.first} and {a.repeat}, key of {a.K}")
