/* ssm_step.cu - one-token Mamba-1 / Mamba-2 state updates for generation
 * (contracts in ops.h). One warp per state row: Mamba-1 a (batch, channel)
 * row of S states, Mamba-2 a (batch, head, p) row of N states; lanes stride
 * over the states and the output's sum over them is a warp shuffle. */
#include "common.cuh"

#define STEP_WARPS 4

__global__ void scan_step_kernel(float *y, float *h, const float *x, const float *dt_raw, const float *A_log,
                                 const float *Bm, const float *Cm, const float *D, const float *z, int B, int E,
                                 int S) {
    pdl_wait();   /* PDL (common.cuh): nothing read or written before the predecessor is done */
    pdl_trigger();
    int w = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (w >= B * E) return; /* whole warps exit together */
    int b = w / E, e = w % E;
    float dt = softplusf_(dt_raw[w]), xv = x[w], acc = 0.f;
    float *hs = h + (size_t)w * S;
    for (int s = lane; s < S; s += 32) {
        float a = -expf(A_log[(size_t)e * S + s]);
        float hv = expf(dt * a) * hs[s] + dt * Bm[(size_t)b * S + s] * xv;
        hs[s] = hv;
        acc += Cm[(size_t)b * S + s] * hv;
    }
    acc = warp_sum(acc);
    if (lane == 0) y[w] = (acc + D[e] * xv) * z[w] * sigmoidf_(z[w]);
}

__global__ void ssd_step_kernel(float *y, float *h, const float *xbc, const float *dt_raw, const float *dt_bias,
                                const float *A_log, const float *D, int B, int nh, int P, int G, int N) {
    pdl_wait();   /* PDL (common.cuh): nothing read or written before the predecessor is done */
    pdl_trigger();
    int w = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (w >= B * nh * P) return;
    int p = w % P, hd = (w / P) % nh, b = w / (P * nh);
    int E = nh * P, g = hd / (nh / G);
    const float *row = xbc + (size_t)b * (E + 2 * G * N);
    const float *Bv = row + E + (size_t)g * N, *Cv = row + E + (size_t)G * N + (size_t)g * N;
    float dt = softplusf_(dt_raw[(size_t)b * nh + hd] + dt_bias[hd]);
    float decay = expf(-dt * expf(A_log[hd])), xv = row[(size_t)hd * P + p], acc = 0.f;
    float *hs = h + (size_t)w * N;
    for (int n = lane; n < N; n += 32) {
        float hv = decay * hs[n] + dt * xv * Bv[n];
        hs[n] = hv;
        acc += hv * Cv[n];
    }
    acc = warp_sum(acc);
    if (lane == 0) y[(size_t)b * E + (size_t)hd * P + p] = acc + D[hd] * xv;
}

void cuda_selective_scan_step(real *y, real *h, const real *x, const real *dt_raw, const real *A_log,
                              const real *Bm, const real *Cm, const real *D, const real *z, int B, int E, int S) {
    if (B <= 0 || E <= 0 || S <= 0) return;
    size_t threads = (size_t)B * E * 32;
    cuda_launch(true, scan_step_kernel, dim3(blocks_for(threads, 32 * STEP_WARPS)), dim3(32 * STEP_WARPS), 0, y, h, x,
                dt_raw, A_log, Bm, Cm, D, z, B, E, S);
    fh_count_macs(3ull * B * E * S);
}

void cuda_ssd_step(real *y, real *h, const real *xbc, const real *dt_raw, const real *dt_bias, const real *A_log,
                   const real *D, int B, int nh, int P, int G, int N) {
    if (B <= 0 || nh <= 0 || P <= 0 || N <= 0) return;
    size_t threads = (size_t)B * nh * P * 32;
    cuda_launch(true, ssd_step_kernel, dim3(blocks_for(threads, 32 * STEP_WARPS)), dim3(32 * STEP_WARPS), 0, y, h, xbc,
                dt_raw, dt_bias, A_log, D, B, nh, P, G, N);
    fh_count_macs(3ull * B * nh * P * N);
}
