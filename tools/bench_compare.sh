#!/usr/bin/env bash
# flowhn (CUDA) against the PyTorch model of the same config, side by side in one run.
#
#   tools/bench_compare.sh [--configs "configs/llama-135m.json ..."] [--batch 8] [--seq-len 1024]
#                          [--steps 10] [--warmup 3] [--precision bf16] [--no-compile]
#                          [--out runs/bench_compare] [--keep] [--report-only]
#   FLOWHN_CUDA=path/to/flowhn-cuda (default build/flowhn-cuda)   PYTHON=python3
#
# For every config: `flowhn bench --device cuda --precision P` (its BENCH line) and
# reference/bench_torch.py (fast_model.py: SDPA, chunked parallel scans, bf16 autocast with fp32
# master weights, torch.compile, fused AdamW; its TORCHBENCH line), same B, T, step counts.
# Both time forward + backward + AdamW on random tokens after warm-up; compile time is excluded
# from PyTorch's step time and listed separately. MFU uses the model FLOPs per token from flowhn's
# BENCH line (the same model for both) over 989 TFLOP/s (H100 SXM bf16 dense).
# Output: DIR/bench_compare.md (the markdown table, also on stdout), DIR/bench_compare.{png,svg}
# (tokens/s bars; needs matplotlib), DIR/bench_compare.log (raw). --keep appends to an existing
# log (tables over several runs; a config measured again replaces its earlier row); --report-only
# rebuilds table and plot from the log.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${FLOWHN_CUDA:-build/flowhn-cuda}; PY=${PYTHON:-python3}
CONFIGS="configs/llama-135m.json configs/flowhn-fac-135m.json configs/mamba1-135m.json configs/mamba2-135m.json configs/hymba-135m.json configs/llama-gpt2small.json"
B=8; T=1024; STEPS=10; WARMUP=3; PREC=bf16; OUT=runs/bench_compare; KEEP=0; REPORT_ONLY=0; COMPILE=""
while [ $# -gt 0 ]; do
    case "$1" in
        --configs) CONFIGS="$2"; shift 2 ;;
        --batch) B="$2"; shift 2 ;;
        --seq-len) T="$2"; shift 2 ;;
        --steps) STEPS="$2"; shift 2 ;;
        --warmup) WARMUP="$2"; shift 2 ;;
        --precision) PREC="$2"; shift 2 ;;
        --no-compile) COMPILE="--no-compile"; shift ;;
        --out) OUT="$2"; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --report-only) REPORT_ONLY=1; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "bench_compare: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
mkdir -p "$OUT"
LOG="$OUT/bench_compare.log"
if [ "$REPORT_ONLY" = 0 ]; then
    [ "$KEEP" = 1 ] || : > "$LOG"
    [ -x "$BIN" ] || echo "bench_compare: $BIN is not executable (set FLOWHN_CUDA); flowhn rows will fail" >&2
    for cfg in $CONFIGS; do
        [ -f "$cfg" ] || { echo "bench_compare: no $cfg, skipped" >&2; continue; }
        name=$(basename "$cfg" .json)
        echo "== $name B=$B T=$T: flowhn" | tee -a "$LOG" >&2
        timeout 300 "$BIN" bench --config "$cfg" --device cuda --precision "$PREC" --batch "$B" --seq-len "$T" \
            --steps "$STEPS" --warmup "$WARMUP" >> "$LOG" 2>&1 || echo "FLOWHNFAIL name=$name" >> "$LOG"
        echo "== $name B=$B T=$T: pytorch" | tee -a "$LOG" >&2
        timeout 300 "$PY" reference/bench_torch.py --config "$cfg" --precision "$PREC" --batch "$B" --seq-len "$T" \
            --steps "$STEPS" --warmup "$WARMUP" $COMPILE >> "$LOG" 2>&1 || echo "TORCHFAIL name=$name" >> "$LOG"
        echo "CMPTAG name=$name" >> "$LOG"
        grep -E "^(BENCH|TORCHBENCH) " "$LOG" | tail -2 | cut -c1-200 >&2
    done
fi
"$PY" - "$LOG" "$OUT" <<'PY' | tee "$OUT/bench_compare.md"
import sys
log, out = sys.argv[1], sys.argv[2]
PEAK = 989e12   # H100 SXM bf16 dense, FLOP/s
rows, cur = [], {}
for line in open(log, errors="replace"):
    w = line.split()
    if not w:
        continue
    kv = lambda: dict(x.split("=", 1) for x in w[1:] if "=" in x)
    if w[0] == "BENCH":
        cur["flowhn"] = kv()
    elif w[0] == "TORCHBENCH":
        cur["torch"] = kv()
    elif w[0] == "CMPTAG":
        cur["name"] = kv()["name"]
        rows = [r for r in rows if r["name"] != cur["name"]] + [cur]   # the latest measurement wins
        cur = {}

def num(d, k):
    try:
        return float(d[k])
    except (KeyError, TypeError, ValueError):
        return None

def fmt(x, f="%.0f"):
    return "-" if x is None else f % x

# the header's settings from the first row that has each side (a side can fail on a row)
f0 = next((r["flowhn"] for r in rows if "flowhn" in r), {})
t0 = next((r["torch"] for r in rows if "torch" in r), {})
print("Training step (forward + backward + AdamW), B=%s T=%s; flowhn: CUDA backend, --precision %s; "
      "PyTorch: reference/fast_model.py, %s autocast, fp32 master weights, torch.compile %s, fused AdamW. "
      "MFU = FLOPs/token (flowhn's model count, training = 3 x forward) x tokens/s / 989 TFLOP/s "
      "(H100 SXM bf16 dense). ratio = flowhn / PyTorch tokens/s.\n"
      % (f0.get("B", t0.get("B", "?")), f0.get("T", t0.get("T", "?")), f0.get("precision", "?"),
         t0.get("precision", "?"), "on" if t0.get("compile", "1") == "1" else "off"))
print("| config | params | flowhn tok/s | PyTorch tok/s | ratio | flowhn MFU | PyTorch MFU | flowhn step ms | PyTorch step ms | flowhn GiB | PyTorch GiB | compile s |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
plot = []
for r in rows:
    f, t = r.get("flowhn", {}), r.get("torch", {})
    ft, tt = num(f, "tokens_per_s"), num(t, "tokens_per_s")
    fpt = num(f, "flops_per_token")
    mfu = lambda tok: None if tok is None or fpt is None else 100 * fpt * tok / PEAK
    params = num(f, "params") or num(t, "params")
    print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
        r["name"], fmt(params and params / 1e6, "%.1fM"), fmt(ft), fmt(tt),
        fmt(ft / tt if ft and tt else None, "%.3f"), fmt(mfu(ft), "%.2f%%"), fmt(mfu(tt), "%.2f%%"),
        fmt(num(f, "step_ms"), "%.1f"), fmt(num(t, "step_ms"), "%.1f"),
        fmt(num(f, "peak_alloc_gib"), "%.2f"), fmt(num(t, "peak_gib"), "%.2f"), fmt(num(t, "compile_s"), "%.0f")))
    plot.append((r["name"], ft or 0.0, tt or 0.0))
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("\n(no matplotlib here: plot skipped)", file=sys.stderr)
    sys.exit(0)
if plot:
    fig, ax = plt.subplots(figsize=(1.6 * len(plot) + 2, 4))
    xs = range(len(plot))
    ax.bar([x - 0.2 for x in xs], [p[1] for p in plot], 0.4, label="flowhn (CUDA)")
    ax.bar([x + 0.2 for x in xs], [p[2] for p in plot], 0.4, label="PyTorch (compile, bf16)")
    for x, p in zip(xs, plot):
        if p[1] and p[2]:
            ax.text(x, max(p[1], p[2]), "%.2fx" % (p[1] / p[2]), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([p[0] for p in plot], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("training tokens / s")
    ax.set_title("flowhn vs PyTorch, training throughput (label: flowhn / PyTorch)")
    ax.legend()
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig("%s/bench_compare.%s" % (out, ext), dpi=120)
    print("\nplot: %s/bench_compare.{png,svg}" % out, file=sys.stderr)
PY
