/* flops.c - the analytic FLOP model (see flops.h). Every formula mirrors the
 * MAC count stated at the op in ops/ops.h. */
#include "flops.h"

#include <stdlib.h>
#include <string.h>

#include "layout.h"
#include "model.h"
#include "split.h"

uint64_t macs_conv1d(int n, int C, int K) {
    /* taps whose input index is >= 0: token t has min(t+1, K) of them */
    uint64_t taps = 0;
    for (int t = 0; t < n; t++) taps += (uint64_t)(t + 1 < K ? t + 1 : K);
    return taps * (uint64_t)C;
}

uint64_t macs_attn_mixer(const Config *c, int nq, const int *qpos, int nk, const int *kpos) {
    uint64_t H = c->hidden_size, qd = (uint64_t)c->num_heads * c->head_dim, kvd = cfg_kv_dim(c);
    /* visible keys: kpos ascending, so a moving pointer counts kpos <= qpos[i] */
    uint64_t visible = 0;
    int j = 0;
    for (int i = 0; i < nq; i++) {
        while (j < nk && kpos[j] <= qpos[i]) j++;
        visible += (uint64_t)j;
    }
    return (uint64_t)nq * H * qd + 2 * (uint64_t)nk * H * kvd + 2ull * c->head_dim * c->num_heads * visible +
           (uint64_t)nq * qd * H;
}

uint64_t macs_mamba1_mixer(const Config *c, int n) {
    uint64_t H = c->hidden_size, E = cfg_E(c), S = c->d_state, R = c->dt_rank, N = n;
    return N * H * 2 * E                 /* in_proj */
         + macs_conv1d(n, (int)E, c->d_conv)
         + N * E * (R + 2 * S)           /* x_proj */
         + N * R * E                     /* dt_proj */
         + 3 * N * E * S                 /* selective scan */
         + N * E * H;                    /* out_proj */
}

/* SSD, chunked as src/ops/cpu/ssd.c executes it (formula stated there):
 * C.B over the causal pairs of each chunk once per group (G*N) plus the
 * weighted sum per head (nh*P) over those pairs; each chunk's own state and
 * the inter-chunk pass and the incoming-state output (nh*P*N each). */
uint64_t macs_ssd_chunked(uint64_t n, uint64_t nh, uint64_t P, uint64_t G, uint64_t N, uint64_t L) {
    uint64_t nfull = n / L, r = n % L, nchunks = (n + L - 1) / L;
    return (G * N + nh * P) * (nfull * L * (L + 1) / 2 + r * (r + 1) / 2) + nh * P * N * (2 * n + nchunks);
}

static uint64_t macs_ssd(const Config *c, int n) {
    return macs_ssd_chunked((uint64_t)n, cfg_m2_heads(c), c->m2_headdim, c->m2_ngroups, c->m2_d_state, c->m2_chunk_size);
}

uint64_t macs_mamba2_mixer(const Config *c, int n) {
    uint64_t H = c->hidden_size, E = cfg_m2_E(c), GN = (uint64_t)c->m2_ngroups * c->m2_d_state;
    uint64_t nh = cfg_m2_heads(c), N = n;
    return N * H * (2 * E + 2 * GN + nh) + macs_conv1d(n, (int)(E + 2 * GN), c->d_conv) + macs_ssd(c, n) + N * E * H;
}

uint64_t macs_mlp(const Config *c, int n) { return 3ull * n * c->hidden_size * c->intermediate_size; }

static uint64_t macs_decoder(const Config *c, MixerKind mk, int has_mlp, int n, const int *pos, int nk,
                             const int *kpos) {
    uint64_t mix = mk == MIXER_ATTN ? macs_attn_mixer(c, n, pos, nk, kpos)
                 : mk == MIXER_MAMBA1 ? macs_mamba1_mixer(c, n) : macs_mamba2_mixer(c, n);
    return mix + (has_mlp ? macs_mlp(c, n) : 0);
}

/* FlowHN block MACs for one split layout. */
static void macs_flowhn_layer(const Config *c, int T, const LayerSplit *ls, const int *iota, LayerMacs *out) {
    uint64_t H = c->hidden_size;
    /* a branch with no tokens is skipped entirely (model.c), K/V projections included */
    if (ls->na == 0) out->attn_branch = 0;
    else if (c->context == CONTEXT_PREFIX)
        out->attn_branch = macs_decoder(c, MIXER_ATTN, 1, ls->na, ls->pa, T, iota);
    else
        out->attn_branch = macs_decoder(c, MIXER_ATTN, 1, ls->na, ls->pa, ls->na, ls->pa);
    out->ssm_branch = ls->ns ? macs_decoder(c, MIXER_MAMBA1, 1, ls->ns, ls->ps, ls->ns, ls->ps) : 0;
    out->fusion = (uint64_t)T * H * (c->split == SPLIT_NONE ? 2 * H : H) + (uint64_t)T * H * H;
    out->total = out->attn_branch + out->ssm_branch + out->fusion;
    out->na = ls->na;
    out->ns = ls->ns;
}

static uint64_t model_macs_with_na(const Config *c, int T, int na, LayerMacs *per_layer) {
    int *iota = malloc(sizeof(int) * T);
    if (!iota) return 0;
    for (int t = 0; t < T; t++) iota[t] = t;
    SplitPlan plan;
    memset(&plan, 0, sizeof plan);
    if (c->arch == ARCH_FLOWHN && split_plan_build(&plan, c, T, na)) { free(iota); return 0; }
    uint64_t total = 0, H = c->hidden_size;
    for (int l = 0; l < c->num_layers; l++) {
        LayerMacs lm = {0};
        switch (c->arch) {
        case ARCH_FLOWHN: macs_flowhn_layer(c, T, &plan.layers[l], iota, &lm); break;
        case ARCH_HYMBA:
            lm.total = macs_attn_mixer(c, T, iota, T, iota) + macs_mamba1_mixer(c, T) + (uint64_t)T * H * H +
                       macs_mlp(c, T);
            break;
        case ARCH_LLAMA: lm.total = macs_decoder(c, MIXER_ATTN, 1, T, iota, T, iota); break;
        case ARCH_MAMBA1: lm.total = macs_decoder(c, MIXER_MAMBA1, 0, T, iota, T, iota); break;
        case ARCH_MAMBA2: lm.total = macs_decoder(c, MIXER_MAMBA2, 0, T, iota, T, iota); break;
        default: /* jamba, shm */
            lm.total = macs_decoder(c, l % c->attn_period == c->attn_offset ? MIXER_ATTN : MIXER_MAMBA1, 1, T, iota,
                                    T, iota);
        }
        if (per_layer) per_layer[l] = lm;
        total += lm.total;
    }
    total += (uint64_t)T * H * c->vocab_size;   /* LM head */
    if (c->arch == ARCH_FLOWHN) split_plan_free(&plan);
    free(iota);
    return total;
}

uint64_t macs_model_forward(const Config *c, int T, LayerMacs *per_layer) {
    return model_macs_with_na(c, T, model_split_na(c, T), per_layer);
}

double flops_train_per_token(const Config *c, int T) { return 6.0 * (double)macs_model_forward(c, T, NULL) / T; }

int flops_solve_na(const Config *c, int T) {
    /* Exhaustive over the multiples of m in [m, T-m]: exact for any layout
     * and context mode, and cheap (T/m plans of layer 0 only). */
    int m = split_multiple_at(c, T), best = split_na_for_ratio(c, T, 0.5);
    Config one = *c;
    one.num_layers = 1;
    double best_gap = -1;
    for (int na = m; na <= T - m; na += m) {
        LayerMacs lm;
        if (!model_macs_with_na(&one, T, na, &lm)) continue;
        double gap = (double)lm.attn_branch - (double)lm.ssm_branch;
        if (gap < 0) gap = -gap;
        if (best_gap < 0 || gap < best_gap) { best_gap = gap; best = na; }
    }
    return best;
}
