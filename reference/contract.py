"""The torch-free half of the reference: config defaults and checks, the parameter layout and
the FlowHN split plans, written from docs/model-definition.md sections 1, 2 and 4.

Kept free of torch (and numpy) so the fixture checker (st_io.py) runs on machines without them.
"""
import math

# Section 1: every key, with its default. Order = the table's order.
DEFAULTS = {
    "architecture": "flowhn",
    "hidden_size": 768,
    "num_hidden_layers": 2,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "intermediate_size": 2048,
    "vocab_size": 65536,
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-6,
    "use_rope": False,          # the llama preset turns it on; the config file says it explicitly
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "initializer_range": 0.02,
    "mamba_d_state": 16,
    "mamba_expand": 2,
    "mamba_d_conv": 4,
    "mamba_dt_rank": "auto",
    "mamba2_d_state": 128,
    "mamba2_headdim": 64,
    "mamba2_ngroups": 1,
    "mamba2_chunk_size": 64,
    "mamba2_expand": 2,
    "split_strategy": "fac",
    "split_ratio": "flops",
    "split_multiple": 64,
    "context": "isolated",
    "attention_position": "last",
    "attn_layer_period": 2,
    "attn_layer_offset": 1,
}

ARCHS = ("flowhn", "llama", "mamba1", "mamba2", "jamba", "shm", "hymba")


class Config:
    """A validated config with the derived sizes as attributes."""

    def __init__(self, d):
        unknown = sorted(set(d) - set(DEFAULTS))
        if unknown:
            raise ValueError("config: unknown keys %s" % unknown)
        full = dict(DEFAULTS)
        full.update(d)
        if full["architecture"] == "llama" and "use_rope" not in d:
            full["use_rope"] = True
        self.raw = full
        for k, v in full.items():
            setattr(self, k, v)
        if self.architecture not in ARCHS:
            raise ValueError("config: architecture %r" % self.architecture)
        H = self.hidden_size
        if H % self.num_attention_heads or self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("config: heads do not divide")
        self.H = H
        self.nh = self.num_attention_heads
        self.nkv = self.num_key_value_heads
        self.hd = H // self.nh
        self.I = self.intermediate_size
        self.V = self.vocab_size
        self.eps = float(self.rms_norm_eps)
        self.S = self.mamba_d_state
        self.E = self.mamba_expand * H
        self.K = self.mamba_d_conv
        self.R = math.ceil(H / 16) if self.mamba_dt_rank == "auto" else int(self.mamba_dt_rank)
        self.E2 = self.mamba2_expand * H
        self.N2 = self.mamba2_d_state
        self.P2 = self.mamba2_headdim
        self.G2 = self.mamba2_ngroups
        if self.E2 % self.P2:
            raise ValueError("config: mamba2_headdim must divide mamba2_expand*hidden_size")
        self.nh2 = self.E2 // self.P2
        if self.nh2 % self.G2:
            raise ValueError("config: mamba2_ngroups must divide the mamba-2 heads")
        self.L = self.num_hidden_layers
        for k, allowed in (("split_strategy", ("none", "ae", "fa", "fac")),
                           ("context", ("isolated", "prefix")),
                           ("attention_position", ("first", "last"))):
            if full[k] not in allowed:
                raise ValueError("config: %s=%r" % (k, full[k]))

    def is_attention_layer(self, l):
        """jamba / shm: layer l is attention iff l % period == offset."""
        return l % self.attn_layer_period == self.attn_layer_offset


# ---------------------------------------------------------------------------------------------
# Section 2: parameter names and shapes, in the contract's order.

def _attention(P, c):
    return [(P + ".q_proj.weight", [c.nh * c.hd, c.H]),
            (P + ".k_proj.weight", [c.nkv * c.hd, c.H]),
            (P + ".v_proj.weight", [c.nkv * c.hd, c.H]),
            (P + ".o_proj.weight", [c.H, c.nh * c.hd])]


def _mamba1(P, c):
    return [(P + ".in_proj.weight", [2 * c.E, c.H]),
            (P + ".conv1d.weight", [c.E, c.K]),
            (P + ".conv1d.bias", [c.E]),
            (P + ".x_proj.weight", [c.R + 2 * c.S, c.E]),
            (P + ".dt_norm.weight", [c.R]),
            (P + ".b_norm.weight", [c.S]),
            (P + ".c_norm.weight", [c.S]),
            (P + ".dt_proj.weight", [c.E, c.R]),
            (P + ".dt_proj.bias", [c.E]),
            (P + ".A_log", [c.E, c.S]),
            (P + ".D", [c.E]),
            (P + ".out_proj.weight", [c.H, c.E])]


def _mamba2(P, c):
    GN = c.G2 * c.N2
    return [(P + ".in_proj.weight", [2 * c.E2 + 2 * GN + c.nh2, c.H]),
            (P + ".conv1d.weight", [c.E2 + 2 * GN, c.K]),
            (P + ".conv1d.bias", [c.E2 + 2 * GN]),
            (P + ".dt_bias", [c.nh2]),
            (P + ".A_log", [c.nh2]),
            (P + ".D", [c.nh2]),
            (P + ".gate_norm.weight", [c.E2]),
            (P + ".out_proj.weight", [c.H, c.E2])]


def _mlp(P, c):
    return [(P + ".gate_proj.weight", [c.I, c.H]),
            (P + ".up_proj.weight", [c.I, c.H]),
            (P + ".down_proj.weight", [c.H, c.I])]


def _decoder(P, c, mixer, with_mlp=True):
    out = [(P + ".mixer_norm.weight", [c.H])] + mixer(P + ".mixer", c)
    if with_mlp:
        out += [(P + ".mlp_norm.weight", [c.H])] + _mlp(P + ".mlp", c)
    return out


def param_layout(c):
    """[(name, shape)] in the order of section 2."""
    out = [("embed.weight", [c.V, c.H])]
    for l in range(c.L):
        P = "layers.%d" % l
        a = c.architecture
        if a == "llama":
            out += _decoder(P, c, _attention)
        elif a == "mamba1":
            out += _decoder(P, c, _mamba1, with_mlp=False)
        elif a == "mamba2":
            out += _decoder(P, c, _mamba2, with_mlp=False)
        elif a in ("jamba", "shm"):
            out += _decoder(P, c, _attention if c.is_attention_layer(l) else _mamba1)
        elif a == "flowhn":
            fuse_in = 2 * c.H if c.split_strategy == "none" else c.H
            out += _decoder(P + ".attn_branch", c, _attention)
            out += _decoder(P + ".ssm_branch", c, _mamba1)
            out += [(P + ".fuse.weight", [c.H, fuse_in]),
                    (P + ".out_norm.weight", [c.H]),
                    (P + ".out_proj.weight", [c.H, c.H])]
        elif a == "hymba":
            out += [(P + ".mixer_norm.weight", [c.H])]
            out += _attention(P + ".attn", c)
            out += _mamba1(P + ".mamba", c)
            out += [(P + ".attn_out_norm.weight", [c.H]),
                    (P + ".ssm_out_norm.weight", [c.H]),
                    (P + ".out_proj.weight", [c.H, c.H]),
                    (P + ".mlp_norm.weight", [c.H])]
            out += _mlp(P + ".mlp", c)
    out.append(("norm_f.weight", [c.H]))
    if not c.tie_word_embeddings:
        out.append(("lm_head.weight", [c.V, c.H]))
    return out


# ---------------------------------------------------------------------------------------------
# Section 4: split plans.

def effective_multiple(c, T):
    """m = split_multiple if T >= 2m, else 1."""
    m = c.split_multiple
    return m if T >= 2 * m else 1


def round_half_away(x):
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def attention_positions(c, T, n_a, l):
    """Sorted attention positions of layer l for a given n_a (strategies ae, fa, fac)."""
    s = c.split_strategy
    first = c.attention_position == "first"
    if s == "none":
        return list(range(T))
    if s == "ae":
        lo, hi = list(range(0, n_a)), list(range(n_a, T))
        even = l % 2 == 0
        return lo if (even == first) else hi
    if s == "fa":
        return list(range(0, n_a)) if first else list(range(T - n_a, T))
    if s == "fac":
        start = (l * n_a) % T if first else (T - n_a - l * n_a) % T
        return sorted((start + j) % T for j in range(n_a))
    raise ValueError(s)


def n_attention(c, T):
    """n_a of section 4 (none: T; ae: floor(T/2); fa/fac: from split_ratio)."""
    s = c.split_strategy
    if s == "none":
        return T
    if s == "ae":
        return T // 2
    m = effective_multiple(c, T)
    if T < 2 * m:
        raise ValueError("split: T=%d too short to split" % T)
    r = c.split_ratio
    if r == "flops":
        return n_attention_flops(c, T)
    if r == "measured":
        raise ValueError("split_ratio 'measured' must be resolved to a number first")
    r = float(r)
    return min(max(m * round_half_away(r * T / m), m), T - m)


def split_plan(c, T):
    """Per layer: (attention positions, ssm positions), both ascending. FlowHN only."""
    n_a = n_attention(c, T)
    plans = []
    for l in range(c.L):
        pa = attention_positions(c, T, n_a, l)
        if c.split_strategy == "none":
            ps = list(range(T))
        else:
            inpa = set(pa)
            ps = [t for t in range(T) if t not in inpa]
        plans.append((pa, ps))
    return plans


# ---------------------------------------------------------------------------------------------
# The "flops" rule. Written from the description in docs/decisions.md ("What a FLOP is": matmul
# multiply-adds of linear layers, attention scores and weighted sums over the keys each query
# really sees, depthwise-conv taps that touch real inputs, Mamba-1 scan 3 per token/channel/state;
# norms, activations, softmax not counted). NOT checked against src/model/flops.c and not used by
# the fixtures (they all use a numeric split_ratio).

def attention_branch_macs(c, pa, T):
    n = len(pa)
    nk = T if c.context == "prefix" else n
    if c.context == "prefix":
        seen = sum(p + 1 for p in pa)
    else:
        seen = n * (n + 1) // 2
    qo = 2 * n * c.H * c.nh * c.hd
    kv = 2 * nk * c.H * c.nkv * c.hd
    att = 2 * c.nh * c.hd * seen
    mlp = 3 * n * c.H * c.I
    return qo + kv + att + mlp


def ssm_branch_macs(c, n):
    conv = c.E * sum(min(t + 1, c.K) for t in range(n))
    return (n * c.H * 2 * c.E + conv + n * c.E * (c.R + 2 * c.S) + n * c.R * c.E
            + 3 * n * c.E * c.S + n * c.E * c.H + 3 * n * c.H * c.I)


def n_attention_flops(c, T):
    m = effective_multiple(c, T)
    best = None
    for n_a in range(m, T - m + 1, m):
        pa = attention_positions(c, T, n_a, 0)
        gap = abs(attention_branch_macs(c, pa, T) - ssm_branch_macs(c, T - n_a))
        if best is None or gap < best[0]:
            best = (gap, n_a)
    return best[1]
