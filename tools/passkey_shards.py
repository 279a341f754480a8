#!/usr/bin/env python3
"""Synthetic passkey shards for tools/context_experiment.sh (docs/context-modes.md).

Every sequence is exactly T tokens, so each row of a batch is one sequence
(the loader's rows start at multiples of T): filler, a marker, a random key of
K tokens, filler, the marker again at position --repeat, the same key again.
Filler is the cycle 0..49 from a random phase (predictable from the previous
token), the marker is token 60, key tokens are uniform (with replacement) over
100..100+A-1, A = --alphabet (default 256: chance loss ln 256 = 5.545 nats).
The repeated key is predicted from input positions repeat .. repeat+K-1; its
loss there measures retrieval across the distance. (A 2M-parameter LLaMA did
not learn this layout in 400 CPU steps even with A 16 and K 24; it learns the
--period layout below in ~100: docs/context-modes.md.)

With --period P instead (no --first/--repeat/--K, no marker, no filler): each
sequence is one random block of P key tokens repeated to fill T, so from
position P on every token equals the token P positions back. Every position
past the first block is a retrieval target (a strong training signal), and
which half the source lies in is fixed by the position: at T 128, P 32 and a
split at 64, the targets 65-95 (input positions 64-94) are copies of tokens
33-63 (across the split), the targets 96-127 (inputs 95-126) copies of tokens
64-95 (within the second half).

  passkey_shards.py --out DIR --first P --repeat R [--T T] [--K K] [--alphabet A]
                    [--seqs N] [--val-seqs N] [--seed S]
  passkey_shards.py --out DIR --period P [--T T] [--alphabet A] [--seqs N] [--val-seqs N] [--seed S]
"""
import argparse, os, random, struct

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--out", required=True)
ap.add_argument("--first", type=int, help="position of the first marker")
ap.add_argument("--repeat", type=int, help="position of the second marker")
ap.add_argument("--period", type=int, help="instead of the marker layout: a random block of P tokens, repeated")
ap.add_argument("--T", type=int, default=256)
ap.add_argument("--K", type=int, default=8, help="key length in tokens")
ap.add_argument("--alphabet", type=int, default=256, help="key tokens are uniform over 100..100+A-1")
ap.add_argument("--seqs", type=int, default=4000)
ap.add_argument("--val-seqs", type=int, default=128)
ap.add_argument("--seed", type=int, default=1)
a = ap.parse_args()
assert a.alphabet >= 1
if a.period is None:
    assert a.first is not None and a.repeat is not None, "give --first and --repeat, or --period"
    assert a.first + a.K < a.repeat and a.repeat + a.K < a.T
else:
    assert 1 <= a.period < a.T
rng = random.Random(a.seed)

def seq():
    if a.period is not None:
        block = [rng.randrange(100, 100 + a.alphabet) for _ in range(a.period)]
        return [block[i % a.period] for i in range(a.T)]
    phase = rng.randrange(50)
    s = [(phase + i) % 50 for i in range(a.T)]
    key = [rng.randrange(100, 100 + a.alphabet) for _ in range(a.K)]
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
what = (f"a block of {a.period} repeated" if a.period is not None else
        f"marker at {a.first} and {a.repeat}, key of {a.K}")
print(f"{a.out}: {a.seqs} train and {a.val_seqs} val sequences of {a.T}; {what} over {a.alphabet} ids")
