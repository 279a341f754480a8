#!/usr/bin/env python3
"""Compares training-loss curves (flowhn log.jsonl files) against the first one.

The per-step loss is noisy (each step is a different batch), so curves are
compared as means over windows of 25 steps; a run fails when any window's mean
differs from the reference's by more than its relative bound, or its final
validation loss does. Prints a markdown table; writes loss_track.svg when
matplotlib is available. Exit status 1 when a bound is broken."""
import argparse, json, os, sys

ap = argparse.ArgumentParser()
ap.add_argument("logs", nargs="+")
ap.add_argument("--labels", nargs="+")
ap.add_argument("--bounds", nargs="+", type=float, help="relative bound per log (the first is the reference)")
ap.add_argument("--window", type=int, default=25)
ap.add_argument("--out", default=".")
a = ap.parse_args()
labels = a.labels or a.logs

def read(path):
    train, val = {}, {}
    for line in open(path):
        r = json.loads(line)
        if "val_loss" in r: val[r["step"]] = r["val_loss"]
        if "loss" in r: train[r["step"]] = r["loss"]
    return train, val

runs = [read(p) for p in a.logs]
ref_t, ref_v = runs[0]
steps = sorted(ref_t)
W = a.window
windows = [steps[i:i + W] for i in range(0, len(steps), W)]
ok = True
print("| steps | " + " | ".join(labels) + " |")
print("|---|" + "---|" * len(labels))
worst = [0.0] * len(runs)
for w in windows:
    means = []
    for k, (t, _) in enumerate(runs):
        if not all(s in t for s in w):
            print(f"{labels[k]}: steps {w[0]}-{w[-1]} missing from its log", file=sys.stderr)
            sys.exit(1)
        means.append(sum(t[s] for s in w) / len(w))
    for k in range(1, len(runs)):
        worst[k] = max(worst[k], abs(means[k] - means[0]) / abs(means[0]))
    print(f"| {w[0]}-{w[-1]} | " + " | ".join(f"{m:.4f}" for m in means) + " |")
last_val = max(ref_v) if ref_v else None
if last_val is not None:
    vals = [r[1].get(last_val) for r in runs]
    print(f"| val @ {last_val} | " + " | ".join("-" if v is None else f"{v:.4f}" for v in vals) + " |")
for k in range(1, len(runs)):
    bound = a.bounds[k] if a.bounds else 0.02
    vrel = 0.0
    if last_val is not None and runs[k][1].get(last_val) is not None:
        vrel = abs(runs[k][1][last_val] - ref_v[last_val]) / ref_v[last_val]
    good = worst[k] <= bound and vrel <= bound
    ok &= good
    print(f"{labels[k]} vs {labels[0]}: worst window rel {worst[k]:.2e}, final val rel {vrel:.2e} "
          f"(bound {bound:.0e}) {'ok' if good else 'FAIL'}")
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for k, (t, _) in enumerate(runs):
        xs = sorted(t)
        ax.plot(xs, [t[s] for s in xs], lw=0.8, label=labels[k])
    ax.set_xlabel("step"); ax.set_ylabel("training loss (nats/token)"); ax.legend(); ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "loss_track.svg"))
    print(f"plot: {os.path.join(a.out, 'loss_track.svg')}")
except ImportError:
    pass
sys.exit(0 if ok else 1)
