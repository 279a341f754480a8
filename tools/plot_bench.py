#!/usr/bin/env python3
"""Plots of tools/bench_all.sh logs (its BENCH / BENCHTAG lines).

    python3 tools/plot_bench.py LOG [LOG ...] --out PREFIX

Writes PREFIX_sizes.svg: training tokens/s of every architecture at each size, at T 1024 (bars, MFU on
each bar), and PREFIX_seq.svg: tokens/s against T for the architectures measured at more than one T
(log T), with each one's speed over LLaMA's beside the FLOP bound (LLaMA's model FLOPs per token over
its own), so one can read how much of the FLOP advantage the kernels turn into speed.
Needs matplotlib; without it says so and exits 0 (the tables do not depend on it).
"""
import argparse
import sys


def read_rows(paths):
    rows, pending = {}, None
    for path in paths:
        for line in open(path, errors="replace"):
            w = line.split()
            if not w:
                continue
            kv = dict(x.split("=", 1) for x in w[1:] if "=" in x)
            if w[0] == "BENCH":
                pending = kv
            elif w[0] == "BENCHFAIL":
                pending = None
            elif w[0] == "BENCHTAG" and pending:
                key = (kv["arch"], kv["size"], int(pending["T"]))
                rows[key] = {"tok_s": float(pending["tokens_per_s"]), "mfu": float(pending["mfu_bf16"]),
                             "flops": float(pending["flops_per_token"])}   # a later run of a row wins
                pending = None
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("logs", nargs="+")
    ap.add_argument("--out", required=True, help="prefix of the two .svg files")
    ap.add_argument("--title", default="", help="appended to both titles (e.g. the GPU)")
    a = ap.parse_args()
    rows = read_rows(a.logs)
    if not rows:
        sys.exit(f"plot_bench: no BENCH/BENCHTAG rows in {' '.join(a.logs)}")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_bench: no matplotlib here, plots skipped", file=sys.stderr)
        return
    archs = list(dict.fromkeys(k[0] for k in rows))
    sizes = list(dict.fromkeys(k[1] for k in rows))

    # tokens/s by size at T 1024
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.5 * len(sizes), 4.2), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        names = [x for x in archs if (x, size, 1024) in rows]
        vals = [rows[(x, size, 1024)]["tok_s"] / 1e3 for x in names]
        bars = ax.bar(range(len(names)), vals, color=["#c44" if n.startswith("flowhn") else "#68a" for n in names])
        for b, n in zip(bars, names):
            ax.text(b.get_x() + b.get_width() / 2, b.get_height(), "%.0f%%" % (100 * rows[(n, size, 1024)]["mfu"]),
                    ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
        ax.set_title(f"{size}, T 1024")
        ax.set_ylabel("training tokens/s (thousands)")
    fig.suptitle("Training throughput (MFU on the bars)" + (f", {a.title}" if a.title else ""))
    fig.tight_layout()
    fig.savefig(a.out + "_sizes.svg")

    # tokens/s against T, and the speed over LLaMA against the FLOP bound
    seq_archs = [(x, s) for x in archs for s in sizes if len({k[2] for k in rows if k[:2] == (x, s)}) > 1]
    if seq_archs:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
        for x, s in seq_archs:
            ts = sorted(k[2] for k in rows if k[:2] == (x, s))
            ax1.plot(ts, [rows[(x, s, t)]["tok_s"] / 1e3 for t in ts], "o-", label=f"{x}-{s}")
            if x != "llama" and all(("llama", s, t) in rows for t in ts):
                ax2.plot(ts, [rows[(x, s, t)]["tok_s"] / rows[("llama", s, t)]["tok_s"] for t in ts], "o-",
                         label=f"{x}-{s} measured")
                ax2.plot(ts, [rows[("llama", s, t)]["flops"] / rows[(x, s, t)]["flops"] for t in ts], "k--",
                         label=f"{x}-{s} FLOP bound")
        for ax in (ax1, ax2):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("sequence length T")
            ax.legend(fontsize=8)
        ax1.set_ylabel("training tokens/s (thousands)")
        ax2.set_ylabel("tokens/s over LLaMA's")
        fig.suptitle("Sequence length" + (f", {a.title}" if a.title else ""))
        fig.tight_layout()
        fig.savefig(a.out + "_seq.svg")
    print(f"plot_bench: {a.out}_sizes.svg" + (f", {a.out}_seq.svg" if seq_archs else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
