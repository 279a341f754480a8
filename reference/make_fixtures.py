"""Writes the fixtures tests/fixtures/<name>.{json,safetensors} that the C tests compare against,
checks them, and checks the reference's own backward with torch.autograd.gradcheck.

    python3 reference/make_fixtures.py --out tests/fixtures [--no-gradcheck]

Each fixture: the config (every key of section 1), and in the safetensors file
param.<name> F32 (random, sensible scales), tokens/targets I32 [B,T] (targets = next tokens, a few -1),
logits F64 [B,T,V], loss F64 [1], grad.<name> F64 (d loss / d param), and for flowhn
split.layer<l>.attn I32 (attention positions of layer l). Forward and backward run in float64 on
the float32 parameter values, so the reference numbers are exact to ~1e-15.
All randomness comes from Python's `random` seeded by strings: the files do not depend on the
torch version.
"""
import argparse
import json
import math
import os
import random
import struct
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from contract import DEFAULTS, Config  # noqa: E402
from flowhn_ref import FlowHNRef, forward_params, split_plan  # noqa: E402
from st_io import check_fixture, read_safetensors, write_safetensors  # noqa: E402

BASE = dict(DEFAULTS)
BASE.update({
    "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 24, "vocab_size": 64, "rms_norm_eps": 1e-5, "use_rope": False,
    "rope_theta": 10000.0, "tie_word_embeddings": False,
    "mamba_d_state": 4, "mamba_expand": 2, "mamba_d_conv": 4, "mamba_dt_rank": 2,
    "mamba2_d_state": 4, "mamba2_headdim": 8, "mamba2_ngroups": 1, "mamba2_chunk_size": 4,
    "mamba2_expand": 2, "split_strategy": "none", "split_ratio": 0.6, "split_multiple": 4,
    "context": "isolated", "attention_position": "last",
    "attn_layer_period": 2, "attn_layer_offset": 1,
})

# name -> (config overrides, T)
FIXTURES = {
    "llama": ({"architecture": "llama", "use_rope": True, "tie_word_embeddings": True}, 12),
    "mamba1": ({"architecture": "mamba1"}, 12),
    "mamba2": ({"architecture": "mamba2"}, 12),
    "jamba": ({"architecture": "jamba", "num_hidden_layers": 3}, 12),
    "shm": ({"architecture": "shm", "attn_layer_offset": 0}, 12),
    "hymba": ({"architecture": "hymba"}, 12),
    "flowhn_none_isolated": ({"split_strategy": "none"}, 12),
    "flowhn_none_prefix": ({"split_strategy": "none", "context": "prefix"}, 12),
    "flowhn_ae_isolated": ({"split_strategy": "ae", "attention_position": "first"}, 12),
    "flowhn_ae_prefix": ({"split_strategy": "ae", "context": "prefix"}, 12),
    "flowhn_fa_isolated": ({"split_strategy": "fa", "attention_position": "first"}, 12),
    "flowhn_fa_prefix": ({"split_strategy": "fa", "context": "prefix"}, 12),
    "flowhn_fac_isolated": ({"split_strategy": "fac", "num_hidden_layers": 3, "use_rope": True,
                             "rope_theta": 100.0}, 13),
    "flowhn_fac_prefix": ({"split_strategy": "fac", "context": "prefix", "num_hidden_layers": 3,
                           "attention_position": "first"}, 12),
}
BATCH = 2


def f32(v):
    return struct.unpack("<f", struct.pack("<f", v))[0]


def init_value(rng, name, shape, c):
    """One parameter's values (flat list, already rounded to float32)."""
    n = 1
    for s in shape:
        n *= s
    leaf = name.split(".")[-2:]
    if name.endswith("norm.weight") or name == "norm_f.weight":
        vals = [1.0 + rng.gauss(0, 0.1) for _ in range(n)]
    elif name == "embed.weight":
        vals = [rng.gauss(0, 0.5) for _ in range(n)]
    elif leaf[-1] == "A_log":
        top = c.S if len(shape) == 2 else c.N2
        vals = [math.log(rng.uniform(1.0, top)) for _ in range(n)]
    elif leaf[-1] == "D":
        vals = [rng.uniform(0.5, 1.5) for _ in range(n)]
    elif leaf == ["dt_proj", "bias"] or leaf[-1] == "dt_bias":
        # softplus^-1 of dt drawn log-uniform in [0.05, 0.5]: large enough that the scan matters
        vals = []
        for _ in range(n):
            dt = math.exp(rng.uniform(math.log(0.05), math.log(0.5)))
            vals.append(dt + math.log(-math.expm1(-dt)))
    elif leaf == ["conv1d", "weight"]:
        vals = [rng.gauss(0, 0.3) for _ in range(n)]
    elif leaf == ["conv1d", "bias"]:
        vals = [rng.gauss(0, 0.1) for _ in range(n)]
    elif leaf == ["dt_proj", "weight"]:
        vals = [rng.gauss(0, 0.3) for _ in range(n)]
    else:  # linear weights, lm_head
        vals = [rng.gauss(0, 0.2) for _ in range(n)]
    return [f32(v) for v in vals]


def make_tokens(name, V, T):
    rng = random.Random(name + ":tokens")
    seq = [[rng.randrange(V) for _ in range(T + 1)] for _ in range(BATCH)]
    tokens = [row[:T] for row in seq]
    targets = [row[1:] for row in seq]
    targets[0][2] = -1
    targets[1][T - 1] = -1
    targets[1][5] = -1
    return tokens, targets


def build(name):
    over, T = FIXTURES[name]
    cfg = dict(BASE)
    cfg.update(over)
    cfg["max_position_embeddings"] = T
    model = FlowHNRef(cfg)
    c = model.cfg
    values = {}
    with torch.no_grad():
        for pname, shape in model.layout:
            vals = init_value(random.Random(name + ":" + pname), pname, shape, c)
            values[pname] = vals
            model.params()[pname].copy_(torch.tensor(vals, dtype=torch.float64).view(shape))
    tokens, targets = make_tokens(name, c.V, T)
    return cfg, model, values, torch.tensor(tokens, dtype=torch.int32), torch.tensor(targets, dtype=torch.int32)


def flat(t):
    return t.detach().reshape(-1).tolist()


def write_fixture(out, name):
    cfg, model, values, tokens, targets = build(name)
    c = model.cfg
    model.zero_grad()
    logits, loss = model(tokens, targets)
    loss.backward()
    entries = [("tokens", "I32", list(tokens.shape), flat(tokens)),
               ("targets", "I32", list(targets.shape), flat(targets)),
               ("logits", "F64", list(logits.shape), flat(logits)),
               ("loss", "F64", [1], [loss.item()])]
    if c.architecture == "flowhn":
        for l, (pa, _) in enumerate(split_plan(c, tokens.shape[1])):
            entries.append(("split.layer%d.attn" % l, "I32", [len(pa)], pa))
    params = model.params()
    for pname, shape in model.layout:
        entries.append(("param." + pname, "F32", shape, values[pname]))
    for pname, shape in model.layout:
        entries.append(("grad." + pname, "F64", shape, flat(params[pname].grad)))
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump(cfg, f, indent=1)
        f.write("\n")
    write_safetensors(os.path.join(out, name + ".safetensors"), entries)
    return c, model, tokens, targets, logits.detach(), loss.item()


def reread_and_recompute(out, name):
    """Read the files back (config + params only) and recompute: must give the stored numbers."""
    with open(os.path.join(out, name + ".json")) as f:
        cfg = json.load(f)
    t = read_safetensors(os.path.join(out, name + ".safetensors"))
    model = FlowHNRef(cfg)
    with torch.no_grad():
        for pname, shape in model.layout:
            model.params()[pname].copy_(torch.tensor(t["param." + pname][2], dtype=torch.float64).view(shape))
    B, T = t["tokens"][1]
    tokens = torch.tensor(t["tokens"][2], dtype=torch.int32).view(B, T)
    targets = torch.tensor(t["targets"][2], dtype=torch.int32).view(B, T)
    logits, loss = model(tokens, targets)
    loss.backward()
    err = (logits.detach().reshape(-1) - torch.tensor(t["logits"][2], dtype=torch.float64)).abs().max().item()
    err = max(err, abs(loss.item() - t["loss"][2][0]))
    for pname, _ in model.layout:
        g = torch.tensor(t["grad." + pname][2], dtype=torch.float64)
        err = max(err, (model.params()[pname].grad.reshape(-1) - g).abs().max().item())
    return err


def sanity(name, c, model, tokens, targets, logits):
    """Properties the contract implies, checked on the fixture model. Returns a list of problems."""
    problems = []
    p = model.params()
    T = tokens.shape[1]
    with torch.no_grad():
        # causality: changing token t leaves logits before t unchanged
        t0 = T // 2
        tok2 = tokens.clone()
        tok2[:, t0] = (tok2[:, t0] + 1) % c.V
        l2, _ = forward_params(c, p, tok2, None)
        if (l2[:, :t0] - logits[:, :t0]).abs().max().item() > 1e-12:
            problems.append("not causal")
        if (l2[:, t0:] - logits[:, t0:]).abs().max().item() < 1e-9:
            problems.append("token %d changes nothing after it" % t0)
        # context modes coincide where the contract says they must
        if c.architecture == "flowhn":
            other = dict(c.raw)
            other["context"] = "isolated" if c.context == "prefix" else "prefix"
            c2 = Config(other)
            l3, _ = forward_params(c2, p, tokens, None)
            diff = (l3 - logits).abs().max().item()
            same = c.split_strategy == "none" or (c.split_strategy == "fa" and c.attention_position == "first")
            if same and diff > 1e-12:
                problems.append("isolated and prefix differ (%g) where they must agree" % diff)
            if not same and diff < 1e-9:
                problems.append("isolated and prefix agree where they should differ")
    return problems


def tiny_config(over):
    cfg = dict(BASE)
    cfg.update({"hidden_size": 4, "num_attention_heads": 2, "num_key_value_heads": 1,
                "intermediate_size": 4, "vocab_size": 7, "mamba_d_state": 2, "mamba_d_conv": 2,
                "mamba_dt_rank": 2, "mamba2_d_state": 2, "mamba2_headdim": 2, "mamba2_ngroups": 2,
                "mamba2_chunk_size": 2, "split_multiple": 2})
    cfg.update(over)
    return cfg


def run_gradcheck(cfg, T, fast, seed):
    model = FlowHNRef(cfg)
    c = model.cfg
    g = torch.Generator().manual_seed(seed)
    names = model.param_names()
    inputs = []
    for n, shape in model.layout:
        v = torch.randn(shape, generator=g, dtype=torch.float64) * 0.3
        if n.endswith("norm.weight") or n.endswith(".D"):
            v = v + 1.0
        inputs.append(v.requires_grad_())
    tokens = torch.randint(0, c.V, (2, T), generator=g)
    targets = torch.randint(0, c.V, (2, T), generator=g)
    targets[0, 1] = -1

    def fn(*ps):
        return forward_params(c, dict(zip(names, ps)), tokens, targets)[1]

    try:
        return torch.autograd.gradcheck(fn, tuple(inputs), eps=1e-6, atol=1e-6, rtol=1e-4,
                                        fast_mode=fast, raise_exception=True)
    except Exception:
        traceback.print_exc()
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "tests", "fixtures"))
    ap.add_argument("--no-gradcheck", action="store_true")
    ap.add_argument("--only", nargs="*", help="fixture names (default: all)")
    ap.add_argument("--gradcheck-budget", type=float, default=1e9,
                    help="seconds after which full gradchecks are skipped")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead and reorder sums
    failures = 0
    total = 0
    names = args.only or list(FIXTURES)
    for name in names:
        t0 = time.time()
        try:
            c, model, tokens, targets, logits, loss = write_fixture(args.out, name)
        except Exception:
            traceback.print_exc()
            print("FAIL  %s: exception" % name, flush=True)
            failures += 1
            continue
        err = reread_and_recompute(args.out, name)
        problems = check_fixture(os.path.join(args.out, name + ".json"))
        problems += sanity(name, c, model, tokens, targets, logits)
        if err > 1e-13:
            problems.append("recompute differs by %g" % err)
        size = os.path.getsize(os.path.join(args.out, name + ".safetensors"))
        total += size
        plan = ""
        if c.architecture == "flowhn":
            plan = " attn=" + " | ".join(",".join(map(str, pa)) for pa, _ in split_plan(c, tokens.shape[1]))
        print("%-5s %-22s loss %.12f |logits|max %.3f  %6d bytes %.1fs%s" % (
            "ok" if not problems else "FAIL", name, loss, logits.abs().max().item(), size,
            time.time() - t0, plan), flush=True)
        for pr in problems:
            print("      " + pr, flush=True)
        failures += bool(problems)
    print("fixtures: %d written, %d bytes in all, %d with problems" % (len(names), total, failures))

    if not args.no_gradcheck:
        # fast mode (random directions) at fixture size, then full Jacobians on tiny versions
        # while the time budget lasts (the device run is short)
        start = time.time()
        for name in names:
            over, T = FIXTURES[name]
            cfg = dict(BASE)
            cfg.update(over)
            t0 = time.time()
            ok = all(run_gradcheck(cfg, T, True, s) for s in (1, 2))
            print("%-5s gradcheck fast %-22s (fixture size, 2 seeds) %.1fs" % (
                "ok" if ok else "FAIL", name, time.time() - t0), flush=True)
            failures += not ok
        for name in names:
            if time.time() - start > args.gradcheck_budget:
                print("skip  gradcheck full %-22s (time budget spent)" % name)
                continue
            over, T = FIXTURES[name]
            t0 = time.time()
            tiny_T = 7 if T == 13 else 6
            ok = run_gradcheck(tiny_config(over), tiny_T, False, 4)
            print("%-5s gradcheck full %-22s (tiny, T=%d) %.1fs" % (
                "ok" if ok else "FAIL", name, tiny_T, time.time() - t0), flush=True)
            failures += not ok
    print("RESULT %s" % ("all ok" if failures == 0 else "%d failures" % failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
