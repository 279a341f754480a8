"""Checks reference/fast_model.py (the benchmark model) against reference/flowhn_ref.py (the float64
oracle with sequential scans): same parameters, same tokens, logits / loss / every parameter gradient
must agree to a relative 1e-9 (max |difference| over max |reference value|, per tensor).

    python3 reference/check_fast_model.py [--tol 1e-9] [--device cpu|cuda]

Cases: every configs/tiny-*.json, plus FlowHN in every split strategy x context x attention position
(the "flops" ratio of the tiny config and a numeric one), RoPE on, tied embeddings. T = 22 with the
Mamba-1 scan chunk 4 and the Mamba-2 chunk 4 of the tiny configs, so chunks are padded and carried.
Both models run in float64 without autocast or compile (those only change the rounding).
"""
import argparse
import glob
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from fast_model import FastModel, usable_config  # noqa: E402
from flowhn_ref import FlowHNRef  # noqa: E402
from make_fixtures import init_value  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T, BATCH, SCAN_CHUNK = 22, 2, 4


def cases():
    out = []
    for path in sorted(glob.glob(os.path.join(ROOT, "configs", "tiny-*.json"))):
        out.append((os.path.basename(path)[:-5], json.load(open(path))))
    base = json.load(open(os.path.join(ROOT, "configs", "tiny-flowhn-fac.json")))
    for split in ("none", "ae", "fa", "fac"):
        for ctx in ("isolated", "prefix"):
            for posn in ("first", "last"):
                d = dict(base, split_strategy=split, context=ctx, attention_position=posn, num_hidden_layers=3)
                if split == "fac" and posn == "first":
                    d.update(use_rope=True, rope_theta=100.0, split_ratio=0.6)
                out.append(("flowhn-%s-%s-%s" % (split, ctx, posn), d))
    llama = json.load(open(os.path.join(ROOT, "configs", "tiny-llama.json")))
    out.append(("llama-tied", dict(llama, tie_word_embeddings=True)))
    return out


def rel(a, b):
    """max |a - b| / max |b| (b the reference); 0 when both are exactly zero."""
    scale = b.abs().max().item()
    diff = (a - b).abs().max().item()
    return diff / scale if scale > 0 else diff


def check(name, cfg, device, tol):
    cfg = usable_config(dict(cfg, max_position_embeddings=max(cfg.get("max_position_embeddings", 0), T)))
    ref = FlowHNRef(cfg)                                     # float64, parameters named as the contract
    with torch.no_grad():
        for pname, shape in ref.layout:
            vals = init_value(random.Random(name + ":" + pname), pname, shape, ref.cfg)
            ref.params()[pname].copy_(torch.tensor(vals, dtype=torch.float64).view(shape))
    fast = FastModel(cfg, scan_chunk=SCAN_CHUNK).double()
    fast.load_state_dict({k: v.detach().clone() for k, v in ref.params().items()}, strict=True)
    fast.to(device).prepare(T)

    g = torch.Generator().manual_seed(hash(name) % (1 << 31))
    tokens = torch.randint(0, ref.cfg.V, (BATCH, T), generator=g)
    targets = torch.randint(0, ref.cfg.V, (BATCH, T), generator=g)
    targets[0, 2] = targets[1, 5] = targets[1, T - 1] = -1

    logits_r, loss_r = ref(tokens, targets)
    loss_r.backward()
    logits_f, loss_f = fast(tokens.to(device), targets.to(device))
    loss_f.backward()

    errs = {"logits": rel(logits_f.detach().cpu(), logits_r.detach()),
            "loss": rel(loss_f.detach().cpu().view(1), loss_r.detach().view(1))}
    fast_params = dict(fast.named_parameters())
    worst_grad, worst_name = 0.0, ""
    for pname, p in ref.named_parameters():
        e = rel(fast_params[pname].grad.cpu(), p.grad)
        if e > worst_grad:
            worst_grad, worst_name = e, pname
    errs["grad"] = worst_grad
    ok = all(v <= tol for v in errs.values()) and all(torch.isfinite(x).all() for x in (logits_f, loss_f))
    print("%-4s %-34s logits %.2e  loss %.2e  grad %.2e (worst %s)"
          % ("ok" if ok else "FAIL", name, errs["logits"], errs["loss"], errs["grad"], worst_name or "-"))
    return ok, max(errs.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tol", type=float, default=1e-9)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    t0 = time.time()
    results = [check(n, c, a.device, a.tol) for n, c in cases()]
    bad = sum(1 for ok, _ in results if not ok)
    print("CHECKFAST cases=%d failed=%d max_rel=%.3e tol=%g device=%s torch=%s (%.1f s)"
          % (len(results), bad, max(e for _, e in results), a.tol, a.device, torch.__version__, time.time() - t0))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
