/* selective_scan.cu - Mamba-1 selective scan fused with softplus(dt), the D
 * skip and the SiLU(z) gate (contract in ops.h).
 *
 * FIRST VERSION, to be replaced by a chunked parallel scan: one warp per
 * (batch, channel e) walks the sequence in order; lane l holds states
 * s = l, l+32, l+64, l+96 (so S <= 128) in registers, and sums over s are
 * warp shuffles. The backward walks time in reverse, reading h_t and h_{t-1}
 * from the saved hs; dBm/dCm (shared by all channels) and dA_log/dD (shared
 * by the batch) are added with atomics.
 * Backward, with dyy = dy silu(z) and dh_t = Cm_t dyy + a_{t+1} dh_{t+1}:
 *   dx += sum_s dh dt Bm + D dyy;  ddt = sum_s dh (A a h_{t-1} + Bm x);
 *   dA  += dh dt a h_{t-1};        dBm += dh dt x;  dCm += dyy h_t. */
#include "common.cuh"

#define SCAN_SPL 4  /* states per lane */
#define SCAN_WARPS 4

__global__ void scan_fwd_kernel(float *y, float *hs, const float *x, const float *dt_raw, const float *A_log,
                                const float *Bm, const float *Cm, const float *D, const float *z, int B, int n,
                                int E, int S) {
    int w = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (w >= B * E) return;  /* whole warps exit together */
    int b = w / E, e = w % E;
    float A[SCAN_SPL], h[SCAN_SPL];
#pragma unroll
    for (int k = 0; k < SCAN_SPL; k++) {
        int s = lane + 32 * k;
        A[k] = s < S ? -expf(A_log[(size_t)e * S + s]) : 0.f;
        h[k] = 0.f;
    }
    for (int t = 0; t < n; t++) {
        size_t bt = (size_t)b * n + t, be = bt * E + e;
        float dt = softplusf_(dt_raw[be]), xv = x[be], acc = 0.f;
#pragma unroll
        for (int k = 0; k < SCAN_SPL; k++) {
            int s = lane + 32 * k;
            if (s < S) {
                h[k] = expf(dt * A[k]) * h[k] + dt * Bm[bt * S + s] * xv;
                hs[be * S + s] = h[k];
                acc += Cm[bt * S + s] * h[k];
            }
        }
        acc = warp_sum(acc);
        if (lane == 0) {
            float zv = z[be];
            y[be] = (acc + D[e] * xv) * zv * sigmoidf_(zv);
        }
    }
}

__global__ void scan_bwd_kernel(float *dx, float *ddt_raw, float *dA_log, float *dBm, float *dCm, float *dD,
                                float *dz, const float *dy, const float *hs, const float *x, const float *dt_raw,
                                const float *A_log, const float *Bm, const float *Cm, const float *D,
                                const float *z, int B, int n, int E, int S) {
    int w = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (w >= B * E) return;
    int b = w / E, e = w % E;
    float A[SCAN_SPL], dh[SCAN_SPL], dA[SCAN_SPL];
#pragma unroll
    for (int k = 0; k < SCAN_SPL; k++) {
        int s = lane + 32 * k;
        A[k] = s < S ? -expf(A_log[(size_t)e * S + s]) : 0.f;
        dh[k] = dA[k] = 0.f;
    }
    float De = D[e], dD_acc = 0.f;
    for (int t = n - 1; t >= 0; t--) {
        size_t bt = (size_t)b * n + t, be = bt * E + e;
        float dtr = dt_raw[be], dt = softplusf_(dtr), xv = x[be], zv = z[be], dyv = dy[be];
        float sg = sigmoidf_(zv), sz = zv * sg, dyy = dyv * sz;
        float part = 0.f;
#pragma unroll
        for (int k = 0; k < SCAN_SPL; k++) {
            int s = lane + 32 * k;
            if (s < S) part += Cm[bt * S + s] * hs[be * S + s];
        }
        float yy = warp_sum(part) + De * xv;  /* the gate's input, rebuilt */
        float dxp = 0.f, ddtp = 0.f;
#pragma unroll
        for (int k = 0; k < SCAN_SPL; k++) {
            int s = lane + 32 * k;
            if (s < S) {
                float ht = hs[be * S + s], hprev = t > 0 ? hs[(be - E) * S + s] : 0.f;
                float a = expf(dt * A[k]), Bv = Bm[bt * S + s];
                dh[k] += Cm[bt * S + s] * dyy;
                if (dCm) atomicAdd(&dCm[bt * S + s], dyy * ht);
                if (dBm) atomicAdd(&dBm[bt * S + s], dh[k] * dt * xv);
                dxp += dh[k] * dt * Bv;
                ddtp += dh[k] * (A[k] * a * hprev + Bv * xv);
                dA[k] += dh[k] * dt * a * hprev;
                dh[k] *= a;  /* on to h_{t-1} */
            }
        }
        dxp = warp_sum(dxp);
        ddtp = warp_sum(ddtp);
        if (lane == 0) {
            if (dx) dx[be] += dxp + De * dyy;
            if (ddt_raw) ddt_raw[be] += ddtp * sigmoidf_(dtr);  /* softplus' = sigmoid */
            if (dz) dz[be] += dyv * yy * sg * (1.f + zv * (1.f - sg));
            dD_acc += dyy * xv;
        }
    }
    if (dA_log) {  /* A = -exp(A_log): dA_log = dA A */
#pragma unroll
        for (int k = 0; k < SCAN_SPL; k++) {
            int s = lane + 32 * k;
            if (s < S) atomicAdd(&dA_log[(size_t)e * S + s], dA[k] * A[k]);
        }
    }
    if (dD && lane == 0) atomicAdd(&dD[e], dD_acc);
}

static int scan_shape_ok(int S, const char *what) {
    if (S <= 32 * SCAN_SPL) return 0;
    cuda_record_error(what, "d_state > 128 is not supported by the first-version scan kernel", __FILE__, __LINE__);
    return -1;
}

void cuda_selective_scan_fwd(real *y, real *hs, const real *x, const real *dt_raw, const real *A_log,
                             const real *Bm, const real *Cm, const real *D, const real *z, int B, int n, int E,
                             int S) {
    if (B <= 0 || n <= 0 || E <= 0 || scan_shape_ok(S, "selective_scan_fwd")) return;
    size_t threads = (size_t)B * E * 32;
    scan_fwd_kernel<<<blocks_for(threads, 32 * SCAN_WARPS), 32 * SCAN_WARPS>>>(y, hs, x, dt_raw, A_log, Bm, Cm, D,
                                                                               z, B, n, E, S);
    CUDA_LAUNCHED();
    fh_count_macs((uint64_t)3 * n * E * S * B);
}

void cuda_selective_scan_bwd(real *dx, real *ddt_raw, real *dA_log, real *dBm, real *dCm, real *dD, real *dz,
                             const real *dy, const real *hs, const real *x, const real *dt_raw, const real *A_log,
                             const real *Bm, const real *Cm, const real *D, const real *z, int B, int n, int E,
                             int S) {
    if (B <= 0 || n <= 0 || E <= 0 || scan_shape_ok(S, "selective_scan_bwd")) return;
    size_t threads = (size_t)B * E * 32;
    scan_bwd_kernel<<<blocks_for(threads, 32 * SCAN_WARPS), 32 * SCAN_WARPS>>>(
        dx, ddt_raw, dA_log, dBm, dCm, dD, dz, dy, hs, x, dt_raw, A_log, Bm, Cm, D, z, B, n, E, S);
    CUDA_LAUNCHED();
}
