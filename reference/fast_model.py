"""A fast PyTorch implementation of the model contract (docs/model-definition.md), for benchmarking.

flowhn_ref.py is the float64 oracle (time loops, obviously right); this file computes the same
functions the way a PyTorch user would write them for speed, so that `flowhn bench` can be compared
with an honest PyTorch baseline:

- nn.Module per block, parameters named and shaped exactly as section 2 (`state_dict()` keys = contract
  names; `contract_params()` lists them in the contract's order); config parsing, layout and split
  plans come from contract.py;
- attention through F.scaled_dot_product_attention: `is_causal` for whole sequences and for FlowHN's
  isolated subsets (positions ascending, so "kpos <= qpos" is "j <= i" inside the subset), an
  explicit boolean mask only for the prefix context (queries at pa, keys at 0..T-1);
- Mamba-1: a parallel chunked selective scan (Hillis-Steele over each chunk of `scan_chunk` steps,
  all chunks at once, then one carry per chunk boundary), under activation checkpointing so the
  [B, T, E, S] states exist only transiently;
- Mamba-2: the chunked SSD algorithm (the "minimal" formulation of the Mamba-2 paper: quadratic
  form inside chunks, a state recurrence across them), group-aware einsums;
- numerically sensitive parts (norms, scans, softmax statistics, the loss) in float32 or wider,
  so it runs under bf16 autocast with float32 master weights.

    model = FastModel(config_dict)           # random init, like the C model's init in spirit
    model.prepare(T)                         # FlowHN: build the split plan for length T (call once per T)
    logits, loss = model(tokens, targets)    # tokens/targets int [B, T], targets -1 = ignored

In float64 without autocast it agrees with flowhn_ref.py to ~1e-12 (reference/check_fast_model.py).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from contract import Config, param_layout, split_plan


def usable_config(d):
    """contract.Config checks mamba2_headdim against the hidden size for every architecture; the tiny
    configs leave it at the default 64, which does not divide theirs. Where Mamba-2 is not used the
    key is unused, so give it a harmless value instead of refusing the config."""
    d = dict(d)
    if d.get("architecture", "flowhn") != "mamba2" and "mamba2_headdim" not in d:
        d["mamba2_headdim"] = 1
    return d


def wide(t):
    """The dtype to compute sensitive parts in: float32, or float64 when the input is float64."""
    return torch.promote_types(t.dtype, torch.float32)


def rmsnorm(x, w, eps):
    """x / sqrt(mean(x^2) + eps) * w, statistics in float32 (or wider); returns x's dtype."""
    xf = x.to(wide(x))
    y = xf * torch.rsqrt((xf * xf).mean(-1, keepdim=True) + eps)
    return (y * w.to(y.dtype)).to(x.dtype)


def softplus(x):
    """log(1+e^x); F.softplus switches to x above 20, a relative change below 1e-9."""
    return F.softplus(x)


class Norm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        return rmsnorm(x, self.weight, self.eps)


class CausalConv(nn.Module):
    """Depthwise causal conv over time; weight [C, K] as in the contract, bias [C]."""

    def __init__(self, C, K):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(C, K))
        self.bias = nn.Parameter(torch.zeros(C))

    def forward(self, x):                                   # x [B, n, C]
        n, K = x.shape[1], self.weight.shape[1]
        y = F.conv1d(x.transpose(1, 2), self.weight.unsqueeze(1).to(x.dtype), self.bias.to(x.dtype),
                     padding=K - 1, groups=x.shape[2])
        return y[..., :n].transpose(1, 2)


def linear(n_in, n_out, bias=False):
    return nn.Linear(n_in, n_out, bias=bias)


# ----------------------------------------------------------------------------------- attention

def rope(x, pos, theta):
    """Rotate-half RoPE on x [B, heads, n, hd] at positions pos [n] (angles in float32 or wider)."""
    hd = x.shape[-1]
    half = hd // 2
    ct = wide(x)
    inv_freq = theta ** (-2.0 * torch.arange(half, device=x.device, dtype=ct) / hd)
    ang = pos.to(ct)[:, None] * inv_freq[None, :]
    cos, sin = torch.cos(ang).to(x.dtype), torch.sin(ang).to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.q_proj = linear(c.H, c.nh * c.hd)
        self.k_proj = linear(c.H, c.nkv * c.hd)
        self.v_proj = linear(c.H, c.nkv * c.hd)
        self.o_proj = linear(c.nh * c.hd, c.H)

    def forward(self, uq, qpos, uk=None, kpos=None, mask=None):
        """Queries from uq at qpos; keys/values from uk at kpos (default: uq, qpos, causal).
        mask [n, m] bool (True = visible) is given only when keys are not the queries' own tokens."""
        c = self.c
        B, n, _ = uq.shape
        if uk is None:
            uk, kpos = uq, qpos
        m = uk.shape[1]
        q = self.q_proj(uq).view(B, n, c.nh, c.hd).transpose(1, 2)
        k = self.k_proj(uk).view(B, m, c.nkv, c.hd).transpose(1, 2)
        v = self.v_proj(uk).view(B, m, c.nkv, c.hd).transpose(1, 2)
        if c.use_rope:
            q = rope(q, qpos, float(c.rope_theta))
            k = rope(k, kpos, float(c.rope_theta))
        if mask is None:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=c.nh != c.nkv)
        else:
            # masked SDPA runs on the memory-efficient kernel, which wants the KV heads expanded
            rep = c.nh // c.nkv
            if rep > 1:
                k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(o.transpose(1, 2).reshape(B, n, c.nh * c.hd))


# ----------------------------------------------------------------------------------- Mamba-1

def _shift(t, k, fill):
    """t shifted k steps later along dim 2 ([B, nc, L, ...]), the first k entries = fill."""
    pad = torch.full_like(t[:, :, :k], fill)
    return torch.cat([pad, t[:, :, :-k]], dim=2)


def selective_scan(dt, A, Bm, Cm, x, chunk):
    """y_t = C_t . h_t with h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t, h_{-1} = 0, without a loop over t.

    dt, x [B, n, E]; A [E, S]; Bm, Cm [B, n, S]. Time is cut into chunks of `chunk` steps. Inside every
    chunk (all at once) a Hillis-Steele scan, log2(chunk) rounds of b_t += decay(t-k, t] b_{t-k},
    gives each step's state from a zero start; since A does not depend on time, every decay is
    exp(A (Dt_t - Dt_s)) with Dt the running sum of dt, so only b is a [B, n, E, S] tensor (the decays
    are recomputed inside the fused kernel). Then the states at chunk ends are carried across chunks
    (n/chunk small [B, E, S] steps) and added in through the decay since each chunk began. Exponents
    are <= 0, so nothing overflows (a factorisation exp(A Dt_t) exp(-A Dt_s) would).
    Computed in float32 (float64 for float64 inputs)."""
    ct = wide(dt)
    dt, x, Bm, Cm, A = dt.to(ct), x.to(ct), Bm.to(ct), Cm.to(ct), A.to(ct)
    Bsz, n, E = dt.shape
    S = A.shape[1]
    L = min(chunk, n)
    nc = -(-n // L)
    pad = nc * L - n
    if pad:   # padded steps come after every real one: they cannot change a real output
        dt, x = F.pad(dt, (0, 0, 0, pad)), F.pad(x, (0, 0, 0, pad))
        Bm, Cm = F.pad(Bm, (0, 0, 0, pad)), F.pad(Cm, (0, 0, 0, pad))
    dt = dt.view(Bsz, nc, L, E, 1)
    Dt = torch.cumsum(dt, dim=2)                                        # dt summed from the chunk start
    b = (dt * x.view(Bsz, nc, L, E, 1)) * Bm.view(Bsz, nc, L, 1, S)     # [B, nc, L, E, S]
    k = 1
    while k < L:   # b_t += decay over (t-k, t] * b_{t-k}; A is constant in time, so that decay is
        b = b + torch.exp((Dt - _shift(Dt, k, 0.0)) * A) * _shift(b, k, 0.0)   # exp(A (Dt_t - Dt_t-k))
        k *= 2
    a = torch.exp(Dt * A)
    # a[:, c, t] = decay from the start of chunk c to step t; b = state from a zero chunk start
    carry = b.new_zeros(Bsz, E, S)
    starts = []
    for ci in range(nc):                                                # n/chunk steps, not n
        starts.append(carry)
        carry = a[:, ci, L - 1] * carry + b[:, ci, L - 1]
    h = b + a * torch.stack(starts, dim=1)[:, :, None]                  # [B, nc, L, E, S]
    y = (h * Cm.view(Bsz, nc, L, 1, S)).sum(-1)                         # [B, nc, L, E]
    return y.view(Bsz, nc * L, E)[:, :n]


class Mamba1(nn.Module):
    def __init__(self, c, scan_chunk=64):
        super().__init__()
        self.c, self.scan_chunk = c, scan_chunk
        self.in_proj = linear(c.H, 2 * c.E)
        self.conv1d = CausalConv(c.E, c.K)
        self.x_proj = linear(c.E, c.R + 2 * c.S)
        self.dt_norm = Norm(c.R, c.eps)
        self.b_norm = Norm(c.S, c.eps)
        self.c_norm = Norm(c.S, c.eps)
        self.dt_proj = linear(c.R, c.E, bias=True)
        self.A_log = nn.Parameter(torch.zeros(c.E, c.S))
        self.D = nn.Parameter(torch.ones(c.E))
        self.out_proj = linear(c.E, c.H)

    def forward(self, u):
        c = self.c
        x, z = self.in_proj(u).split([c.E, c.E], dim=-1)
        xc = F.silu(self.conv1d(x))
        d = self.x_proj(xc)
        dt_in, Bm, Cm = d.split([c.R, c.S, c.S], dim=-1)
        dt = softplus(self.dt_proj(self.dt_norm(dt_in)).to(wide(u)))
        A = -torch.exp(self.A_log.to(dt.dtype))
        Bm, Cm = self.b_norm(Bm), self.c_norm(Cm)
        if torch.is_grad_enabled():   # keep only the scan's inputs; states are recomputed in backward
            y = checkpoint(selective_scan, dt, A, Bm, Cm, xc, self.scan_chunk, use_reentrant=False)
        else:
            y = selective_scan(dt, A, Bm, Cm, xc, self.scan_chunk)
        y = (y + self.D.to(y.dtype) * xc.to(y.dtype)) * F.silu(z.to(y.dtype))
        return self.out_proj(y)


# ----------------------------------------------------------------------------------- Mamba-2

def segsum(a):
    """a [..., L] -> [..., L, L]: entry (i, j) = a[j+1] + ... + a[i] for j <= i, -inf above the
    diagonal. Summed per pair (masked cumsum), not as a difference of cumsums, for accuracy."""
    L = a.shape[-1]
    rep = a[..., :, None].expand(*a.shape, L)                           # rep[..., k, j] = a[k]
    below = torch.ones(L, L, dtype=torch.bool, device=a.device).tril(-1)
    s = torch.cumsum(rep.masked_fill(~below, 0), dim=-2)                # sum over j < k <= i of a[k]
    keep = torch.ones(L, L, dtype=torch.bool, device=a.device).tril(0)
    return s.masked_fill(~keep, float("-inf"))


def ssd_chunked(x, la, Bm, Cm, chunk):
    """Chunked SSD: h_t = exp(la_t) h_{t-1} + x_t B_t^T per head, y_t = h_t C_t, h_{-1} = 0.

    x [B, n, G, hg, P] (already multiplied by dt), la [B, n, G, hg] (log decays), Bm, Cm [B, n, G, N]
    (heads of group g share its B and C). Inside a chunk: y = (C B^T o exp(segsum(la))) x; states at
    chunk ends by a decayed sum; across chunks a decayed recurrence (segsum over chunk totals); each
    chunk then reads its starting state through C and the decay since the chunk began."""
    Bsz, n, G, hg, Pd = x.shape
    L = min(chunk, n)
    nc = -(-n // L)
    pad = nc * L - n
    if pad:
        x, la = F.pad(x, (0, 0, 0, 0, 0, 0, 0, pad)), F.pad(la, (0, 0, 0, 0, 0, pad))
        Bm, Cm = F.pad(Bm, (0, 0, 0, 0, 0, pad)), F.pad(Cm, (0, 0, 0, 0, 0, pad))
    x = x.view(Bsz, nc, L, G, hg, Pd)
    Bm, Cm = Bm.view(Bsz, nc, L, G, -1), Cm.view(Bsz, nc, L, G, -1)
    la = la.view(Bsz, nc, L, G, hg).permute(0, 3, 4, 1, 2)             # [B, G, hg, nc, L]
    cum = torch.cumsum(la, dim=-1)
    decay_in = torch.exp(segsum(la)).to(x.dtype)                        # [B, G, hg, nc, L, L]
    y = torch.einsum("bclgn,bcsgn,bgjcls,bcsgjp->bclgjp", Cm, Bm, decay_in, x)
    to_end = torch.exp(cum[..., -1:] - cum).to(x.dtype)                 # [B, G, hg, nc, L]
    states = torch.einsum("bclgn,bgjcl,bclgjp->bcgjpn", Bm, to_end, x)   # chunk-end states, zero start
    states = torch.cat([torch.zeros_like(states[:, :1]), states], dim=1)
    across = torch.exp(segsum(F.pad(cum[..., -1], (1, 0)))).to(x.dtype)  # [B, G, hg, nc+1, nc+1]
    states = torch.einsum("bgjzc,bcgjpn->bzgjpn", across, states)[:, :-1]  # state at each chunk start
    from_start = torch.exp(cum).to(x.dtype)
    y = y + torch.einsum("bclgn,bcgjpn,bgjcl->bclgjp", Cm, states, from_start)
    return y.reshape(Bsz, nc * L, G, hg, Pd)[:, :n]


class Mamba2(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        GN = c.G2 * c.N2
        self.in_proj = linear(c.H, 2 * c.E2 + 2 * GN + c.nh2)
        self.conv1d = CausalConv(c.E2 + 2 * GN, c.K)
        self.dt_bias = nn.Parameter(torch.zeros(c.nh2))
        self.A_log = nn.Parameter(torch.zeros(c.nh2))
        self.D = nn.Parameter(torch.ones(c.nh2))
        self.gate_norm = Norm(c.E2, c.eps)
        self.out_proj = linear(c.E2, c.H)

    def forward(self, u):
        c = self.c
        E, G, N, nh, Pd = c.E2, c.G2, c.N2, c.nh2, c.P2
        hg = nh // G
        Bsz, n, _ = u.shape
        z, xbc, dt_raw = self.in_proj(u).split([E, E + 2 * G * N, nh], dim=-1)
        xbc = F.silu(self.conv1d(xbc))
        x, Bm, Cm = xbc.split([E, G * N, G * N], dim=-1)
        ct = wide(u)
        dt = softplus(dt_raw.to(ct) + self.dt_bias.to(ct))                  # [B, n, nh]
        la = -dt * torch.exp(self.A_log.to(ct))                             # log a_t
        xh = x.reshape(Bsz, n, G, hg, Pd)
        xdt = (xh.to(ct) * dt.view(Bsz, n, G, hg, 1)).to(x.dtype)
        y = ssd_chunked(xdt, la.view(Bsz, n, G, hg), Bm.reshape(Bsz, n, G, N), Cm.reshape(Bsz, n, G, N),
                        c.mamba2_chunk_size)
        y = y.to(ct) + self.D.to(ct).view(G, hg, 1) * xh.to(ct)
        y = y.reshape(Bsz, n, E) * F.silu(z.to(ct))
        return self.out_proj(self.gate_norm(y))


# ----------------------------------------------------------------------------------- layers

class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = linear(c.H, c.I)
        self.up_proj = linear(c.H, c.I)
        self.down_proj = linear(c.I, c.H)

    def forward(self, v):
        return self.down_proj(F.silu(self.gate_proj(v)) * self.up_proj(v))


class Decoder(nn.Module):
    """h = x + Mixer(RMSNorm(x)); out = h + MLP(RMSNorm(h)) (no MLP for the pure Mamba baselines)."""

    def __init__(self, c, kind, with_mlp=True, scan_chunk=64):
        super().__init__()
        self.kind = kind
        self.mixer_norm = Norm(c.H, c.eps)
        self.mixer = {"attn": lambda: Attention(c), "mamba1": lambda: Mamba1(c, scan_chunk),
                      "mamba2": lambda: Mamba2(c)}[kind]()
        if with_mlp:
            self.mlp_norm = Norm(c.H, c.eps)
            self.mlp = MLP(c)
        self.with_mlp = with_mlp

    def forward(self, x, qpos=None, x_all=None, kpos=None, mask=None):
        u = self.mixer_norm(x)
        if self.kind == "attn":
            if x_all is None:
                h = x + self.mixer(u, qpos)
            else:                       # FlowHN prefix: keys/values from all T tokens, same norm
                h = x + self.mixer(u, qpos, self.mixer_norm(x_all), kpos, mask)
        else:
            h = x + self.mixer(u)
        if self.with_mlp:
            h = h + self.mlp(self.mlp_norm(h))
        return h


class FlowHNBlock(nn.Module):
    def __init__(self, c, scan_chunk=64):
        super().__init__()
        self.c = c
        self.attn_branch = Decoder(c, "attn")
        self.ssm_branch = Decoder(c, "mamba1", scan_chunk=scan_chunk)
        self.fuse = linear(2 * c.H if c.split_strategy == "none" else c.H, c.H)
        self.out_norm = Norm(c.H, c.eps)
        self.out_proj = linear(c.H, c.H)
        self.plan_T = None

    def set_plan(self, T, pa, ps, device):
        """Index buffers for one T: attention/SSM positions, the inverse permutation that scatters
        [ya; ys] back to 0..T-1, and the prefix mask (query i sees key j iff j <= pa[i])."""
        pa_t = torch.tensor(pa, dtype=torch.long, device=device)
        ps_t = torch.tensor(ps, dtype=torch.long, device=device)
        order = torch.cat([pa_t, ps_t])
        inverse = torch.empty_like(order)
        if len(order) == T:            # split none: both branches see every token, nothing to scatter
            inverse[order] = torch.arange(T, device=device)
        self.register_buffer("pa", pa_t, persistent=False)
        self.register_buffer("ps", ps_t, persistent=False)
        self.register_buffer("inverse", inverse, persistent=False)
        self.register_buffer("kpos", torch.arange(T, device=device), persistent=False)
        self.register_buffer("mask", self.kpos[None, :] <= pa_t[:, None], persistent=False)
        self.plan_T = T

    def forward(self, x):
        c = self.c
        if c.split_strategy == "none":
            pos = self.kpos
            y = torch.cat([self.ssm_branch(x), self.attn_branch(x, pos)], dim=-1)
        else:
            xa, xs = x[:, self.pa], x[:, self.ps]
            if c.context == "prefix":
                ya = self.attn_branch(xa, self.pa, x, self.kpos, self.mask)
            else:                       # ascending positions: "kpos <= qpos" is causal in the subset
                ya = self.attn_branch(xa, self.pa)
            ys = self.ssm_branch(xs)
            y = torch.cat([ya, ys.to(ya.dtype)], dim=1)[:, self.inverse]
        z = x + self.fuse(y)
        return z + self.out_proj(self.out_norm(z))


class HymbaLayer(nn.Module):
    def __init__(self, c, scan_chunk=64):
        super().__init__()
        self.mixer_norm = Norm(c.H, c.eps)
        self.attn = Attention(c)
        self.mamba = Mamba1(c, scan_chunk)
        self.attn_out_norm = Norm(c.H, c.eps)
        self.ssm_out_norm = Norm(c.H, c.eps)
        self.out_proj = linear(c.H, c.H)
        self.mlp_norm = Norm(c.H, c.eps)
        self.mlp = MLP(c)

    def forward(self, x, pos):
        u = self.mixer_norm(x)
        a = self.attn(u, pos)
        s = self.mamba(u)
        comb = (self.attn_out_norm(a).to(wide(a)) + self.ssm_out_norm(s).to(wide(a))) / 2
        h = x + self.out_proj(comb)
        return h + self.mlp(self.mlp_norm(h))


# ----------------------------------------------------------------------------------- model

class FastModel(nn.Module):
    def __init__(self, config, scan_chunk=64, seed=1):
        super().__init__()
        c = self.cfg = Config(config)
        self.embed = nn.Embedding(c.V, c.H)
        layers = []
        for l in range(c.L):
            a = c.architecture
            if a == "llama":
                layers.append(Decoder(c, "attn"))
            elif a in ("mamba1", "mamba2"):
                layers.append(Decoder(c, a, with_mlp=False, scan_chunk=scan_chunk))
            elif a in ("jamba", "shm"):
                layers.append(Decoder(c, "attn" if c.is_attention_layer(l) else "mamba1", scan_chunk=scan_chunk))
            elif a == "flowhn":
                layers.append(FlowHNBlock(c, scan_chunk))
            else:
                layers.append(HymbaLayer(c, scan_chunk))
        self.layers = nn.ModuleList(layers)
        self.norm_f = Norm(c.H, c.eps)
        if not c.tie_word_embeddings:
            self.lm_head = linear(c.H, c.V)
        self._check_layout()
        self.init_weights(seed)
        self.register_buffer("pos", torch.arange(0), persistent=False)

    def _check_layout(self):
        """The parameters are the contract's: same names, same shapes (named_parameters() lists a
        module's own tensors, e.g. A_log, before its submodules', so the order differs inside a mixer;
        contract_params() gives the contract's order)."""
        got = {n: list(p.shape) for n, p in self.named_parameters()}
        want = {n: list(s) for n, s in param_layout(self.cfg)}
        if got != want:
            diff = sorted(n for n in set(got) | set(want) if got.get(n) != want.get(n))[:3]
            raise AssertionError("fast_model: parameters differ from the contract at %s" % diff)

    def contract_params(self):
        """[(name, parameter)] in the contract's order (section 2)."""
        p = dict(self.named_parameters())
        return [(n, p[n]) for n, _ in param_layout(self.cfg)]

    @torch.no_grad()
    def init_weights(self, seed):
        """Matrices N(0, initializer_range), norms 1, A_log = log(1..S) (Mamba-2: 1..16), D = 1,
        dt bias = softplus^-1 of dt log-uniform in [1e-3, 1e-1], conv N(0, 1/K)."""
        g = torch.Generator().manual_seed(seed)
        std = self.cfg.initializer_range
        for name, p in self.named_parameters():
            leaf = name.split(".")[-2:]
            if leaf[-1] == "A_log":
                top = p.shape[1] if p.dim() == 2 else 16
                vals = torch.log(torch.linspace(1, top, p.shape[-1]))
                p.copy_(vals.expand_as(p) if p.dim() == 2 else vals)
            elif leaf[-1] == "D" or name.endswith("norm.weight") or name == "norm_f.weight":
                p.fill_(1.0)
            elif leaf == ["dt_proj", "bias"] or leaf[-1] == "dt_bias":
                dt = torch.exp(torch.rand(p.shape, generator=g) * (math.log(0.1) - math.log(1e-3))
                               + math.log(1e-3))
                p.copy_(dt + torch.log(-torch.expm1(-dt)))
            elif leaf == ["conv1d", "weight"]:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
            elif leaf == ["conv1d", "bias"]:
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=g) * std)

    def prepare(self, T):
        """Position and split-plan buffers for sequence length T (FlowHN plans depend on T).
        Call before forward for every new T; outside torch.compile (plain Python work)."""
        dev = self.embed.weight.device
        self.pos = torch.arange(T, device=dev)
        if self.cfg.architecture == "flowhn":
            for layer, (pa, ps) in zip(self.layers, split_plan(self.cfg, T)):
                layer.set_plan(T, pa, ps, dev)
        return self

    def forward(self, tokens, targets=None):
        c = self.cfg
        T = tokens.shape[1]
        if self.pos.shape[0] != T:
            raise ValueError("fast_model: call prepare(%d) before a forward of length %d" % (T, T))
        x = self.embed(tokens.long())
        for layer in self.layers:
            if c.architecture == "flowhn":
                x = layer(x)
            elif c.architecture == "hymba" or layer.kind == "attn":
                x = layer(x, self.pos)
            else:
                x = layer(x)
        head = self.embed.weight if c.tie_word_embeddings else self.lm_head.weight
        logits = F.linear(self.norm_f(x), head)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).to(wide(logits)),
                               targets.reshape(-1).long(), ignore_index=-1)
        return logits, loss
