#!/usr/bin/env python3
"""Parameter counts of model configs, computed from the parameter list in
docs/model-definition.md section 2 (independently of the C layout code, so the
two can be compared with `flowhn info`).

    python3 tools/param_count.py configs/llama-135m.json ...   # one line each
    python3 tools/param_count.py --table                       # configs/README.md table
"""
import glob
import json
import math
import os
import sys

# docs/model-definition.md section 1 (only the fields that change a count)
DEFAULTS = {
    "architecture": "flowhn", "hidden_size": 768, "num_hidden_layers": 2, "num_attention_heads": 32,
    "num_key_value_heads": 8, "intermediate_size": 2048, "vocab_size": 65536, "tie_word_embeddings": False,
    "mamba_d_state": 16, "mamba_expand": 2, "mamba_d_conv": 4, "mamba_dt_rank": "auto",
    "mamba2_d_state": 128, "mamba2_headdim": 64, "mamba2_ngroups": 1, "mamba2_expand": 2,
    "split_strategy": "fac", "attn_layer_period": 2, "attn_layer_offset": 1,
}


def count(cfg):
    c = dict(DEFAULTS, **cfg)
    H, I, V = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    nh, nkv = c["num_attention_heads"], c["num_key_value_heads"]
    hd = H // nh
    E, S, K = c["mamba_expand"] * H, c["mamba_d_state"], c["mamba_d_conv"]
    R = math.ceil(H / 16) if c["mamba_dt_rank"] == "auto" else c["mamba_dt_rank"]

    attention = nh * hd * H + 2 * nkv * hd * H + H * nh * hd            # q, k, v, o
    mamba1 = (2 * E * H + E * K + E + (R + 2 * S) * E + R + 2 * S       # in_proj, conv, x_proj, 3 norms
              + E * R + E + E * S + E + H * E)                          # dt_proj, A_log, D, out_proj
    E2, N, G = c["mamba2_expand"] * H, c["mamba2_d_state"], c["mamba2_ngroups"]
    nh2 = E2 // c["mamba2_headdim"]
    mamba2 = ((2 * E2 + 2 * G * N + nh2) * H + (E2 + 2 * G * N) * (K + 1)   # in_proj, conv w + b
              + 3 * nh2 + E2 + H * E2)                                  # dt_bias, A_log, D, gate_norm, out_proj
    mlp = 3 * I * H

    def decoder(mixer, with_mlp=True):
        return H + mixer + (H + mlp if with_mlp else 0)

    arch, L = c["architecture"], c["num_hidden_layers"]
    total = V * H + H + (0 if c["tie_word_embeddings"] else V * H)     # embed, norm_f, lm_head
    for l in range(L):
        if arch == "llama":
            total += decoder(attention)
        elif arch == "mamba1":
            total += decoder(mamba1, with_mlp=False)
        elif arch == "mamba2":
            total += decoder(mamba2, with_mlp=False)
        elif arch in ("jamba", "shm"):
            is_attn = l % c["attn_layer_period"] == c["attn_layer_offset"]
            total += decoder(attention if is_attn else mamba1)
        elif arch == "flowhn":
            fuse_in = 2 * H if c["split_strategy"] == "none" else H
            total += decoder(attention) + decoder(mamba1) + H * fuse_in + H + H * H
        elif arch == "hymba":
            total += H + attention + mamba1 + 2 * H + H * H + H + mlp
        else:
            raise ValueError(f"unknown architecture {arch!r}")
    return total


def main(argv):
    if argv[1:] == ["--table"]:
        print("| preset | architecture | H | I | layers | parameters |")
        print("|---|---|---|---|---|---|")
        for size in ("135m", "350m", "1b"):
            for path in sorted(glob.glob(f"configs/*-{size}.json")):
                c = dict(DEFAULTS, **json.load(open(path)))
                name = os.path.basename(path)[:-5]
                print(f"| {name} | {c['architecture']} | {c['hidden_size']} | {c['intermediate_size']} | "
                      f"{c['num_hidden_layers']} | {count(c) / 1e6:.1f}M |")
        return 0
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    for path in argv[1:]:
        print(f"{path}\t{count(json.load(open(path)))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
