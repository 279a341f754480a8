/* ssd_recurrent.cu - the Mamba-2 SSD by the plain recurrence, for chunk sizes
 * the chunked kernels of ssd.cu do not tile (L > 64; d_state <= 128 here).
 * Same contract as ssd_fwd/ssd_bwd in ops.h.
 *
 * One warp per (batch, head, p) runs the recurrence over time; lane l holds
 * state columns s = l, l+32, l+64, l+96 in registers.
 *   dt = softplus(dt_raw + dt_bias), a = exp(dt * -exp(A_log))
 *   h_t[p,:] = a h_{t-1}[p,:] + dt x_t[p] Bm_t;   y_t[p] = h_t[p,:].Cm_t + D x_t[p]
 * states[b, c] is the state entering chunk c (after c*L tokens); states[b,
 * nchunks] is the final state. The backward walks chunks in reverse and, for
 * each token, rebuilds h_{t-1} from the chunk's saved state (O(L) steps per
 * token: quadratic in L, slow but only used off the configs' chunk sizes).
 * Gradients shared across warps (Bm, Cm over heads and p; dt over p; the
 * per-head parameters over the batch) use atomics. */
#include "common.cuh"

#define SSD_SPL 4  /* state columns per lane */
#define SSD_WARPS 4

struct RecDims {
    int B, n, nh, P, G, N, L, E, W, nch;  /* E = nh*P; W = E + 2*G*N (xbc row width) */
};

__device__ __forceinline__ size_t rec_state_index(const RecDims &d, int b, int c, int h, int p, int s) {
    return ((((size_t)b * (d.nch + 1) + c) * d.nh + h) * d.P + p) * d.N + s;
}

__global__ void ssd_rec_fwd_kernel(float *y, float *states, const float *xbc, const float *dt_raw,
                               const float *dt_bias, const float *A_log, const float *D, RecDims d) {
    int w = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (w >= d.B * d.nh * d.P) return;
    int p = w % d.P, h = (w / d.P) % d.nh, b = w / (d.P * d.nh), g = h / (d.nh / d.G);
    float Aneg = -expf(A_log[h]), bias = dt_bias[h], Dh = D[h];
    float st[SSD_SPL];
#pragma unroll
    for (int k = 0; k < SSD_SPL; k++) st[k] = 0.f;
    for (int t = 0; t < d.n; t++) {
        const float *row = xbc + ((size_t)b * d.n + t) * d.W;
        const float *Bt = row + d.E + g * d.N, *Ct = row + d.E + d.G * d.N + g * d.N;
        if (t % d.L == 0) {
#pragma unroll
            for (int k = 0; k < SSD_SPL; k++) {
                int s = lane + 32 * k;
                if (s < d.N) states[rec_state_index(d, b, t / d.L, h, p, s)] = st[k];
            }
        }
        float dt = softplusf_(dt_raw[((size_t)b * d.n + t) * d.nh + h] + bias), a = expf(dt * Aneg);
        float xv = row[h * d.P + p], acc = 0.f;
#pragma unroll
        for (int k = 0; k < SSD_SPL; k++) {
            int s = lane + 32 * k;
            if (s < d.N) {
                st[k] = a * st[k] + dt * xv * Bt[s];
                acc += st[k] * Ct[s];
            }
        }
        acc = warp_sum(acc);
        if (lane == 0) y[((size_t)b * d.n + t) * d.E + h * d.P + p] = acc + Dh * xv;
    }
#pragma unroll
    for (int k = 0; k < SSD_SPL; k++) {
        int s = lane + 32 * k;
        if (s < d.N) states[rec_state_index(d, b, d.nch, h, p, s)] = st[k];
    }
}

__global__ void ssd_rec_bwd_kernel(float *dxbc, float *ddt_raw, float *ddt_bias, float *dA_log, float *dD,
                               const float *dy, const float *states, const float *xbc, const float *dt_raw,
                               const float *dt_bias, const float *A_log, const float *D, RecDims d) {
    int w = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (w >= d.B * d.nh * d.P) return;
    int p = w % d.P, h = (w / d.P) % d.nh, b = w / (d.P * d.nh), g = h / (d.nh / d.G);
    float Aneg = -expf(A_log[h]), bias = dt_bias[h], Dh = D[h];
    float dh[SSD_SPL], hp[SSD_SPL];
#pragma unroll
    for (int k = 0; k < SSD_SPL; k++) dh[k] = 0.f;
    float dA_acc = 0.f, dbias_acc = 0.f, dD_acc = 0.f;  /* lane 0's sums over time */
    for (int c = d.nch - 1; c >= 0; c--) {
        int t0 = c * d.L, t1 = min(d.n, t0 + d.L);
        for (int t = t1 - 1; t >= t0; t--) {
            /* h_{t-1}: the chunk's entering state, stepped to t-1 */
#pragma unroll
            for (int k = 0; k < SSD_SPL; k++) {
                int s = lane + 32 * k;
                hp[k] = s < d.N ? states[rec_state_index(d, b, c, h, p, s)] : 0.f;
            }
            for (int u = t0; u < t; u++) {
                const float *ru = xbc + ((size_t)b * d.n + u) * d.W;
                float dtu = softplusf_(dt_raw[((size_t)b * d.n + u) * d.nh + h] + bias), au = expf(dtu * Aneg);
                float xu = ru[h * d.P + p];
#pragma unroll
                for (int k = 0; k < SSD_SPL; k++) {
                    int s = lane + 32 * k;
                    if (s < d.N) hp[k] = au * hp[k] + dtu * xu * ru[d.E + g * d.N + s];
                }
            }
            size_t rt = (size_t)b * d.n + t;
            const float *row = xbc + rt * d.W;
            const float *Bt = row + d.E + g * d.N, *Ct = row + d.E + d.G * d.N + g * d.N;
            float dtr = dt_raw[rt * d.nh + h] + bias, dt = softplusf_(dtr), a = expf(dt * Aneg);
            float xv = row[h * d.P + p], dyv = dy[rt * d.E + h * d.P + p];
            float dxp = 0.f, ddtp = 0.f, dap = 0.f;
#pragma unroll
            for (int k = 0; k < SSD_SPL; k++) {
                int s = lane + 32 * k;
                if (s < d.N) {
                    float ht = a * hp[k] + dt * xv * Bt[s];
                    dh[k] += dyv * Ct[s];
                    if (dxbc) {
                        atomicAdd(&dxbc[rt * d.W + d.E + d.G * d.N + g * d.N + s], dyv * ht);
                        atomicAdd(&dxbc[rt * d.W + d.E + g * d.N + s], dh[k] * dt * xv);
                    }
                    dxp += dh[k] * dt * Bt[s];
                    ddtp += dh[k] * xv * Bt[s];
                    dap += dh[k] * hp[k];
                    dh[k] *= a;  /* on to h_{t-1} */
                }
            }
            dxp = warp_sum(dxp);
            ddtp = warp_sum(ddtp);
            dap = warp_sum(dap);
            if (lane == 0) {
                /* da/ddt = a Aneg; softplus' = sigmoid */
                float gdt = (ddtp + dap * a * Aneg) * sigmoidf_(dtr);
                if (dxbc) dxbc[rt * d.W + h * d.P + p] += dxp + Dh * dyv;
                if (ddt_raw) atomicAdd(&ddt_raw[rt * d.nh + h], gdt);
                dbias_acc += gdt;
                dA_acc += dap * a * dt;
                dD_acc += dyv * xv;
            }
        }
    }
    if (lane == 0) {
        if (ddt_bias) atomicAdd(&ddt_bias[h], dbias_acc);
        if (dA_log) atomicAdd(&dA_log[h], dA_acc * Aneg);  /* dA_log = dA A */
        if (dD) atomicAdd(&dD[h], dD_acc);
    }
}

/* 0, or -1 (error recorded) where d_state is over what the lanes hold */
int ssd_recurrent_fwd(real *y, real *states, const real *xbc, const real *dt_raw, const real *dt_bias,
                      const real *A_log, const real *D, int B, int n, int nh, int P, int G, int N, int L) {
    if (N > 32 * SSD_SPL) {
        cuda_record_error("ssd_fwd", "chunk size > 64 with d_state > 128 is not supported", __FILE__, __LINE__);
        return -1;
    }
    RecDims d = {B, n, nh, P, G, N, L, nh * P, nh * P + 2 * G * N, (n + L - 1) / L};
    size_t threads = (size_t)B * nh * P * 32;
    ssd_rec_fwd_kernel<<<blocks_for(threads, 32 * SSD_WARPS), 32 * SSD_WARPS, 0, cuda_stream()>>>(
        y, states, xbc, dt_raw, dt_bias, A_log, D, d);
    CUDA_LAUNCHED();
    return 0;
}

int ssd_recurrent_bwd(real *dxbc, real *ddt_raw, real *ddt_bias, real *dA_log, real *dD, const real *dy,
                      const real *states, const real *xbc, const real *dt_raw, const real *dt_bias, const real *A_log,
                      const real *D, int B, int n, int nh, int P, int G, int N, int L) {
    if (N > 32 * SSD_SPL) {
        cuda_record_error("ssd_bwd", "chunk size > 64 with d_state > 128 is not supported", __FILE__, __LINE__);
        return -1;
    }
    RecDims d = {B, n, nh, P, G, N, L, nh * P, nh * P + 2 * G * N, (n + L - 1) / L};
    size_t threads = (size_t)B * nh * P * 32;
    ssd_rec_bwd_kernel<<<blocks_for(threads, 32 * SSD_WARPS), 32 * SSD_WARPS, 0, cuda_stream()>>>(
        dxbc, ddt_raw, ddt_bias, dA_log, dD, dy, states, xbc, dt_raw, dt_bias, A_log, D, d);
    CUDA_LAUNCHED();
    return 0;
}
