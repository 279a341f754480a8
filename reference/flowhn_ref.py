"""Independent PyTorch reference of every flowhn architecture, written only from
docs/model-definition.md (sections 1-4) and the project spec; it shares no code with src/.

    model = FlowHNRef(config_dict)             # parameters named and shaped as in section 2
    logits, loss = model(tokens, targets)      # tokens, targets: int [B, T]; targets -1 = ignored

The forward is a plain function of a {name: tensor} dict (forward_params) so that
torch.autograd.gradcheck can differentiate it. Runs in whatever dtype the parameters have
(the fixtures use float64). Scans are sequential loops over time: slow, but obviously right.
"""
import math

import torch
import torch.nn as nn

from contract import Config, param_layout, split_plan, n_attention  # noqa: F401 (re-exported)


# ------------------------------------------------------------------------------ elementwise pieces

def rmsnorm(x, w, eps):
    """x / sqrt(mean(x^2) + eps) * w, over the last axis."""
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


def silu(x):
    return x * torch.sigmoid(x)


def softplus(x):
    """log(1 + e^x), exact (no threshold switch as in torch.nn.functional.softplus)."""
    return torch.logaddexp(torch.zeros_like(x), x)


def linear(x, w):
    """x W^T with W stored [out, in]."""
    return x @ w.t()


def causal_conv(x, w, b):
    """Depthwise causal conv over time. x [B,n,C], w [C,K], b [C]:
    out[t,c] = b[c] + sum_k w[c,k] x[t-(K-1)+k, c], zero before the sequence's first token."""
    Bsz, n, C = x.shape
    K = w.shape[1]
    xp = torch.cat([x.new_zeros(Bsz, K - 1, C), x], dim=1)
    out = b.expand(Bsz, n, C)
    for k in range(K):
        out = out + xp[:, k:k + n, :] * w[:, k]
    return out


def rope(x, pos, theta):
    """Rotate-half RoPE. x [B,n,heads,hd], pos [n] (true token positions).
    angle(p, i) = p * theta^(-2i/hd), i < hd/2; (x1, x2) = halves of the head dim;
    out = (x1 cos - x2 sin, x2 cos + x1 sin)."""
    hd = x.shape[-1]
    half = hd // 2
    i = torch.arange(half, dtype=x.dtype)
    inv_freq = theta ** (-2.0 * i / hd)
    ang = pos.to(x.dtype)[:, None] * inv_freq[None, :]          # [n, half]
    cos, sin = torch.cos(ang)[None, :, None, :], torch.sin(ang)[None, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


# ------------------------------------------------------------------------------------ the mixers

def attention(p, P, c, uq, qpos, uk, kpos):
    """Causal GQA: query head h reads KV head h // (nh/nkv); key j visible to query i iff
    kpos[j] <= qpos[i]; scale 1/sqrt(hd); heads concatenated head-major before o_proj."""
    Bsz, n, _ = uq.shape
    m = uk.shape[1]
    q = linear(uq, p[P + ".q_proj.weight"]).view(Bsz, n, c.nh, c.hd)
    k = linear(uk, p[P + ".k_proj.weight"]).view(Bsz, m, c.nkv, c.hd)
    v = linear(uk, p[P + ".v_proj.weight"]).view(Bsz, m, c.nkv, c.hd)
    if c.use_rope:
        q = rope(q, qpos, float(c.rope_theta))
        k = rope(k, kpos, float(c.rope_theta))
    kv_of = torch.arange(c.nh) // (c.nh // c.nkv)
    k, v = k[:, :, kv_of], v[:, :, kv_of]                           # [B, m, nh, hd]
    s = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(c.hd)
    visible = kpos[None, :] <= qpos[:, None]                         # [n, m]
    s = s.masked_fill(~visible, float("-inf"))
    a = torch.softmax(s, dim=-1)
    o = torch.einsum("bhij,bjhd->bihd", a, v).reshape(Bsz, n, c.nh * c.hd)
    return linear(o, p[P + ".o_proj.weight"])


def mamba1(p, P, c, u):
    """Mamba-1 mixer (Jamba flavour: RMSNorm on dt, B, C) on u [B,n,H], zero initial state."""
    E, S, R = c.E, c.S, c.R
    xz = linear(u, p[P + ".in_proj.weight"])
    x, z = xz[..., :E], xz[..., E:]
    xc = silu(causal_conv(x, p[P + ".conv1d.weight"], p[P + ".conv1d.bias"]))
    d = linear(xc, p[P + ".x_proj.weight"])
    dt_in = rmsnorm(d[..., :R], p[P + ".dt_norm.weight"], c.eps)
    Bm = rmsnorm(d[..., R:R + S], p[P + ".b_norm.weight"], c.eps)
    Cm = rmsnorm(d[..., R + S:], p[P + ".c_norm.weight"], c.eps)
    dt = softplus(linear(dt_in, p[P + ".dt_proj.weight"]) + p[P + ".dt_proj.bias"])   # [B,n,E]
    A = -torch.exp(p[P + ".A_log"])                                                  # [E,S]
    Bsz, n, _ = u.shape
    h = u.new_zeros(Bsz, E, S)
    ys = []
    for t in range(n):
        dtt = dt[:, t, :, None]                                                      # [B,E,1]
        h = torch.exp(dtt * A) * h + dtt * Bm[:, t, None, :] * xc[:, t, :, None]
        ys.append((h * Cm[:, t, None, :]).sum(-1) + p[P + ".D"] * xc[:, t])
    y = torch.stack(ys, dim=1) * silu(z)
    return linear(y, p[P + ".out_proj.weight"])


def mamba2(p, P, c, u):
    """Mamba-2 (SSD) mixer by its sequential recurrence (equal to the chunked algorithm).
    Head h uses B/C group h // (nh/G); x head h = channels [h*P, (h+1)*P)."""
    E, N, G, nh, Pd = c.E2, c.N2, c.G2, c.nh2, c.P2
    Bsz, n, _ = u.shape
    proj = linear(u, p[P + ".in_proj.weight"])
    z = proj[..., :E]
    xbc = silu(causal_conv(proj[..., E:2 * E + 2 * G * N],
                           p[P + ".conv1d.weight"], p[P + ".conv1d.bias"]))
    dt_raw = proj[..., 2 * E + 2 * G * N:]
    x = xbc[..., :E].reshape(Bsz, n, nh, Pd)
    grp = torch.arange(nh) // (nh // G)
    Bm = xbc[..., E:E + G * N].reshape(Bsz, n, G, N)[:, :, grp]       # [B,n,nh,N]
    Cm = xbc[..., E + G * N:].reshape(Bsz, n, G, N)[:, :, grp]
    dt = softplus(dt_raw + p[P + ".dt_bias"])                         # [B,n,nh]
    a = torch.exp(-dt * torch.exp(p[P + ".A_log"]))
    h = u.new_zeros(Bsz, nh, Pd, N)
    ys = []
    for t in range(n):
        h = (a[:, t, :, None, None] * h
             + dt[:, t, :, None, None] * x[:, t, :, :, None] * Bm[:, t, :, None, :])
        ys.append((h * Cm[:, t, :, None, :]).sum(-1) + p[P + ".D"][:, None] * x[:, t])
    y = torch.stack(ys, dim=1).reshape(Bsz, n, E)
    y = rmsnorm(y * silu(z), p[P + ".gate_norm.weight"], c.eps)
    return linear(y, p[P + ".out_proj.weight"])


def mlp(p, P, v):
    return linear(silu(linear(v, p[P + ".gate_proj.weight"])) * linear(v, p[P + ".up_proj.weight"]),
                  p[P + ".down_proj.weight"])


# ------------------------------------------------------------------------------------- layers

def decoder(p, P, c, x, kind, with_mlp=True, qpos=None, kv_full=None):
    """h = x + Mixer(RMSNorm(x)); out = h + MLP(RMSNorm(h)).
    Attention: queries at positions qpos (default 0..n-1); kv_full = (x_all, kpos) takes keys and
    values from RMSNorm(x_all) with this layer's mixer_norm (FlowHN prefix context)."""
    n = x.shape[1]
    u = rmsnorm(x, p[P + ".mixer_norm.weight"], c.eps)
    if kind == "attn":
        qpos = torch.arange(n) if qpos is None else qpos
        if kv_full is None:
            uk, kpos = u, qpos
        else:
            x_all, kpos = kv_full
            uk = rmsnorm(x_all, p[P + ".mixer_norm.weight"], c.eps)
        h = x + attention(p, P + ".mixer", c, u, qpos, uk, kpos)
    elif kind == "mamba1":
        h = x + mamba1(p, P + ".mixer", c, u)
    else:
        h = x + mamba2(p, P + ".mixer", c, u)
    if with_mlp:
        h = h + mlp(p, P + ".mlp", rmsnorm(h, p[P + ".mlp_norm.weight"], c.eps))
    return h


def flowhn_block(p, P, c, x, pa, ps):
    T = x.shape[1]
    if c.split_strategy == "none":
        ya = decoder(p, P + ".attn_branch", c, x, "attn")
        ys = decoder(p, P + ".ssm_branch", c, x, "mamba1")
        y = torch.cat([ys, ya], dim=-1)                                   # [B,T,2H]
    else:
        pa_t, ps_t = torch.tensor(pa), torch.tensor(ps)
        kv_full = (x, torch.arange(T)) if c.context == "prefix" else None
        ya = decoder(p, P + ".attn_branch", c, x[:, pa_t], "attn", qpos=pa_t, kv_full=kv_full)
        ys = decoder(p, P + ".ssm_branch", c, x[:, ps_t], "mamba1")
        # scatter back: position pa[i] takes ya[i], ps[j] takes ys[j]
        order = torch.cat([pa_t, ps_t])
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(T)
        y = torch.cat([ya, ys], dim=1)[:, inverse]
    z = x + linear(y, p[P + ".fuse.weight"])
    return z + linear(rmsnorm(z, p[P + ".out_norm.weight"], c.eps), p[P + ".out_proj.weight"])


def hymba_layer(p, P, c, x):
    T = x.shape[1]
    u = rmsnorm(x, p[P + ".mixer_norm.weight"], c.eps)
    pos = torch.arange(T)
    a = attention(p, P + ".attn", c, u, pos, u, pos)
    s = mamba1(p, P + ".mamba", c, u)
    comb = (rmsnorm(a, p[P + ".attn_out_norm.weight"], c.eps)
            + rmsnorm(s, p[P + ".ssm_out_norm.weight"], c.eps)) / 2
    h = x + linear(comb, p[P + ".out_proj.weight"])
    return h + mlp(p, P + ".mlp", rmsnorm(h, p[P + ".mlp_norm.weight"], c.eps))


# -------------------------------------------------------------------------------------- model

def forward_params(c, p, tokens, targets=None):
    """c: Config; p: {name: tensor}; tokens/targets: integer [B,T]. Returns (logits, loss)."""
    T = tokens.shape[1]
    x = p["embed.weight"][tokens.long()]
    plans = split_plan(c, T) if c.architecture == "flowhn" else None
    for l in range(c.L):
        P = "layers.%d" % l
        a = c.architecture
        if a == "llama":
            x = decoder(p, P, c, x, "attn")
        elif a == "mamba1":
            x = decoder(p, P, c, x, "mamba1", with_mlp=False)
        elif a == "mamba2":
            x = decoder(p, P, c, x, "mamba2", with_mlp=False)
        elif a in ("jamba", "shm"):
            x = decoder(p, P, c, x, "attn" if c.is_attention_layer(l) else "mamba1")
        elif a == "flowhn":
            x = flowhn_block(p, P, c, x, *plans[l])
        elif a == "hymba":
            x = hymba_layer(p, P, c, x)
    head = p["embed.weight"] if c.tie_word_embeddings else p["lm_head.weight"]
    logits = linear(rmsnorm(x, p["norm_f.weight"], c.eps), head)
    if targets is None:
        return logits, None
    tg = targets.long().reshape(-1)
    flat = logits.reshape(-1, logits.shape[-1])
    keep = tg >= 0
    nll = torch.logsumexp(flat[keep], dim=-1) - flat[keep].gather(1, tg[keep][:, None])[:, 0]
    return logits, nll.mean()


class FlowHNRef(nn.Module):
    """Config dict -> module whose named_parameters() are exactly the names of section 2
    (shapes as stored there). param_names() gives the contract's order."""

    def __init__(self, config, dtype=torch.float64):
        super().__init__()
        self.cfg = Config(config)
        self.layout = param_layout(self.cfg)
        for name, shape in self.layout:
            *path, leaf = name.split(".")
            mod = self
            for part in path:
                if part not in mod._modules:
                    mod.add_module(part, nn.Module())
                mod = mod._modules[part]
            mod.register_parameter(leaf, nn.Parameter(torch.zeros(shape, dtype=dtype)))

    def param_names(self):
        return [n for n, _ in self.layout]

    def params(self):
        return dict(self.named_parameters())

    def forward(self, tokens, targets=None):
        return forward_params(self.cfg, self.params(), tokens, targets)
