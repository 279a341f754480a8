"""Training-step throughput of the PyTorch model of a config (reference/fast_model.py), the baseline
that `flowhn bench` is compared with (tools/bench_compare.sh).

    python3 reference/bench_torch.py --config configs/llama-135m.json --batch 8 --seq-len 1024 \
        --steps 10 --warmup 3 [--no-compile] [--precision bf16|fp32] [--device cuda]

The standard PyTorch recipe: float32 master weights, bf16 autocast (--precision fp32: no autocast,
TF32 off), torch.compile of the model (forward + loss; the backward comes from AOTAutograd), AdamW
with fused=True. One step = forward + backward + optimizer step on random tokens, like flowhn bench.
The first step (it compiles) is timed alone and reported as compile_s; then `warmup` more untimed
steps; then `steps` steps timed with CUDA events. The last line:

    TORCHBENCH config=... B=.. T=.. step_ms=.. tokens_per_s=.. peak_gib=.. compile_s=.. ...
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from fast_model import FastModel, usable_config  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=None, help="default: max_position_embeddings")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps after the compiling one")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scan-chunk", type=int, default=64, help="Mamba-1 scan chunk length")
    a = ap.parse_args()

    cfg = usable_config(json.load(open(a.config)))
    if cfg.get("split_ratio") == "measured":   # flowhn measures on its own backend; the FLOP rule here
        print("bench_torch: split_ratio 'measured' replaced by 'flops'", file=sys.stderr)
        cfg["split_ratio"] = "flops"
    T = a.seq_len or cfg.get("max_position_embeddings", 1024)
    if T > cfg.get("max_position_embeddings", 1024):
        sys.exit("bench_torch: --seq-len %d exceeds the config's max_position_embeddings" % T)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    torch.backends.cuda.matmul.allow_tf32 = a.precision != "fp32"
    torch.backends.cudnn.allow_tf32 = a.precision != "fp32"

    model = FastModel(cfg, scan_chunk=a.scan_chunk, seed=a.seed).to(dev).prepare(T)
    nparams = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1,
                            fused=cuda)
    run = model if a.no_compile else torch.compile(model)
    g = torch.Generator().manual_seed(a.seed)
    V = model.cfg.V
    tokens = torch.randint(0, V, (a.batch, T), generator=g).to(dev)
    targets = torch.randint(0, V, (a.batch, T), generator=g).to(dev)

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            _, loss = run(tokens, targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    def sync():
        if cuda:
            torch.cuda.synchronize()

    print("bench_torch: %s (%s), %d parameters (%.1fM), batch %d x seq %d, %s, compile %s, torch %s, %s"
          % (a.config, model.cfg.architecture, nparams, nparams / 1e6, a.batch, T, a.precision,
             "off" if a.no_compile else "on", torch.__version__,
             torch.cuda.get_device_name(dev) if cuda else "cpu"), flush=True)
    t0 = time.perf_counter()
    step()
    sync()
    compile_s = time.perf_counter() - t0
    for _ in range(a.warmup):
        loss = step()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    if cuda:
        stop.record()
        torch.cuda.synchronize()
        secs = start.elapsed_time(stop) / 1e3
        peak = torch.cuda.max_memory_allocated(dev) / 2**30
    else:
        secs = time.perf_counter() - t0
        peak = float("nan")
    step_ms = 1e3 * secs / a.steps
    tok_s = a.batch * T * a.steps / secs
    print("loss: %.4f (random tokens); first step (compile + run) %.1f s" % (loss.item(), compile_s))
    print("TORCHBENCH config=%s arch=%s device=%s precision=%s compile=%d B=%d T=%d params=%d step_ms=%.3f "
          "tokens_per_s=%.1f peak_gib=%.3f compile_s=%.2f"
          % (a.config, model.cfg.architecture, dev.type, a.precision, 0 if a.no_compile else 1, a.batch, T,
             nparams, step_ms, tok_s, peak, compile_s))


if __name__ == "__main__":
    main()
