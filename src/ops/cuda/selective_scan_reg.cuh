/* selective_scan_reg.cuh - the register-resident Mamba-1 scan kernels
 * (selective_scan.cu's default; FLOWHN_SCAN1=old selects the others). In a
 * header so that tools/scan1_emu can run them on the CPU. The includer defines
 * scan_decay and SCAN_DECAY_SCALE, softplusf_, sigmoidf_, sr_smem() (the
 * dynamic shared memory) and the copy primitives sr_cp4 (a 4-byte cp.async,
 * zero-filling when !valid), sr_commit (commit_group), sr_wait_prev
 * (wait_group 1: all but the newest group landed) and sr_wait_all (wait_group 0). */
#pragma once
/* ---- Register-resident kernels (the default; FLOWHN_SCAN1=old selects the ones above) ----
 * One thread per (b, e) with all S <= 16 states in registers (padded to 16:
 * A = 0, B = C = 0 leave a padded state at 0). Compared with a thread per
 * (b, e, s): the per-(t, e) scalars (softplus, gate, D skip) are computed by
 * the thread that uses them, with no shuffles to broadcast them, and the sums
 * over s (C.h, dx, ddt) are in-thread FMA chains, so a step costs ~5 (forward)
 * or ~20 (backward) instructions per state instead of ~26 / ~69. The price is
 * parallelism: B*E threads (12K at mamba1-135m, 1.5K at B 1), one warp per
 * block; a warp's step is a ~900-clock dependent chain (measured), so time is
 * split into K segments of whole chunks (sr_segments: enough warps to fill
 * the SMs' resident slots; a segment pass and a fold, below) and each tile of
 * steps is copied into shared memory with cp.async one tile ahead. Lanes of channels past E copy zeros (cp.async zero
 * fill), so they compute finite zeros and add nothing to the dB/dC sums. */
#define SR_S 16  /* states per thread */
#define SR_T 32  /* steps per backward tile; the backward's chunk length L must be <= SR_T */
#ifndef SR_TF
#define SR_TF 8  /* steps per forward tile: 8 KB of shared memory a warp, so ~23 warps/SM (registers) */
#endif
#define SR_KMAX 64  /* time segments at most (host: sr_segments) */
#ifndef SR_LS
#define SR_LS 4  /* backward: steps per sub-chunk whose states are held in registers (8: 255
                  * registers and spills, 4 blocks/SM; 4: 239, none, 3 blocks/SM of 63.7 KB) */
#endif

/* (m ? b : a) as bit operations (one LOP3): with the plain ?: on array
 * elements nvcc selects an address instead and puts the array in local memory */
__device__ __forceinline__ float sr_pick(float a, float b, int m) {
    return __int_as_float((__float_as_int(a) & ~m) | (__float_as_int(b) & m));
}

/* p[s] of a 16-byte aligned row, as a float4 load (s a constant after unrolling: the four
 * components of one float4 are one load) */
__device__ __forceinline__ float sr_f4(const float *p, int s) {
    float4 v = ((const float4 *)p)[s >> 2];
    return (s & 3) == 0 ? v.x : (s & 3) == 1 ? v.y : (s & 3) == 2 ? v.z : v.w;
}

/* one round of a reduce-scatter (as group_sum_scatter): the lane keeps lo
 * (m = 0) or hi (m = -1) and adds the partner's other one, partner = lane ^ w */
__device__ __forceinline__ float sr_xchg(float lo, float hi, int m, int w) {
    return sr_pick(lo, hi, m) + __shfl_xor_sync(0xffffffffu, sr_pick(hi, lo, m), w);
}

/* A tile: NV per-(t, e) tensors [NV][SR_T][32 lanes], then B and C [SR_T][SR_S]
 * (states past S zero-filled), then (backward) the chunk's entry state
 * [32 lanes][SR_S + 1] (stride 17: a lane's 16 states read conflict-free). */
template <int NV, bool H0, int TT = SR_T>
struct SrTile {
    static constexpr int B = NV * TT * 32, C = B + TT * SR_S, H = C + TT * SR_S;
    static constexpr int SIZE = H + (H0 ? 32 * (SR_S + 1) : 0);  /* floats; a multiple of 4 (float4 reads) */
};

/* copies steps [t0, t0+tl) of the NV tensors src[v] (rows of E) for channels
 * e0.. e0+31 and of Bm, Cm (rows of S) into tile; one cp.async group is
 * committed by the caller */
template <int NV>
struct SrSrc { const float *p[NV]; };  /* by value: the unrolled loop keeps the pointers in registers */

template <int NV, int TT = SR_T, bool BC = true>
__device__ __forceinline__ void sr_load(float *tile, SrSrc<NV> src, const float *Bm, const float *Cm, int b,
                                        int n, int E, int S, int e0, int t0, int tl, int lane) {
    bool live = e0 + lane < E;
    size_t row = (size_t)b * n + t0, col = live ? e0 + lane : 0;
#pragma unroll
    for (int v = 0; v < NV; v++)
        for (int t = 0; t < tl; t++) sr_cp4(tile + (v * TT + t) * 32 + lane, src.p[v] + (row + t) * E + col, live);
    if constexpr (BC)  /* (the backward's LOW layout reads B, C from global memory) */
        for (int i = lane; i < tl * SR_S; i += 32) {
            int t = i / SR_S, s = i % SR_S;
            bool ok = s < S;
            size_t gi = (row + t) * S + (ok ? s : 0);
            sr_cp4(tile + NV * TT * 32 + i, Bm + gi, ok);
            sr_cp4(tile + NV * TT * 32 + TT * SR_S + i, Cm + gi, ok);
        }
}

/* V2 backward: the NV tensors' rows of steps [t0, t0+tl) copied 16 bytes a
 * lane (8 lanes a 128-byte row of the warp's 32 channels, 4 rows an
 * instruction) with cp.async.cg, which bypasses L1: the 4-byte copies are
 * .ca and their 16 KB a chunk evicted the B, C rows the walk reads through
 * L1 (28 KB at the largest shared carveout). The caller checks that the 32
 * channels are in range and the rows 16-byte aligned (sr_rows16). */
template <int NV, int TT = SR_T>
__device__ __forceinline__ void sr_load16(float *tile, SrSrc<NV> src, int b, int n, int E, int e0, int t0, int tl,
                                          int lane) {
    size_t row = (size_t)b * n + t0;
    int r = lane >> 3, c4 = (lane & 7) * 4;
#pragma unroll
    for (int v = 0; v < NV; v++)
        for (int t = r; t < tl; t += 4) sr_cp16(tile + (v * TT + t) * 32 + c4, src.p[v] + (row + t) * E + e0 + c4);
}

/* whether a warp's rows of E floats from e0 can be copied 16 bytes at a time */
template <int NV>
__device__ __forceinline__ bool sr_rows16(SrSrc<NV> src, int E, int e0) {
    bool ok = e0 + 32 <= E && (E & 3) == 0;
#pragma unroll
    for (int v = 0; v < NV; v++) ok = ok && ((size_t)src.p[v] & 15) == 0;
    return ok;
}

/* The number of time segments K (1..SR_KMAX, each a whole number cps of the
 * nc chunks, none empty) for a grid of w warps: the modeled time, in units of
 * one warp walking all n steps alone on its scheduler (latency-bound, so a
 * wave of resident warps costs one walk whatever their number), is the main
 * kernel's waves of K times shorter warps at `slots` resident warps, plus the
 * segment pass's (K - 1 segments, `slots1` resident, c1 of the main kernel's
 * time per step), plus the fold (K - 1 steps of the n). Host code. */
static inline int sr_segments(long w, long slots, long slots1, int nc, int n, double c1, int *cps) {
    double best = 1e30;
    int K = 1;
    for (int q = 1; q <= SR_KMAX && q <= nc; q++) {
        int cq = (nc + q - 1) / q;
        if ((nc + cq - 1) / cq != q) continue;  /* q segments of cq chunks would leave one empty */
        double cost = (double)((w * q + slots - 1) / slots) / q +
                      c1 * (double)((w * (q - 1) + slots1 - 1) / slots1) / q + (double)(q - 1) / n;
        if (cost < best - 1e-9) best = cost, K = q;
    }
    *cps = (nc + K - 1) / K;
    return K;
}

/* Time segments (both directions): segment j is steps [j cps L, (j+1) cps L)
 * (whole chunks, so hs keeps its meaning), blockIdx.z. The recurrence is
 * linear in h, so a segment's end state from a start state h0 is R_j + P_j h0
 * with R_j its end state from h0 = 0 and P_j = exp(A sum_t dt) (per state).
 * The segment pass computes R_j and sum dt for every segment whose value a
 * later (forward) or earlier (backward) segment needs; each main-kernel warp
 * then folds them into its start state: K - 1 steps of 16 decays at most, a
 * few percent of a segment's walk. R [B][K][E][S], sd [B][K][E].
 *
 * Forward segment pass: segments 0..K-2 (blockIdx.z), from h = 0. No tile:
 * per-step loads straight from global memory (a warp's 32 channels are 128
 * contiguous bytes; B_t is a broadcast), at ~40 registers and no shared
 * memory 32 warps/SM hide their latency. */
__global__ void __launch_bounds__(32)
scan_fwd_seg_kernel(float *R, float *sd, const float *x, const float *dt_raw, const float *A_log, const float *Bm,
                    int n, int E, int S, int seglen, int K) {
    int lane = threadIdx.x, b = blockIdx.y, seg = blockIdx.z, e = blockIdx.x * 32 + lane, live = e < E;
    int ec = live ? e : E - 1, t_lo = seg * seglen, t_hi = min(n, t_lo + seglen);
    float A2[SR_S], h[SR_S], sdt = 0.f;
#pragma unroll
    for (int s = 0; s < SR_S; s++) {
        A2[s] = s < S ? -expf(A_log[(size_t)ec * S + s]) * SCAN_DECAY_SCALE : 0.f;
        h[s] = 0.f;
    }
#pragma unroll 2
    for (int t = t_lo; t < t_hi; t++) {
        size_t i = ((size_t)b * n + t) * E + ec;
        const float *Bt = Bm + ((size_t)b * n + t) * S;
        float dt = softplusf_(dt_raw[i]), dtx = dt * x[i];
        sdt += dt;
#pragma unroll
        for (int s = 0; s < SR_S; s++)
            if (s < S) h[s] = fmaf(scan_decay(dt * A2[s]), h[s], dtx * Bt[s]);
    }
    if (live) {
        size_t q = ((size_t)b * K + seg) * E + e;
#pragma unroll
        for (int s = 0; s < SR_S; s++)
            if (s < S) R[q * S + s] = h[s];
        sd[q] = sdt;
    }
}

/* The forward: one warp per (32 channels, b, segment), its states in
 * registers from the folded start state; tiles of SR_TF steps through shared
 * memory. Writes y and hs (the entry state of each of its chunks and, for the
 * last segment, the final state). cR/csd: the segment pass's output (K > 1). */
__global__ void __launch_bounds__(32, 22)  /* 80 registers, no spills (96 unbounded): 25 warps/SM, as the
                                            * 8 KB of shared memory allows; 24 would spill */
scan_fwd_reg_kernel(float *y, float *hs, const float *x, const float *dt_raw, const float *A_log, const float *Bm,
                    const float *Cm, const float *D, const float *z, int n, int E, int S, int L, const float *cR,
                    const float *csd, int cps, int K) {
    typedef SrTile<3, false, SR_TF> T3;
    float *sm = sr_smem();
    int lane = threadIdx.x, b = blockIdx.y, e0 = blockIdx.x * 32, e = e0 + lane, live = e < E, ec = live ? e : E - 1;
    int seg = blockIdx.z, t_lo = seg * cps * L, t_hi = min(n, t_lo + cps * L);
    int nc = (n + L - 1) / L, ntile = (t_hi - t_lo + SR_TF - 1) / SR_TF;
    SrSrc<3> src = {{dt_raw, x, z}};
    float A[SR_S], h[SR_S];
#pragma unroll
    for (int s = 0; s < SR_S; s++) {
        A[s] = s < S ? -expf(A_log[(size_t)ec * S + s]) : 0.f;
        h[s] = 0.f;
    }
    sr_load<3, SR_TF>(sm, src, Bm, Cm, b, n, E, S, e0, t_lo, min(SR_TF, t_hi - t_lo), lane);
    sr_commit();  /* the first tile's copy overlaps the fold */
    for (int j = 0; live && j < seg; j++) {  /* the earlier segments, in order: h = P_j h + R_j */
        size_t q = ((size_t)b * K + j) * E + e;
        float sj = csd[q] * SCAN_DECAY_SCALE;
#pragma unroll
        for (int s = 0; s < SR_S; s++)
            if (s < S) h[s] = fmaf(scan_decay(sj * A[s]), h[s], cR[q * S + s]);
    }
    float De = D[ec];
    float *hsb = hs + (size_t)b * (nc + 1) * E * S + (size_t)ec * S;  /* + c*E*S + s */
    {
        float *dst = hsb + (size_t)seg * cps * E * S;  /* the entry state of the segment's first chunk */
#pragma unroll
        for (int s = 0; s < SR_S; s++)
            if (live && s < S) dst[s] = h[s];
    }
    /* the next chunk boundary: the state after step save-1 is kept, except at the segment's end (not the
     * sequence's), which the next segment writes (its folded state): one writer per slot (-1: none left) */
    auto next_save = [&](int v) { return v < t_hi ? v : t_hi == n ? n : -1; };
    int save = next_save(t_lo + L);
    for (int k = 0; k < ntile; k++) {
        int t0 = t_lo + k * SR_TF, tl = min(SR_TF, t_hi - t0);
        if (k + 1 < ntile)  /* the other buffer: every lane finished reading it (barrier at the loop's end) */
            sr_load<3, SR_TF>(sm + ((k + 1) & 1) * T3::SIZE, src, Bm, Cm, b, n, E, S, e0, t0 + SR_TF,
                              min(SR_TF, t_hi - t0 - SR_TF), lane);
        sr_commit();  /* possibly empty: wait_group 1 then always means "tile k is in" */
        sr_wait_prev();
        __syncwarp();  /* the other lanes' copies of tile k are visible */
        const float *tile = sm + (k & 1) * T3::SIZE;
        for (int j = 0; j < tl; j++) {
            int t = t0 + j;
            float xv = tile[(SR_TF + j) * 32 + lane], dt = softplusf_(tile[j * 32 + lane]);
            float dt2 = dt * SCAN_DECAY_SCALE, dtx = dt * xv, p = 0.f;
            const float4 *B4 = (const float4 *)(tile + T3::B + j * SR_S), *C4 = (const float4 *)(tile + T3::C + j * SR_S);
#pragma unroll
            for (int q = 0; q < SR_S / 4; q++) {
                float4 bq = B4[q], cq = C4[q];
                float bv[4] = {bq.x, bq.y, bq.z, bq.w}, cv[4] = {cq.x, cq.y, cq.z, cq.w};
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    int s = 4 * q + i;
                    h[s] = fmaf(scan_decay(dt2 * A[s]), h[s], dtx * bv[i]);
                    p = fmaf(cv[i], h[s], p);
                }
            }
            if (live) {
                float zv = tile[(2 * SR_TF + j) * 32 + lane];
                y[((size_t)b * n + t) * E + e] = (p + De * xv) * zv * sigmoidf_(zv);
            }
            if (t + 1 == save) {  /* after step t: the state entering chunk (t+1)/L (or the final one) */
                float *dst = hsb + (size_t)((t + L) / L) * E * S;
#pragma unroll
                for (int s = 0; s < SR_S; s++)
                    if (live && s < S) dst[s] = h[s];
                save = next_save(save + L);
            }
        }
        __syncwarp();  /* tile k's buffer is refilled by the next iteration */
    }
}

/* Backward segment pass: segments 1..K-1 (blockIdx.z + 1), walked in reverse
 * from dL/dh = 0 with scan_bwd_reg_kernel's update dh = (dh + C dyy) a; the
 * result and the segment's sum of dt into R, sd (as the forward's). */
__global__ void __launch_bounds__(32)
scan_bwd_seg_kernel(float *R, float *sd, const float *dy, const float *dt_raw, const float *A_log, const float *Cm,
                    const float *z, int n, int E, int S, int seglen, int K) {
    int lane = threadIdx.x, b = blockIdx.y, seg = blockIdx.z + 1, e = blockIdx.x * 32 + lane, live = e < E;
    int ec = live ? e : E - 1, t_lo = seg * seglen, t_hi = min(n, t_lo + seglen);
    float A2[SR_S], dh[SR_S], sdt = 0.f;
#pragma unroll
    for (int s = 0; s < SR_S; s++) {
        A2[s] = s < S ? -expf(A_log[(size_t)ec * S + s]) * SCAN_DECAY_SCALE : 0.f;
        dh[s] = 0.f;
    }
#pragma unroll 2
    for (int t = t_hi - 1; t >= t_lo; t--) {
        size_t i = ((size_t)b * n + t) * E + ec;
        const float *Ct = Cm + ((size_t)b * n + t) * S;
        float dt = softplusf_(dt_raw[i]), zv = z[i], dyy = dy[i] * zv * sigmoidf_(zv);
        sdt += dt;
#pragma unroll
        for (int s = 0; s < SR_S; s++)
            if (s < S) dh[s] = fmaf(Ct[s], dyy, dh[s]) * scan_decay(dt * A2[s]);
    }
    if (live) {
        size_t q = ((size_t)b * K + seg) * E + e;
#pragma unroll
        for (int s = 0; s < SR_S; s++)
            if (s < S) R[q * S + s] = dh[s];
        sd[q] = sdt;
    }
}

/* B or C of step t, states 4q..4q+3: from the tile (!LOW) or from global
 * memory (LOW: grow is the step's row of S floats, a broadcast to the warp;
 * float4 reads when S == SR_S, else guarded scalars, states past S read 0) */
template <bool LOW, bool S16>
__device__ __forceinline__ float4 sr_bc4(const float *tile_row, const float *grow, int S, int q) {
    if constexpr (!LOW) return ((const float4 *)tile_row)[q];
    else if constexpr (S16) return ((const float4 *)grow)[q];
    else {
        float v[4];
#pragma unroll
        for (int i = 0; i < 4; i++) v[i] = 4 * q + i < S ? grow[4 * q + i] : 0.f;
        return float4{v[0], v[1], v[2], v[3]};
    }
}

/* Backward: chunks last to first (L <= SR_T steps), dL/dh carried in
 * registers. Per chunk (its tile of dt_raw, x, dy, z [, B, C and entry state]):
 * pass 1 recomputes the chunk's states from the entry state, keeping the
 * state entering every sub-chunk of SR_LS steps (shared memory, per lane)
 * [and softplus(dt) per step]; then for each sub-chunk, last first, its SR_LS
 * states are recomputed into registers (hr) and walked in reverse with the
 * same formulas as scan_bwd_kernel (h_{t-1} = hr[j-1], or the sub-chunk's
 * entry state). Three decays per (t, s) (pass 1, sub-chunk, walk) against
 * shared memory for the chunk's states. dBm/dCm: the warp's 32 channels
 * summed by a reduce-scatter of the 32 values (16 dB, 16 dC) of the step, so
 * lane l adds one sum, dB[l] or dC[l-16], to global memory.
 *
 * Two shared-memory layouts, the same arithmetic in the same order (so equal
 * K give bitwise equal results):
 * !LOW (FLOWHN_SCAN1_BWD=nosplit): two chunk tiles (the next chunk's copy
 *   overlaps this one's walk) holding dt_raw, x, dy, z, B, C and the entry
 *   state, softplus(dt) of the chunk, the sub-chunk states: 63.7 KB, 3 warps/SM.
 * LOW (the default, S16 = (S == SR_S)): one tile of dt_raw, x, dy, z (16 KB,
 *   copied when the chunk starts: the other resident warps cover its
 *   latency), the sub-chunk states (14 KB); B, C and the chunk's entry state
 *   read from global memory (L1/L2: a step's B row is 64 B for the whole
 *   warp), softplus(dt) recomputed where used: 30 KB, 7 warps/SM, which
 *   the host fills by splitting time into more segments (sr_split).
 * V2 (with LOW; FLOWHN_SCAN1_BWD=v2, the default before scan_bwd_pair_kernel below;
 *   =low the kernel without it):
 *   the same layout and steps, fewer instructions a step and less L1 traffic:
 *   pass 1 writes softplus(dt) over its dt_raw in the tile (read by the
 *   recompute and the walk; sigmoid(dt_raw) = -expm1(-dt) for ddt_raw), the
 *   walk's sums regrouped (11 FP32 a state instead of 14, the sums over s in
 *   two chains), the tile copied 16 bytes a lane with cp.async.cg (not
 *   allocated in L1, where it evicted the B, C rows), hs and cR read as
 *   float4 (S = 16), and prefetches: the next chunk's tile rows and entry
 *   states into L2, a sub-chunk's C rows and the previous one's B rows into
 *   L1. Results differ from LOW's by rounding only. */
template <bool LOW, bool S16, bool V2 = false>
__global__ void __launch_bounds__(32)
scan_bwd_reg_kernel(float *dx, float *ddt_raw, float *dA_log, float *dBm, float *dCm, float *dD, float *dz,
                    const float *dy, const float *hs, const float *x, const float *dt_raw, const float *A_log,
                    const float *Bm, const float *Cm, const float *D, const float *z, int n, int E, int S, int L,
                    int acc, const float *cR, const float *csd, int cps, int K) {
    typedef SrTile<4, true> T4;
    float *sm = sr_smem();
    float *sdt = sm + 2 * T4::SIZE;     /* !LOW: [SR_T][32]: softplus(dt) of the chunk's steps */
    /* [SR_T/SR_LS - 1][SR_S][32]: entry states of sub-chunks 1.. */
    float *hsub = LOW ? sm + 4 * SR_T * 32 : sdt + SR_T * 32;
    int lane = threadIdx.x, b = blockIdx.y, e0 = blockIdx.x * 32, e = e0 + lane, live = e < E, ec = live ? e : E - 1;
    int nc = (n + L - 1) / L, seg = blockIdx.z, c_lo = seg * cps, c_hi = min(nc, c_lo + cps);  /* its chunks */
    SrSrc<4> src = {{dt_raw, x, dy, z}};
    const float *hsb = hs + (size_t)b * (nc + 1) * E * S;  /* + c*E*S + e*S + s */
    const float *Bg = Bm + (size_t)b * n * S, *Cg = Cm + (size_t)b * n * S;  /* LOW: + t*S */
    float A[SR_S], dh[SR_S], dA[SR_S];
#pragma unroll
    for (int s = 0; s < SR_S; s++) {
        A[s] = s < S ? -expf(A_log[(size_t)ec * S + s]) : 0.f;
        dh[s] = dA[s] = 0.f;
    }
    /* dL/dh entering this segment from the later ones, last first: dh = P_j dh + R_j.
     * Dead lanes keep dh = 0 (their zero-filled inputs keep it there). */
    bool r4 = V2 && S16 && ((size_t)cR & 15) == 0;  /* V2: R_j's 16 states as 4 float4 (64-byte rows) */
    for (int j = K - 1; live && j > seg; j--) {
        size_t q = ((size_t)b * K + j) * E + e;
        float sj = csd[q] * SCAN_DECAY_SCALE;
        const float *Rq = cR + q * S;
#pragma unroll
        for (int s = 0; s < SR_S; s++)
            if (s < S) dh[s] = fmaf(scan_decay(sj * A[s]), dh[s], r4 ? sr_f4(Rq, s) : Rq[s]);
    }
    float De = D[ec], dDacc = 0.f;
    /* V2: 16-byte L2-only tile copies where the rows allow; hs read as float4 (S = 16: a lane's
     * entry state is 64 aligned bytes; 16 scalar loads at a 64-byte lane stride before) */
    bool v16 = V2 && LOW && sr_rows16<4>(src, E, e0), h4 = V2 && S16 && ((size_t)hs & 15) == 0;
    auto load = [&](int c) {  /* chunk c's tile [and entry state] into buffer c & 1 (LOW: the one buffer) */
        int t0 = c * L;
        if (LOW) {
            if (v16) sr_load16<4>(sm, src, b, n, E, e0, t0, min(L, n - t0), lane);
            else sr_load<4, SR_T, false>(sm, src, Bm, Cm, b, n, E, S, e0, t0, min(L, n - t0), lane);
            return;
        }
        float *tile = sm + (c & 1) * T4::SIZE;
        sr_load<4>(tile, src, Bm, Cm, b, n, E, S, e0, t0, min(L, n - t0), lane);
        const float *hc = hsb + (size_t)c * E * S;
        for (int i = lane; i < 32 * SR_S; i += 32) {
            int ee = i / SR_S, s = i % SR_S;
            bool ok = e0 + ee < E && s < S;
            sr_cp4(tile + T4::H + ee * (SR_S + 1) + s, hc + (ok ? (size_t)(e0 + ee) * S + s : 0), ok);
        }
    };
    if (!LOW) {
        load(c_hi - 1);
        sr_commit();
    }
    for (int c = c_hi - 1; c >= c_lo; c--) {
        int t0 = c * L, tl = min(L, n - t0);
        if (LOW) {
            load(c);
            sr_commit();
            sr_wait_all();
        } else {
            if (c > c_lo) load(c - 1);
            sr_commit();
            sr_wait_prev();
        }
        __syncwarp();
        if (V2 && LOW && c > c_lo) {
            /* the next chunk's tile rows (dt_raw, x, dy, z) and entry states into L2 behind this
             * chunk's walk, so that its copy (exposed: one buffer) waits on L2, not DRAM. Chunk
             * c - 1 is a whole one: its rows are in range */
            size_t r0 = (size_t)b * n + (size_t)(c - 1) * L + lane;
#pragma unroll
            for (int v = 0; v < 4; v++)
                if (lane < L) sr_pf_l2(src.p[v] + r0 * E + e0);
            if (lane < 16 && e0 + 2 * lane < E) sr_pf_l2(hsb + (size_t)(c - 1) * E * S + (size_t)(e0 + 2 * lane) * S);
        }
        const float *tile = LOW ? sm : sm + (c & 1) * T4::SIZE;
        /* the chunk's entry state: LOW from hs (channel ec; states past S are 0), else the tile's copy */
        const float *H0 = LOW ? hsb + (size_t)c * E * S + (size_t)ec * S : tile + T4::H + lane * (SR_S + 1);
        auto h0 = [&](int s) { return LOW ? (h4 ? sr_f4(H0, s) : s < S ? H0[s] : 0.f) : H0[s]; };
        /* step j's B, C (states 4q..) and softplus(dt) */
        auto Bq = [&](int j, int q) { return sr_bc4<LOW, S16>(tile + T4::B + j * SR_S, Bg + (size_t)(t0 + j) * S, S, q); };
        auto Cq = [&](int j, int q) { return sr_bc4<LOW, S16>(tile + T4::C + j * SR_S, Cg + (size_t)(t0 + j) * S, S, q); };
        /* V2: pass 1 overwrote dt_raw with softplus(dt_raw) (this lane's column of its tile) */
        auto sdt_of = [&](int j) {
            return LOW ? (V2 ? tile[j * 32 + lane] : softplusf_(tile[j * 32 + lane])) : sdt[j * 32 + lane];
        };
        /* 1. pass over the chunk: softplus(dt) and the sub-chunks' entry states */
        {
            float h[SR_S];
#pragma unroll
            for (int s = 0; s < SR_S; s++) h[s] = h0(s);
#pragma unroll 4  /* LOW: the steps' B loads (global) issued ahead of the h chain */
            for (int j = 0; j < tl; j++) {
                float dt = softplusf_(tile[j * 32 + lane]), dt2 = dt * SCAN_DECAY_SCALE;
                float dtx = dt * tile[(SR_T + j) * 32 + lane];
                if (!LOW) sdt[j * 32 + lane] = dt;
                if (LOW && V2) sm[j * 32 + lane] = dt;
#pragma unroll
                for (int q = 0; q < SR_S / 4; q++) {
                    float4 bq = Bq(j, q);
                    float bv[4] = {bq.x, bq.y, bq.z, bq.w};
#pragma unroll
                    for (int i = 0; i < 4; i++) h[4 * q + i] = fmaf(scan_decay(dt2 * A[4 * q + i]), h[4 * q + i], dtx * bv[i]);
                }
                if ((j + 1) % SR_LS == 0 && j + 1 < tl) {
                    float *hk = hsub + ((j + 1) / SR_LS - 1) * SR_S * 32 + lane;
#pragma unroll
                    for (int s = 0; s < SR_S; s++) hk[s * 32] = h[s];
                }
            }
        }
        /* 2. the sub-chunks, last first */
        for (int k = (tl - 1) / SR_LS; k >= 0; k--) {
            int js = k * SR_LS, je = min(js + SR_LS, tl);
            const float *hin = hsub + (k - 1) * SR_S * 32 + lane;  /* k > 0: its entry state, stride 32 */
            auto hentry = [&](int s) { return k ? hin[s * 32] : h0(s); };
            if (V2 && LOW) {  /* into L1 ahead of use: this sub-chunk's C rows (first read by its walk, after
                               * the recompute) and the previous sub-chunk's B rows (for its recompute) */
                int j = lane < 4 ? js + lane : js - SR_LS + (lane - 4);
                if (lane < 4 ? j < je : lane < 8 && k > 0) sr_pf_l1((lane < 4 ? Cg : Bg) + (size_t)(t0 + j) * S);
            }
            float hr[SR_LS][SR_S];
            {
                float h[SR_S];
#pragma unroll
                for (int s = 0; s < SR_S; s++) h[s] = hentry(s);
#pragma unroll
                for (int jj = 0; jj < SR_LS; jj++) {
                    if (js + jj < je) {
                        int j = js + jj;
                        float dt = sdt_of(j), dt2 = dt * SCAN_DECAY_SCALE, dtx = dt * tile[(SR_T + j) * 32 + lane];
#pragma unroll
                        for (int q = 0; q < SR_S / 4; q++) {
                            float4 bq = Bq(j, q);
                            float bv[4] = {bq.x, bq.y, bq.z, bq.w};
#pragma unroll
                            for (int i = 0; i < 4; i++) {
                                int s = 4 * q + i;
                                h[s] = fmaf(scan_decay(dt2 * A[s]), h[s], dtx * bv[i]);
                                hr[jj][s] = h[s];
                            }
                        }
                    }
                }
            }
#pragma unroll
            for (int jj = SR_LS - 1; jj >= 0; jj--) {
                if (V2 && js + jj < je) {
                    /* V2's walk: the same sums regrouped. With dh' = dh a (the step's decay applied, as
                     * below): dA_s += dt dh'_s hp_s; ddt = sum_s A_s dh'_s hp_s + x sum_s dh_s B_s;
                     * dx = dt sum_s dh_s B_s; vB = dh (dt x). 11 FP32 a state (14 before); the sums over s
                     * in two chains (even, odd s) so none is a 16-FMA dependent chain */
                    int j = js + jj, t = t0 + j;
                    float dt = tile[j * 32 + lane], xv = tile[(SR_T + j) * 32 + lane];
                    float dyv = tile[(2 * SR_T + j) * 32 + lane], zv = tile[(3 * SR_T + j) * 32 + lane];
                    float dt2 = dt * SCAN_DECAY_SCALE, dtx = dt * xv;
                    float sg = sigmoidf_(zv), dyy = dyv * zv * sg;
                    float pp[2] = {0.f, 0.f}, P[2] = {0.f, 0.f}, Q[2] = {0.f, 0.f};
                    float r1[16], r2[8], r3[4], r4[2], v = 0.f;
                    int up = (lane & 16) ? -1 : 0, m8 = (lane & 8) ? -1 : 0, m4 = (lane & 4) ? -1 : 0;
                    int m2 = (lane & 2) ? -1 : 0, m1 = (lane & 1) ? -1 : 0;
#pragma unroll
                    for (int q = 0; q < SR_S / 4; q++) {
                        float4 bq = Bq(j, q), cq = Cq(j, q);
                        float bv[4] = {bq.x, bq.y, bq.z, bq.w}, cv[4] = {cq.x, cq.y, cq.z, cq.w};
#pragma unroll
                        for (int i = 0; i < 4; i++) {
                            int s = 4 * q + i, o = s & 1;
                            float ht = hr[jj][s], hp = jj ? hr[jj > 0 ? jj - 1 : 0][s] : hentry(s);
                            float a = scan_decay(dt2 * A[s]);
                            pp[o] = fmaf(cv[i], ht, pp[o]);
                            dh[s] = fmaf(cv[i], dyy, dh[s]);
                            P[o] = fmaf(dh[s], bv[i], P[o]);
                            float vB = dh[s] * dtx, vC = dyy * ht;
                            dh[s] *= a;  /* on to h_{t-1} */
                            float w = dh[s] * hp;
                            dA[s] = fmaf(w, dt, dA[s]);
                            Q[o] = fmaf(w, A[s], Q[o]);
                            r1[s] = sr_xchg(vB, vC, up, 16);
                            if (s >= 8) r2[s - 8] = sr_xchg(r1[s - 8], r1[s], m8, 8);
                            if (s >= 12) r3[s - 12] = sr_xchg(r2[s - 12], r2[s - 8], m4, 4);
                            if (s >= 14) r4[s - 14] = sr_xchg(r3[s - 14], r3[s - 12], m2, 2);
                            if (s == 15) v = sr_xchg(r4[0], r4[1], m1, 1);
                        }
                    }
                    float *dst = up ? dCm : dBm;
                    if (dst && (lane & 15) < S) atomicAdd(&dst[((size_t)b * n + t) * S + (lane & 15)], v);
                    if (live) {
                        size_t im = ((size_t)b * n + t) * E + e;
                        float Ps = P[0] + P[1];
                        float gz = dyv * (pp[0] + pp[1] + De * xv) * sg * (1.f + zv * (1.f - sg));
                        float gx = fmaf(dt, Ps, De * dyy);
                        float gdt = fmaf(xv, Ps, Q[0] + Q[1]) * -expm1f(-dt);  /* sigmoid(dt_raw) = 1 - exp(-dt) */
                        if (dz) dz[im] = acc ? dz[im] + gz : gz;
                        if (dx) dx[im] = acc ? dx[im] + gx : gx;
                        if (ddt_raw) ddt_raw[im] = acc ? ddt_raw[im] + gdt : gdt;
                        dDacc += dyy * xv;
                    }
                }
                if (!V2 && js + jj < je) {
                    int j = js + jj, t = t0 + j;
                    float dtr = tile[j * 32 + lane], xv = tile[(SR_T + j) * 32 + lane];
                    float dyv = tile[(2 * SR_T + j) * 32 + lane], zv = tile[(3 * SR_T + j) * 32 + lane];
                    float dt = LOW ? softplusf_(dtr) : sdt[j * 32 + lane], dt2 = dt * SCAN_DECAY_SCALE;
                    float sg = sigmoidf_(zv), dyy = dyv * zv * sg;
                    float pp = 0.f, dxp = 0.f, ddtp = 0.f, r1[16], r2[8], r3[4], r4[2], v = 0.f;
                    /* after the first exchange this lane keeps dC's (up) or dB's; then halves of 16 */
                    int up = (lane & 16) ? -1 : 0, m8 = (lane & 8) ? -1 : 0, m4 = (lane & 4) ? -1 : 0;
                    int m2 = (lane & 2) ? -1 : 0, m1 = (lane & 1) ? -1 : 0;
    #pragma unroll
                    for (int q = 0; q < SR_S / 4; q++) {
                        float4 bq = Bq(j, q), cq = Cq(j, q);
                        float bv[4] = {bq.x, bq.y, bq.z, bq.w}, cv[4] = {cq.x, cq.y, cq.z, cq.w};
    #pragma unroll
                        for (int i = 0; i < 4; i++) {
                            int s = 4 * q + i;
                            float ht = hr[jj][s], hp = jj ? hr[jj > 0 ? jj - 1 : 0][s] : hentry(s);
                            float a = scan_decay(dt2 * A[s]);
                            pp = fmaf(cv[i], ht, pp);
                            dh[s] = fmaf(cv[i], dyy, dh[s]);
                            float ahp = a * hp, dhdt = dh[s] * dt;
                            dA[s] = fmaf(dhdt, ahp, dA[s]);
                            ddtp = fmaf(dh[s], fmaf(A[s], ahp, bv[i] * xv), ddtp);
                            dxp = fmaf(dhdt, bv[i], dxp);
                            float vB = dhdt * xv, vC = dyy * ht;
                            /* the reduce-scatter of sr_sum_scatter16, each exchange as soon as its
                             * operands exist (no array lives past the loop: nvcc otherwise merges
                             * the unrolled steps' tails and keeps the array in local memory) */
                            r1[s] = sr_xchg(vB, vC, up, 16);
                            if (s >= 8) r2[s - 8] = sr_xchg(r1[s - 8], r1[s], m8, 8);
                            if (s >= 12) r3[s - 12] = sr_xchg(r2[s - 12], r2[s - 8], m4, 4);
                            if (s >= 14) r4[s - 14] = sr_xchg(r3[s - 14], r3[s - 12], m2, 2);
                            if (s == 15) v = sr_xchg(r4[0], r4[1], m1, 1);
                            dh[s] *= a;  /* on to h_{t-1} */
                        }
                    }
                    /* lane l: dB[l] (l < 16) or dC[l - 16] of step t, summed over the warp's channels */
                    float *dst = up ? dCm : dBm;
                    if (dst && (lane & 15) < S) atomicAdd(&dst[((size_t)b * n + t) * S + (lane & 15)], v);
                    if (live) {
                        size_t im = ((size_t)b * n + t) * E + e;
                        /* this lane alone writes step t of channel e: acc 0 stores (ops.h) */
                        float gz = dyv * (pp + De * xv) * sg * (1.f + zv * (1.f - sg)), gx = dxp + De * dyy;
                        float gdt = ddtp * sigmoidf_(dtr);  /* softplus' = sigmoid */
                        if (dz) dz[im] = acc ? dz[im] + gz : gz;
                        if (dx) dx[im] = acc ? dx[im] + gx : gx;
                        if (ddt_raw) ddt_raw[im] = acc ? ddt_raw[im] + gdt : gdt;
                        dDacc += dyy * xv;
                    }
                }
            }
        }
        __syncwarp();  /* this buffer is refilled by the next chunk's copy */
    }
    if (dA_log && live) {  /* A = -exp(A_log): dA_log = dA A */
#pragma unroll
        for (int s = 0; s < SR_S; s++)
            if (s < S) atomicAdd(&dA_log[(size_t)e * S + s], dA[s] * A[s]);
    }
    if (dD && live) atomicAdd(&dD[e], dDacc);
}

/* Pair backward (the default; FLOWHN_SCAN1_BWD=v2 the kernel above): the V2
 * kernel's steps with a channel's 16 states split over two lanes, so a lane
 * carries 8 (the per-state chains and registers halve) and twice as many
 * warps fit an SM. Why: V2 at ~246 registers and 30.7 KB a warp runs ~1.7
 * warps a scheduler and ncu found it latency-bound (4.1 clocks between a
 * warp's issues, 37% issue): independent work had to come from inside a warp.
 * Lane 2c + h (h = 0, 1) holds states 8h..8h+7 of channel e0 + c (a warp = 16
 * channels, blockIdx.x * 16). Per step both lanes of a pair compute the
 * per-(t, e) scalars (softplus, the gate), their 8 states' decays and walk,
 * and partial sums over their 8 states, which one shfl_xor(1) completes (C.h,
 * dh.B, dh'.hp.A); the even lane stores dx, ddt, dz. dB/dC: the lane's 16
 * values (vB, vC of its 8 states) reduce-scattered over lane bits 4..1 (the 16
 * channels), 15 exchanges, leaving lane l with dB (l < 16) or dC of state
 * 8 (l & 1) + ((l >> 1) & 7). Shared memory: the tile [4][SR_T][16] (dt_raw
 * (softplus(dt) after pass 1), x, dy, z) and the sub-chunk entry states
 * [SR_T/SR_LS - 1][8][32 lanes]: 15 KB, so 14 warps/SM (V2: 7). */
#define SP_C 16  /* channels a warp */
static_assert(SR_LS % 2 == 0, "scan_bwd_pair_kernel<DN>'s outputs: two steps of a sub-chunk a pair, in pairs");
#define SP_SMEM_FLOATS (4 * SR_T * SP_C + (SR_T / SR_LS - 1) * 8 * 32)
/* MINB: resident warps an SM asked of ptxas. 14 (the default; shared memory allows 14):
 * 128 registers and 8 B (S16; 12 B S < 16) of spills; 12 (FLOWHN_SCAN1_BWD=pair12): 162, no
 * spills (161 at S16), 12 warps/SM; unbounded it takes 186.
 * DN (the default since branch scan1b; FLOWHN_SCAN1_BWD=pair the kernel without it): the
 * per-(t, e) scalars, which the pair layout pays twice (both lanes of a pair compute them, or
 * the even lane alone with the odd one idle in the same issue slots), done once an element with
 * all 32 lanes busy: a dense prologue per chunk (lane l on channel l & 15, steps (l >> 4) + 2m)
 * writes softplus(dt) over dt_raw, dyy = dy z sigmoid(z) over dy and gzf = dy sigmoid(z)
 * (1 + z (1 - sigmoid(z))) over z in the tile and sums dD; pass 1 and the walk read them; the
 * walk keeps the pair's sums (C.h, dh.B, dh'.hp.A) of the sub-chunk's <= SR_LS steps in
 * registers, and after the sub-chunk lane 2c + h computes and stores dz, dx, ddt of steps h,
 * h + 2, ... of channel c. Same shared memory, same per-state arithmetic. */
template <bool S16, int MINB = 14, bool DN = false>
__global__ void __launch_bounds__(32, MINB)
scan_bwd_pair_kernel(float *dx, float *ddt_raw, float *dA_log, float *dBm, float *dCm, float *dD, float *dz,
                     const float *dy, const float *hs, const float *x, const float *dt_raw, const float *A_log,
                     const float *Bm, const float *Cm, const float *D, const float *z, int n, int E, int S, int L,
                     int acc, const float *cR, const float *csd, int cps, int K) {
    float *tile = sr_smem();                   /* [4][SR_T][SP_C] */
    float *hsub = tile + 4 * SR_T * SP_C;      /* [SR_T/SR_LS - 1][8][32]: entry states of sub-chunks 1.. */
    int lane = threadIdx.x, ch = lane >> 1, hf = lane & 1, s0 = 8 * hf, b = blockIdx.y;
    int e0 = blockIdx.x * SP_C, e = e0 + ch, live = e < E, ec = live ? e : E - 1;
    int nc = (n + L - 1) / L, seg = blockIdx.z, c_lo = seg * cps, c_hi = min(nc, c_lo + cps);  /* its chunks */
    SrSrc<4> src = {{dt_raw, x, dy, z}};
    const float *hsb = hs + (size_t)b * (nc + 1) * E * S;  /* + c*E*S + e*S + s */
    const float *Bg = Bm + (size_t)b * n * S + s0, *Cg = Cm + (size_t)b * n * S + s0;  /* + t*S: this half's */
    int Sh = S - s0;  /* states of this half that exist (<= 0: all padding) */
    float A[8], dh[8], dA[8];
#pragma unroll
    for (int i = 0; i < 8; i++) {
        A[i] = i < Sh ? -expf(A_log[(size_t)ec * S + s0 + i]) : 0.f;
        dh[i] = dA[i] = 0.f;
    }
    /* dL/dh entering this segment from the later ones (as V2's fold, this half's states) */
    bool r4 = S16 && ((size_t)cR & 15) == 0;
    for (int j = K - 1; live && j > seg; j--) {
        size_t q = ((size_t)b * K + j) * E + e;
        float sj = csd[q] * SCAN_DECAY_SCALE;
        const float *Rq = cR + q * S + s0;
#pragma unroll
        for (int i = 0; i < 8; i++)
            if (i < Sh) dh[i] = fmaf(scan_decay(sj * A[i]), dh[i], r4 ? sr_f4(Rq, i) : Rq[i]);
    }
    float De = D[ec], dDacc = 0.f;  /* DN: dD of channel e0 + (lane & 15), this lane's steps */
    /* 16-byte L2-only copies (4 lanes a 64-byte row, 8 rows an instruction) when the warp's 16
     * channels are in range and the rows aligned; else 4-byte ones zero-filling dead channels */
    bool v16 = e0 + SP_C <= E && (E & 3) == 0, h4 = S16 && ((size_t)hs & 15) == 0;
#pragma unroll
    for (int v = 0; v < 4; v++) v16 = v16 && ((size_t)src.p[v] & 15) == 0;
    for (int c = c_hi - 1; c >= c_lo; c--) {
        int t0 = c * L, tl = min(L, n - t0);
        {
            size_t row = (size_t)b * n + t0;
            if (v16) {
                int r = lane >> 2, c4 = (lane & 3) * 4;
#pragma unroll
                for (int v = 0; v < 4; v++)
                    for (int t = r; t < tl; t += 8)
                        sr_cp16(tile + (v * SR_T + t) * SP_C + c4, src.p[v] + (row + t) * E + e0 + c4);
            } else {
                int r = lane >> 4, cc = lane & 15;
                bool ok = e0 + cc < E;
                size_t col = ok ? e0 + cc : 0;
#pragma unroll
                for (int v = 0; v < 4; v++)
                    for (int t = r; t < tl; t += 2) sr_cp4(tile + (v * SR_T + t) * SP_C + cc, src.p[v] + (row + t) * E + col, ok);
            }
        }
        sr_commit();
        sr_wait_all();
        __syncwarp();
        if constexpr (DN) {  /* the dense prologue: each (step, channel) of the tile once */
            int cc = lane & 15;
            bool okc = e0 + cc < E;
            for (int j = lane >> 4; j < tl; j += 2) {
                float *p = tile + j * SP_C + cc;
                float dtr = p[0], xv = p[SR_T * SP_C], dyv = p[2 * SR_T * SP_C], zv = p[3 * SR_T * SP_C];
                float sg = sigmoidf_(zv), dyy = dyv * zv * sg;
                p[0] = softplusf_(dtr);
                p[2 * SR_T * SP_C] = dyy;
                p[3 * SR_T * SP_C] = dyv * sg * (1.f + zv * (1.f - sg));
                if (okc) dDacc = fmaf(dyy, xv, dDacc);
            }
            __syncwarp();  /* the pair layout below reads other lanes' elements */
        }
        if (c > c_lo) {
            /* the next chunk's tile rows and entry states into L2 behind this chunk's walk (its copy
             * is exposed: one buffer). Chunk c - 1 is a whole one: its rows are in range */
            size_t r0 = (size_t)b * n + (size_t)(c - 1) * L + lane;
#pragma unroll
            for (int v = 0; v < 4; v++)
                if (lane < L) sr_pf_l2(src.p[v] + r0 * E + e0);
            if (lane < SP_C && e0 + lane < E) sr_pf_l2(hsb + (size_t)(c - 1) * E * S + (size_t)(e0 + lane) * S);
        }
        const float *H0 = hsb + (size_t)c * E * S + (size_t)ec * S + s0;  /* this half's entry state */
        auto h0 = [&](int i) { return h4 ? sr_f4(H0, i) : i < Sh ? H0[i] : 0.f; };
        auto Bq = [&](int j, int q) { return sr_bc4<true, S16>(nullptr, Bg + (size_t)(t0 + j) * S, Sh, q); };
        auto Cq = [&](int j, int q) { return sr_bc4<true, S16>(nullptr, Cg + (size_t)(t0 + j) * S, Sh, q); };
        auto tv = [&](int v, int j) { return tile[(v * SR_T + j) * SP_C + ch]; };
        /* 1. pass over the chunk: softplus(dt) over dt_raw, the sub-chunks' entry states */
        {
            float h[8];
#pragma unroll
            for (int i = 0; i < 8; i++) h[i] = h0(i);
#pragma unroll 4
            for (int j = 0; j < tl; j++) {
                float dt = DN ? tv(0, j) : softplusf_(tv(0, j)), dt2 = dt * SCAN_DECAY_SCALE, dtx = dt * tv(1, j);
                if constexpr (!DN) {
                    __syncwarp();  /* both lanes of the pair have read dt_raw of step j */
                    if (!hf) tile[j * SP_C + ch] = dt;
                }
#pragma unroll
                for (int q = 0; q < 2; q++) {
                    float4 bq = Bq(j, q);
                    float bv[4] = {bq.x, bq.y, bq.z, bq.w};
#pragma unroll
                    for (int i = 0; i < 4; i++) h[4 * q + i] = fmaf(scan_decay(dt2 * A[4 * q + i]), h[4 * q + i], dtx * bv[i]);
                }
                if ((j + 1) % SR_LS == 0 && j + 1 < tl) {
                    float *hk = hsub + ((j + 1) / SR_LS - 1) * 8 * 32 + lane;
#pragma unroll
                    for (int i = 0; i < 8; i++) hk[i * 32] = h[i];
                }
            }
        }
        __syncwarp();  /* softplus(dt) and the sub-chunk states visible to the pair */
        /* 2. the sub-chunks, last first */
        for (int k = (tl - 1) / SR_LS; k >= 0; k--) {
            int js = k * SR_LS, je = min(js + SR_LS, tl);
            const float *hin = hsub + (k - 1) * 8 * 32 + lane;  /* k > 0: its entry state, stride 32 */
            auto hentry = [&](int i) { return k ? hin[i * 32] : h0(i); };
            {   /* into L1 ahead of use: this sub-chunk's C rows and the previous sub-chunk's B rows */
                int j = lane < 4 ? js + lane : js - SR_LS + (lane - 4);
                if (lane < 4 ? j < je : lane < 8 && k > 0) sr_pf_l1((lane < 4 ? Cm : Bm) + ((size_t)b * n + t0 + j) * S);
            }
            float hr[SR_LS][8];
            {
                float h[8];
#pragma unroll
                for (int i = 0; i < 8; i++) h[i] = hentry(i);
#pragma unroll
                for (int jj = 0; jj < SR_LS; jj++) {
                    if (js + jj < je) {
                        int j = js + jj;
                        float dt = tv(0, j), dt2 = dt * SCAN_DECAY_SCALE, dtx = dt * tv(1, j);
#pragma unroll
                        for (int q = 0; q < 2; q++) {
                            float4 bq = Bq(j, q);
                            float bv[4] = {bq.x, bq.y, bq.z, bq.w};
#pragma unroll
                            for (int i = 0; i < 4; i++) {
                                int s = 4 * q + i;
                                h[s] = fmaf(scan_decay(dt2 * A[s]), h[s], dtx * bv[i]);
                                hr[jj][s] = h[s];
                            }
                        }
                    }
                }
            }
            float spp[SR_LS], sP[SR_LS], sQ[SR_LS];  /* DN: the pair's sums of each step */
#pragma unroll
            for (int jj = 0; jj < SR_LS; jj++) spp[jj] = sP[jj] = sQ[jj] = 0.f;
#pragma unroll
            for (int jj = SR_LS - 1; jj >= 0; jj--) {
                if (js + jj < je) {  /* V2's walk on 8 states */
                    int j = js + jj, t = t0 + j;
                    float dt = tv(0, j), xv = tv(1, j), dyv = DN ? 0.f : tv(2, j), zv = DN ? 0.f : tv(3, j);
                    float dt2 = dt * SCAN_DECAY_SCALE, dtx = dt * xv;
                    float sg = DN ? 0.f : sigmoidf_(zv), dyy = DN ? tv(2, j) : dyv * zv * sg;
                    float pp[2] = {0.f, 0.f}, P[2] = {0.f, 0.f}, Q[2] = {0.f, 0.f};
                    float r1[8], r2[4], r3[2], v = 0.f;
                    int up = (lane & 16) ? -1 : 0, m8 = (lane & 8) ? -1 : 0, m4 = (lane & 4) ? -1 : 0;
                    int m2 = (lane & 2) ? -1 : 0;
#pragma unroll
                    for (int q = 0; q < 2; q++) {
                        float4 bq = Bq(j, q), cq = Cq(j, q);
                        float bv[4] = {bq.x, bq.y, bq.z, bq.w}, cv[4] = {cq.x, cq.y, cq.z, cq.w};
#pragma unroll
                        for (int i = 0; i < 4; i++) {
                            int s = 4 * q + i, o = s & 1;
                            float ht = hr[jj][s], hp = jj ? hr[jj > 0 ? jj - 1 : 0][s] : hentry(s);
                            float a = scan_decay(dt2 * A[s]);
                            pp[o] = fmaf(cv[i], ht, pp[o]);
                            dh[s] = fmaf(cv[i], dyy, dh[s]);
                            P[o] = fmaf(dh[s], bv[i], P[o]);
                            float vB = dh[s] * dtx, vC = dyy * ht;
                            dh[s] *= a;  /* on to h_{t-1} */
                            float w = dh[s] * hp;
                            dA[s] = fmaf(w, dt, dA[s]);
                            Q[o] = fmaf(w, A[s], Q[o]);
                            /* the reduce-scatter over the 16 channels (lane bits 4..1), each exchange
                             * as soon as its operands exist */
                            r1[s] = sr_xchg(vB, vC, up, 16);
                            if (s >= 4) r2[s - 4] = sr_xchg(r1[s - 4], r1[s], m8, 8);
                            if (s >= 6) r3[s - 6] = sr_xchg(r2[s - 6], r2[s - 4], m4, 4);
                            if (s == 7) v = sr_xchg(r3[0], r3[1], m2, 2);
                        }
                    }
                    /* lane l: dB (l < 16) or dC of state 8 (l & 1) + ((l >> 1) & 7), over the 16 channels */
                    float *dst = up ? dCm : dBm;
                    int si = s0 + ((lane >> 1) & 7);
                    if (dst && si < S) atomicAdd(&dst[((size_t)b * n + t) * S + si], v);
                    /* the pair's sums over the 16 states (a + b == b + a: both lanes hold the same) */
                    float pps = pp[0] + pp[1], Ps = P[0] + P[1], Qs = Q[0] + Q[1];
                    pps += __shfl_xor_sync(0xffffffffu, pps, 1);
                    Ps += __shfl_xor_sync(0xffffffffu, Ps, 1);
                    Qs += __shfl_xor_sync(0xffffffffu, Qs, 1);
                    if constexpr (DN) {
                        spp[jj] = pps, sP[jj] = Ps, sQ[jj] = Qs;
                    } else if (live && !hf) {
                        size_t im = ((size_t)b * n + t) * E + e;
                        float gz = dyv * (pps + De * xv) * sg * (1.f + zv * (1.f - sg));
                        float gx = fmaf(dt, Ps, De * dyy);
                        float gdt = fmaf(xv, Ps, Qs) * -expm1f(-dt);  /* sigmoid(dt_raw) = 1 - exp(-dt) */
                        if (dz) dz[im] = acc ? dz[im] + gz : gz;
                        if (dx) dx[im] = acc ? dx[im] + gx : gx;
                        if (ddt_raw) ddt_raw[im] = acc ? ddt_raw[im] + gdt : gdt;
                        dDacc += dyy * xv;
                    }
                }
            }
            if constexpr (DN) {  /* the sub-chunk's outputs: lane 2c + h takes steps js + h + 2m of channel c */
                int hm = hf ? -1 : 0;
#pragma unroll
                for (int m = 0; 2 * m < SR_LS; m++) {
                    int j = js + hf + 2 * m;
                    float pps = sr_pick(spp[2 * m], spp[2 * m + 1], hm), Ps = sr_pick(sP[2 * m], sP[2 * m + 1], hm);
                    float Qs = sr_pick(sQ[2 * m], sQ[2 * m + 1], hm);
                    if (live && j < je) {
                        size_t im = ((size_t)b * n + t0 + j) * E + e;
                        float dt = tv(0, j), xv = tv(1, j), dyy = tv(2, j), gzf = tv(3, j);
                        float gz = gzf * fmaf(De, xv, pps);
                        float gx = fmaf(dt, Ps, De * dyy);
                        float gdt = fmaf(xv, Ps, Qs) * -expm1f(-dt);  /* sigmoid(dt_raw) = 1 - exp(-dt) */
                        if (dz) dz[im] = acc ? dz[im] + gz : gz;
                        if (dx) dx[im] = acc ? dx[im] + gx : gx;
                        if (ddt_raw) ddt_raw[im] = acc ? ddt_raw[im] + gdt : gdt;
                    }
                }
            }
        }
        __syncwarp();  /* the tile is refilled by the next chunk's copy */
    }
    if (dA_log && live) {  /* A = -exp(A_log): dA_log = dA A */
#pragma unroll
        for (int i = 0; i < 8; i++)
            if (i < Sh) atomicAdd(&dA_log[(size_t)e * S + s0 + i], dA[i] * A[i]);
    }
    if constexpr (DN) {  /* lanes l and l ^ 16 summed channel e0 + (l & 15)'s steps */
        dDacc += __shfl_xor_sync(0xffffffffu, dDacc, 16);
        if (dD && lane < 16 && e0 + lane < E) atomicAdd(&dD[e0 + lane], dDacc);
    } else if (dD && live && !hf) atomicAdd(&dD[e], dDacc);
}
