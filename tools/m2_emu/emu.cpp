/* emu.cpp - the conv1d (conv1d_kernels.cuh) and gated RMSNorm
 * (gated_rmsnorm_kernels.cuh) CUDA kernels run on the CPU, for checking their
 * indexing, windows, barriers and reductions where no GPU is at hand (no
 * substitute for tests/cuda/test_cuda.cu on a GPU). A launch runs a block's
 * threads as OS threads with a real barrier for __syncthreads and per-warp
 * barriers for the shuffles, the blocks one after another; __shared__ arrays
 * become statics (one block at a time). Every result is compared with the CPU
 * op (src/ops/cpu) at relative L2 1e-5 (test_cuda's fp32 bound). See run.sh. */
#include <pthread.h>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <atomic>
#include <functional>
#include <thread>
#include <vector>
using std::min;
extern "C" {
void cpu_conv1d_fwd(float *out, const float *x, const float *w, const float *b, int B, int n, int C, int K);
void cpu_conv1d_bwd(float *dx, float *dw, float *db, const float *dout, const float *x, const float *w, int B, int n,
                    int C, int K, int acc);
void cpu_conv1d_silu_fwd(float *out, const float *x, const float *w, const float *b, int B, int n, int C, int K,
                         int ldx);
void cpu_conv1d_silu_bwd(float *dx, float *dw, float *db, const float *dout, const float *x, const float *w,
                         const float *b, int B, int n, int C, int K, int acc, int ldx);
void cpu_gated_rmsnorm_fwd(float *out, float *rstd, const float *y, const float *z, const float *w, int N, int C,
                           float eps, int ldz);
void cpu_gated_rmsnorm_bwd(float *dy, float *dz, float *dw, const float *dout, const float *y, const float *z,
                           const float *w, const float *rstd, int N, int C, int acc, int ldz);
}
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct float4 { float x, y, z, w; };
static inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
thread_local dim3 threadIdx, blockIdx;
static dim3 blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
template <class T> static inline T __ldg(const T *p) { return *p; }
static pthread_barrier_t g_bar, w_bar[32];
static void __syncthreads() { pthread_barrier_wait(&g_bar); }
static float g_shfl[1024];
static float __shfl_xor_sync(unsigned, float v, int o) {
    int t = threadIdx.x + threadIdx.y * blockDim.x, w = t >> 5;
    g_shfl[t] = v;
    pthread_barrier_wait(&w_bar[w]);
    float r = g_shfl[t ^ o];
    pthread_barrier_wait(&w_bar[w]);
    return r;
}
static inline float warp_sum(float v) { for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o); return v; }
/* common.cuh's block_sum */
static inline float block_sum(float v, float *sh) {
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v); __syncthreads(); if (lane == 0) sh[wid] = v; __syncthreads();
    v = lane < nw ? sh[lane] : 0.f; return warp_sum(v);
}
static inline float sigmoidf_(float x) { return 1.f / (1.f + expf(-x)); }
/* common.cuh's PDL hooks (decode graphs only): nothing to wait for here */
static inline void pdl_wait() {}
static inline void pdl_trigger() {}
static inline float rsqrtf(float x) { return 1.f / sqrtf(x); }
/* cuda_bf16.h's type and round-to-nearest-even conversion (finite values) */
struct __nv_bfloat16 { uint16_t x; };
static inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t u; memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return __nv_bfloat16{(uint16_t)(u >> 16)};
}
static inline float bf16_to_float(__nv_bfloat16 h) { uint32_t u = (uint32_t)h.x << 16; float f; memcpy(&f, &u, 4); return f; }
/* conv1d_kernels.cuh's L2 prefetches: each address must lie inside one of the
 * tensors the kernel reads (set per launch; a miss counts as a failure) */
static const float *pf_lo[2], *pf_hi[2];
static std::atomic<long> pf_count{0}, pf_bad{0};
static void conv_prefetch_seen(const float *p) {
    pf_count++;
    bool in = false;
    for (int i = 0; i < 2; i++) in |= pf_lo[i] && p >= pf_lo[i] && p < pf_hi[i];
    if (!in) pf_bad++;
}

/* conv1d_kernels.cuh's cp.async rings: a copy is queued with its commit group
 * and lands only when a wait_group needs it (the latest the GPU may land it),
 * so a read of a slot before its wait sees the old bytes (another row's, or
 * another block's: a wrong value); its source is bounds-checked as the prefetches'
 * are. A copy still queued when the thread ends was never waited for: a
 * failure (cp_left). */
struct CpCopy { float *dst; const float *src; int n; long group; };
thread_local std::vector<CpCopy> cp_q;
thread_local long cp_committed;
static std::atomic<long> cp_count{0}, cp_left{0};
static void conv_cp_async(float *dst, const float *src, int n) {
    for (int v = 0; v < n; v++) conv_prefetch_seen(src + v);
    cp_q.push_back({dst, src, n, cp_committed});
    cp_count++;
}
static void conv_cp_commit() { cp_committed++; }
static void conv_cp_wait(int n) {   /* groups [0, cp_committed - n) land */
    std::vector<CpCopy> keep;
    for (auto &c : cp_q)
        if (c.group < cp_committed - n) memcpy(c.dst, c.src, sizeof(float) * c.n);
        else keep.push_back(c);
    cp_q.swap(keep);
}
/* at a thread's end (launch): copies never waited for */
static void conv_cp_end() {
    cp_left += (long)cp_q.size();
    cp_q.clear();
    cp_committed = 0;
}

#include "../../src/ops/cuda/conv1d_kernels.cuh"
#include "../../src/ops/cuda/gated_rmsnorm_kernels.cuh"

/* runs f() as kernel<<<grid, block>>>: blockDim threads, the blocks in order */
static void launch(dim3 grid, dim3 block, const std::function<void()> &f) {
    gridDim = grid; blockDim = block;
    int nt = block.x * block.y;
    pthread_barrier_init(&g_bar, NULL, nt);
    for (int w = 0; w < (nt + 31) / 32; w++) pthread_barrier_init(&w_bar[w], NULL, std::min(32, nt - 32 * w));
    std::vector<std::thread> th;
    for (int t = 0; t < nt; t++)
        th.emplace_back([&, t] {
            threadIdx = dim3(t % block.x, t / block.x);
            for (unsigned by = 0; by < grid.y; by++)
                for (unsigned bx = 0; bx < grid.x; bx++) {
                    blockIdx = dim3(bx, by);
                    f();
                    conv_cp_end();
                    pthread_barrier_wait(&g_bar);  /* the block is done before the next reuses shared memory */
                }
        });
    for (auto &t : th) t.join();
    pthread_barrier_destroy(&g_bar);
    for (int w = 0; w < (nt + 31) / 32; w++) pthread_barrier_destroy(&w_bar[w]);
}
static void launch1d(int nb, int nt, const std::function<void()> &f) { launch(dim3(nb), dim3(nt), f); }

static unsigned rs = 1;
static float frand() { rs = rs * 1103515245u + 12345u; return ((rs >> 8) & 0xffffff) / (float)0x1000000 * 2.f - 1.f; }
static std::vector<float> rnd(size_t n, float sc = 1.f) { std::vector<float> v(n); for (auto &x : v) x = sc * frand(); return v; }
static int fails = 0;
static void cmp(const char *what, const std::vector<float> &a, const std::vector<float> &b) {
    double num = 0, den = 0, mx = 0;
    for (size_t i = 0; i < a.size(); i++) {
        double d = (double)a[i] - b[i];
        if (std::isnan(b[i]) || std::isnan(a[i])) { num = INFINITY; break; }
        num += d * d; den += (double)a[i] * a[i];
        mx = std::max(mx, fabs(d) / (fabs(a[i]) + 1e-3));
    }
    double rel = sqrt(num / (den > 0 ? den : 1));
    bool ok = rel < 1e-5;  /* test_cuda's bound; max rel only shown (sums that cancel) */
    if (!ok) fails++;
    printf("    %-28s rel L2 %.2e max rel %.2e %s\n", what, rel, mx, ok ? "" : "FAILED");
}

/* the ring kernels promise the segment kernels' bits */
static void same_bits(const char *what, const std::vector<float> &a, const std::vector<float> &b) {
    size_t bad = 0;
    for (size_t i = 0; i < a.size(); i++) bad += memcmp(&a[i], &b[i], sizeof(float)) != 0;
    printf("    %-28s %zu of %zu differ %s\n", what, bad, a.size(), bad ? "FAILED" : "");
    if (bad) fails++;
}
/* conv (silu or not), V forced (1 or 4), acc mode; dw/db accumulate into a random start */
template <int KK, int V>
static void conv_case(int B, int n, int C, bool silu, bool bias, int acc) {
    size_t tot = (size_t)B * n * C;
    auto x = rnd(tot, 2.f), w = rnd((size_t)C * KK), b = rnd(C), dout = rnd(tot);
    const float *bp = bias ? b.data() : nullptr;
    std::vector<float> oc(tot), og(tot, NAN);
    if (silu) cpu_conv1d_silu_fwd(oc.data(), x.data(), w.data(), bp, B, n, C, KK, C);
    else cpu_conv1d_fwd(oc.data(), x.data(), w.data(), bp, B, n, C, KK);
    ConvGeom g = conv_geom(B, n, C, V);
    printf("  conv%s K=%d V=%d B=%d n=%d C=%d bias=%d acc=%d: seg %d x %d, grid %u x %u\n", silu ? "+silu" : "", KK, V,
           B, n, C, bias, acc, g.seg, g.nseg, g.grid.x, g.grid.y);
    launch(g.grid, g.block, [&] {
        if (silu) conv_seg_fwd_kernel<KK, V, true, false>(og.data(), x.data(), w.data(), bp, n, C, g.seg, g.nseg, g.nsegs_all, C);
        else conv_seg_fwd_kernel<KK, V, false, false>(og.data(), x.data(), w.data(), bp, n, C, g.seg, g.nseg, g.nsegs_all, C);
    });
    cmp("out", oc, og);
    /* with the prefetches (elem-mamba): the same values, every prefetch inside x */
    std::vector<float> og2(tot, NAN);
    pf_lo[0] = x.data(); pf_hi[0] = x.data() + tot; pf_lo[1] = pf_hi[1] = nullptr;
    long c0 = pf_count, b0 = pf_bad;
    launch(g.grid, g.block, [&] {
        if (silu) conv_seg_fwd_kernel<KK, V, true, true>(og2.data(), x.data(), w.data(), bp, n, C, g.seg, g.nseg, g.nsegs_all, C);
        else conv_seg_fwd_kernel<KK, V, false, true>(og2.data(), x.data(), w.data(), bp, n, C, g.seg, g.nseg, g.nsegs_all, C);
    });
    cmp("out (prefetching)", oc, og2);
    printf("    %-28s %ld, %ld outside x %s\n", "prefetches", pf_count - c0, pf_bad - b0, pf_bad > b0 ? "FAILED" : "");
    if (pf_bad > b0) fails++;
    auto dx0 = rnd(tot), dw0 = rnd((size_t)C * KK), db0 = rnd(C);
    std::vector<float> dxc = acc ? dx0 : std::vector<float>(tot, 0.f), dxg = acc ? dx0 : std::vector<float>(tot, NAN);
    std::vector<float> dwc = dw0, dwg = dw0, dbc = db0, dbg = db0;
    if (silu) cpu_conv1d_silu_bwd(dxc.data(), dwc.data(), dbc.data(), dout.data(), x.data(), w.data(), bp, B, n, C, KK, acc, C);
    else cpu_conv1d_bwd(dxc.data(), dwc.data(), dbc.data(), dout.data(), x.data(), w.data(), B, n, C, KK, acc);
    std::vector<float> part((size_t)g.grid.y * (KK + 1) * C, NAN);
    launch(g.grid, g.block, [&] {
        if (silu)
            conv_seg_bwd_kernel<KK, V, true, false>(dxg.data(), part.data(), dout.data(), x.data(), w.data(), bp, n, C,
                                                    g.seg, g.nseg, g.nsegs_all, acc, nullptr, C);
        else
            conv_seg_bwd_kernel<KK, V, false, false>(dxg.data(), part.data(), dout.data(), x.data(), w.data(), bp, n,
                                                     C, g.seg, g.nseg, g.nsegs_all, acc, nullptr, C);
    });
    int fb = ((KK + 1) * C + 255) / 256;
    launch1d(fb, 256, [&] { conv_seg_finish_kernel(dwg.data(), dbg.data(), part.data(), (int)g.grid.y, C, KK); });
    cmp("dx", dxc, dxg); cmp("dw", dwc, dwg); cmp("db", dbc, dbg);
    /* with the prefetches and dx's bf16 rounding (elem-mamba) */
    std::vector<float> dxg2 = acc ? dx0 : std::vector<float>(tot, NAN), dwg2 = dw0, dbg2 = db0;
    std::vector<float> part2((size_t)g.grid.y * (KK + 1) * C, NAN);
    std::vector<__nv_bfloat16> dxb(tot, __nv_bfloat16{0x7fc0});
    pf_lo[0] = x.data(); pf_hi[0] = x.data() + tot; pf_lo[1] = dout.data(); pf_hi[1] = dout.data() + tot;
    c0 = pf_count; b0 = pf_bad;
    launch(g.grid, g.block, [&] {
        if (silu)
            conv_seg_bwd_kernel<KK, V, true, true>(dxg2.data(), part2.data(), dout.data(), x.data(), w.data(), bp, n,
                                                   C, g.seg, g.nseg, g.nsegs_all, acc, dxb.data(), C);
        else
            conv_seg_bwd_kernel<KK, V, false, true>(dxg2.data(), part2.data(), dout.data(), x.data(), w.data(), bp, n,
                                                    C, g.seg, g.nseg, g.nsegs_all, acc, dxb.data(), C);
    });
    launch1d(fb, 256, [&] { conv_seg_finish_kernel(dwg2.data(), dbg2.data(), part2.data(), (int)g.grid.y, C, KK); });
    cmp("dx (prefetching)", dxc, dxg2); cmp("dw (prefetching)", dwc, dwg2); cmp("db (prefetching)", dbc, dbg2);
    size_t bad = 0;
    for (size_t i = 0; i < tot; i++) bad += __float2bfloat16_rn(dxg2[i]).x != dxb[i].x;
    printf("    %-28s %ld, %ld outside x, dout; dx bf16: %zu of %zu differ %s\n", "prefetches", pf_count - c0,
           pf_bad - b0, bad, tot, (pf_bad > b0 || bad) ? "FAILED" : "");
    if (pf_bad > b0 || bad) fails++;
    /* the ring kernels (conv-bwd): the prefetching kernels' bits, every copy inside x / dout and waited for */
    std::vector<float> og3(tot, NAN);
    pf_lo[0] = x.data(); pf_hi[0] = x.data() + tot; pf_lo[1] = pf_hi[1] = nullptr;
    b0 = pf_bad;
    long q0 = cp_count, l0 = cp_left;
    launch(g.grid, g.block, [&] {
        if (silu) conv_ring_fwd_kernel<KK, V, true>(og3.data(), x.data(), w.data(), bp, n, C, g.seg, g.nseg, g.nsegs_all, C);
        else conv_ring_fwd_kernel<KK, V, false>(og3.data(), x.data(), w.data(), bp, n, C, g.seg, g.nseg, g.nsegs_all, C);
    });
    cmp("out (ring)", oc, og3);
    same_bits("out ring vs prefetching", og2, og3);
    std::vector<float> dxg3 = acc ? dx0 : std::vector<float>(tot, NAN), dwg3 = dw0, dbg3 = db0;
    std::vector<float> part3((size_t)g.grid.y * (KK + 1) * C, NAN);
    std::vector<__nv_bfloat16> dxb3(tot, __nv_bfloat16{0x7fc0});
    pf_lo[1] = dout.data(); pf_hi[1] = dout.data() + tot;
    launch(g.grid, g.block, [&] {
        if (silu)
            conv_ring_bwd_kernel<KK, V, true>(dxg3.data(), part3.data(), dout.data(), x.data(), w.data(), bp, n, C,
                                              g.seg, g.nseg, g.nsegs_all, acc, dxb3.data(), C);
        else
            conv_ring_bwd_kernel<KK, V, false>(dxg3.data(), part3.data(), dout.data(), x.data(), w.data(), bp, n, C,
                                               g.seg, g.nseg, g.nsegs_all, acc, dxb3.data(), C);
    });
    launch1d(fb, 256, [&] { conv_seg_finish_kernel(dwg3.data(), dbg3.data(), part3.data(), (int)g.grid.y, C, KK); });
    cmp("dx (ring)", dxc, dxg3); cmp("dw (ring)", dwc, dwg3); cmp("db (ring)", dbc, dbg3);
    same_bits("dx ring vs prefetching", dxg2, dxg3);
    same_bits("dw ring vs prefetching", dwg2, dwg3);
    bad = 0;
    for (size_t i = 0; i < tot; i++) bad += dxb3[i].x != dxb[i].x;
    printf("    %-28s %ld, %ld outside x, dout, %ld never waited; dx bf16: %zu differ %s\n", "ring copies",
           cp_count - q0, pf_bad - b0, cp_left - l0, bad, (pf_bad > b0 || cp_left > l0 || bad) ? "FAILED" : "");
    if (pf_bad > b0 || cp_left > l0 || bad) fails++;
}

template <int NPT>
static void gnorm_case(int N, int C, int nblk, int acc, int nblk2 = GN_BWD2_BLOCKS) {
    size_t nc = (size_t)N * C;
    auto y = rnd(nc), z = rnd(nc, 2.f), w = rnd(C), dout = rnd(nc);
    for (auto &v : w) v += 1.f;
    std::vector<float> oc(nc), og(nc, NAN), rc(N), rg(N, NAN);
    printf("  gated_rmsnorm NPT=%d N=%d C=%d blocks %d acc=%d\n", NPT, N, C, nblk, acc);
    cpu_gated_rmsnorm_fwd(oc.data(), rc.data(), y.data(), z.data(), w.data(), N, C, 1e-5f, C);
    std::vector<__nv_bfloat16> ob(nc, __nv_bfloat16{0x7fc0});   /* NaN */
    launch1d(N, GN_THREADS, [&] {
        gnorm_fwd_reg_kernel<NPT>(og.data(), rg.data(), y.data(), z.data(), w.data(), C, 1e-5f, ob.data(), C);
    });
    cmp("out", oc, og); cmp("rstd", rc, rg);
    size_t bad = 0;   /* the rounding written is the rounding of the fp32 value written */
    for (size_t i = 0; i < nc; i++) bad += __float2bfloat16_rn(og[i]).x != ob[i].x;
    printf("    %-28s %zu of %zu differ %s\n", "out bf16 rounding", bad, nc, bad ? "FAILED" : "");
    if (bad) fails++;
    auto d0 = rnd(nc), e0 = rnd(nc), dw0 = rnd(C);
    std::vector<float> dyc = acc ? d0 : std::vector<float>(nc, 0.f), dyg = acc ? d0 : std::vector<float>(nc, NAN);
    std::vector<float> dzc = acc ? e0 : std::vector<float>(nc, 0.f), dzg = acc ? e0 : std::vector<float>(nc, NAN);
    std::vector<float> dwc = dw0, dwg = dw0, part((size_t)nblk * C, NAN);
    cpu_gated_rmsnorm_bwd(dyc.data(), dzc.data(), dwc.data(), dout.data(), y.data(), z.data(), w.data(), rc.data(), N, C, acc, C);
    launch1d(nblk, GN_THREADS, [&] {
        gnorm_bwd_reg_kernel<NPT>(dyg.data(), dzg.data(), part.data(), dout.data(), y.data(), z.data(), w.data(),
                                  rc.data(), N, C, acc, C, nullptr);
    });
    launch1d((C + 255) / 256, 256, [&] { gnorm_dw_finish_kernel(dwg.data(), part.data(), nblk, C); });
    cmp("dy", dyc, dyg); cmp("dz", dzc, dzg); cmp("dw", dwc, dwg);
    /* the pipelined backward (default since elem-mamba) and its dw sum */
    int nb2 = std::min(N, nblk2);
    std::vector<float> dyg2 = acc ? d0 : std::vector<float>(nc, NAN), dzg2 = acc ? e0 : std::vector<float>(nc, NAN);
    std::vector<float> dwg2 = dw0, part2((size_t)nb2 * C, NAN);
    printf("  gated_rmsnorm pipelined backward: blocks %d\n", nb2);
    launch1d(nb2, GN_THREADS, [&] {
        gnorm_bwd_pipe_kernel<NPT>(dyg2.data(), dzg2.data(), part2.data(), dout.data(), y.data(), z.data(), w.data(),
                                   rc.data(), N, C, acc, C, nullptr);
    });
    launch((C + 31) / 32, dim3(32, GN_FIN_ROWS), [&] { gnorm_dw_finish2_kernel(dwg2.data(), part2.data(), nb2, C); });
    cmp("dy", dyc, dyg2); cmp("dz", dzc, dzg2); cmp("dw", dwc, dwg2);
    /* dy only: dz, part NULL */
    std::vector<float> dyg3 = acc ? d0 : std::vector<float>(nc, NAN);
    launch1d(nb2, GN_THREADS, [&] {
        gnorm_bwd_pipe_kernel<NPT>(dyg3.data(), nullptr, nullptr, dout.data(), y.data(), z.data(), w.data(),
                                   rc.data(), N, C, acc, C, nullptr);
    });
    cmp("dy only", dyc, dyg3);
}

/* the windowed forms (ops.h row strides; Mamba-2's packed in_proj, perf-notes fuse-inproj): x and dx as
 * columns [col0, col0 + C) of rows of ld floats, the other columns random (x) or a marker (dx) that must
 * stay; conv + silu with the prefetches (the default kernels), every prefetch inside the window's span */
/* a window's bf16 copy (inproj-d16: a packed gradient's bf16 copy, laid out as the fp32 one, ld apart): the
 * rounding of the fp32 window bit for bit, and nothing written outside the window (NaN there) */
static void win_bf16_check(const char *what, const std::vector<float> &f, const std::vector<__nv_bfloat16> &b,
                           size_t rows, int ld, int col0, int C) {
    size_t bad = 0, stray = 0;
    for (size_t r = 0; r < rows; r++)
        for (int c = 0; c < ld; c++) {
            size_t i = r * ld + c;
            if (c >= col0 && c < col0 + C) bad += __float2bfloat16_rn(f[i]).x != b[i].x;
            else stray += b[i].x != 0x7fc0;
        }
    printf("    %-28s %zu of %zu differ, %zu written outside %s\n", what, bad, rows * C, stray,
           (bad || stray) ? "FAILED" : "");
    if (bad || stray) fails++;
}

template <int KK, int V>
static void conv_win_case(int B, int n, int C, int col0, int ld, int acc) {
    size_t rows = (size_t)B * n, tot = rows * C, wt = rows * ld;
    auto xw = rnd(wt, 2.f), w = rnd((size_t)C * KK), b = rnd(C), dout = rnd(tot);
    std::vector<float> x(tot);
    for (size_t r = 0; r < rows; r++) memcpy(&x[r * C], &xw[r * ld + col0], sizeof(float) * C);
    const float *xs = xw.data() + col0;
    std::vector<float> oc(tot), od(tot), og(tot, NAN);
    cpu_conv1d_silu_fwd(oc.data(), xs, w.data(), b.data(), B, n, C, KK, ld);
    cpu_conv1d_silu_fwd(od.data(), x.data(), w.data(), b.data(), B, n, C, KK, C);
    ConvGeom g = conv_geom(B, n, C, V);
    printf("  conv+silu windowed K=%d V=%d B=%d n=%d C=%d col0=%d ld=%d acc=%d\n", KK, V, B, n, C, col0, ld, acc);
    pf_lo[0] = xw.data(); pf_hi[0] = xw.data() + wt; pf_lo[1] = dout.data(); pf_hi[1] = dout.data() + tot;
    long b0 = pf_bad;
    launch(g.grid, g.block, [&] {
        conv_seg_fwd_kernel<KK, V, true, true>(og.data(), xs, w.data(), b.data(), n, C, g.seg, g.nseg, g.nsegs_all, ld);
    });
    cmp("out (CPU windowed vs dense)", od, oc);
    cmp("out", oc, og);
    auto dx0 = rnd(wt), dw0 = rnd((size_t)C * KK), db0 = rnd(C);
    std::vector<float> dxc = dx0, dxg = dx0, dwc = dw0, dwg = dw0, dbc = db0, dbg = db0;
    for (size_t r = 0; r < rows; r++)
        for (int c = col0; c < col0 + C; c++) {
            if (!acc) dxc[r * ld + c] = 0.f, dxg[r * ld + c] = NAN;
        }
    cpu_conv1d_silu_bwd(dxc.data() + col0, dwc.data(), dbc.data(), dout.data(), xs, w.data(), b.data(), B, n, C, KK,
                        acc, ld);
    /* dx's bf16 rounding into the window of a packed bf16 copy laid out as dx (inproj-d16), NaN elsewhere */
    std::vector<__nv_bfloat16> dxbw(wt, __nv_bfloat16{0x7fc0}), dxbw3(wt, __nv_bfloat16{0x7fc0});
    std::vector<float> part((size_t)g.grid.y * (KK + 1) * C, NAN);
    launch(g.grid, g.block, [&] {
        conv_seg_bwd_kernel<KK, V, true, true>(dxg.data() + col0, part.data(), dout.data(), xs, w.data(), b.data(), n,
                                               C, g.seg, g.nseg, g.nsegs_all, acc, dxbw.data() + col0, ld);
    });
    int fb = ((KK + 1) * C + 255) / 256;
    launch1d(fb, 256, [&] { conv_seg_finish_kernel(dwg.data(), dbg.data(), part.data(), (int)g.grid.y, C, KK); });
    cmp("dx (whole rows)", dxc, dxg); cmp("dw", dwc, dwg); cmp("db", dbc, dbg);
    printf("    %-28s %ld outside x's rows, dout %s\n", "prefetches", pf_bad - b0, pf_bad > b0 ? "FAILED" : "");
    if (pf_bad > b0) fails++;
    /* the ring kernels (conv-bwd), windowed: the same bits, copies inside the window's span */
    std::vector<float> og3(tot, NAN), dxg3 = dx0, dwg3 = dw0, dbg3 = db0;
    for (size_t r = 0; r < rows; r++)
        for (int c = col0; c < col0 + C; c++)
            if (!acc) dxg3[r * ld + c] = NAN;
    std::vector<float> part3((size_t)g.grid.y * (KK + 1) * C, NAN);
    b0 = pf_bad;
    long l0 = cp_left;
    launch(g.grid, g.block, [&] {
        conv_ring_fwd_kernel<KK, V, true>(og3.data(), xs, w.data(), b.data(), n, C, g.seg, g.nseg, g.nsegs_all, ld);
    });
    launch(g.grid, g.block, [&] {
        conv_ring_bwd_kernel<KK, V, true>(dxg3.data() + col0, part3.data(), dout.data(), xs, w.data(), b.data(), n, C,
                                          g.seg, g.nseg, g.nsegs_all, acc, dxbw3.data() + col0, ld);
    });
    launch1d(fb, 256, [&] { conv_seg_finish_kernel(dwg3.data(), dbg3.data(), part3.data(), (int)g.grid.y, C, KK); });
    same_bits("out ring vs prefetching", og, og3);
    same_bits("dx whole rows ring vs pf", dxg, dxg3);
    same_bits("dw ring vs prefetching", dwg, dwg3);
    same_bits("db ring vs prefetching", dbg, dbg3);
    win_bf16_check("dx bf16 window (pf)", dxg, dxbw, rows, ld, col0, C);
    win_bf16_check("dx bf16 window (ring)", dxg3, dxbw3, rows, ld, col0, C);
    if (!acc) {   /* dzxd16: dxf = 0, the rounding only: the same bf16 bits, dx's memory untouched */
        for (int ring = 0; ring < 2; ring++) {
            std::vector<float> dxs = dx0, dxbefore, partk((size_t)g.grid.y * (KK + 1) * C, NAN);
            for (size_t r = 0; r < rows; r++)
                for (int c = col0; c < col0 + C; c++) dxs[r * ld + c] = NAN;
            dxbefore = dxs;
            std::vector<__nv_bfloat16> bk(wt, __nv_bfloat16{0x7fc0});
            launch(g.grid, g.block, [&] {
                if (ring)
                    conv_ring_bwd_kernel<KK, V, true>(dxs.data() + col0, partk.data(), dout.data(), xs, w.data(),
                                                      b.data(), n, C, g.seg, g.nseg, g.nsegs_all, 0, bk.data() + col0,
                                                      ld, 0);
                else
                    conv_seg_bwd_kernel<KK, V, true, true>(dxs.data() + col0, partk.data(), dout.data(), xs, w.data(),
                                                           b.data(), n, C, g.seg, g.nseg, g.nsegs_all, 0,
                                                           bk.data() + col0, ld, 0);
            });
            size_t nb = 0;
            for (size_t i = 0; i < wt; i++) nb += bk[i].x != (ring ? dxbw3 : dxbw)[i].x;
            same_bits(ring ? "dx memory, no fp32 (ring)" : "dx memory, no fp32 (pf)", dxbefore, dxs);
            printf("    %-28s %zu of %zu bf16 differ from the fp32-writing run %s\n",
                   ring ? "dx bf16 no fp32 (ring)" : "dx bf16 no fp32 (pf)", nb, wt, nb ? "FAILED" : "");
            if (nb) fails++;
        }
    }
    printf("    %-28s %ld outside, %ld never waited %s\n", "ring copies", pf_bad - b0, cp_left - l0,
           (pf_bad > b0 || cp_left > l0) ? "FAILED" : "");
    if (pf_bad > b0 || cp_left > l0) fails++;
}

/* the gated norm with z, dz windowed likewise (the register forward, both register backwards) */
template <int NPT>
static void gnorm_win_case(int N, int C, int col0, int ld, int nblk, int acc) {
    size_t nc = (size_t)N * C, wt = (size_t)N * ld;
    auto y = rnd(nc), zw = rnd(wt, 2.f), w = rnd(C), dout = rnd(nc);
    const float *zs = zw.data() + col0;
    printf("  gated_rmsnorm windowed NPT=%d N=%d C=%d col0=%d ld=%d acc=%d\n", NPT, N, C, col0, ld, acc);
    std::vector<float> oc(nc), rc(N), og(nc, NAN), rg(N, NAN);
    cpu_gated_rmsnorm_fwd(oc.data(), rc.data(), y.data(), zs, w.data(), N, C, 1e-5f, ld);
    launch1d(N, GN_THREADS, [&] {
        gnorm_fwd_reg_kernel<NPT>(og.data(), rg.data(), y.data(), zs, w.data(), C, 1e-5f, nullptr, ld);
    });
    cmp("out", oc, og); cmp("rstd", rc, rg);
    auto d0 = rnd(nc), e0 = rnd(wt), dw0 = rnd(C);
    std::vector<float> dyc = acc ? d0 : std::vector<float>(nc, 0.f), dzc = e0, dwc = dw0;
    if (!acc)
        for (int r = 0; r < N; r++)
            for (int c = col0; c < col0 + C; c++) dzc[(size_t)r * ld + c] = 0.f;
    cpu_gated_rmsnorm_bwd(dyc.data(), dzc.data() + col0, dwc.data(), dout.data(), y.data(), zs, w.data(), rc.data(),
                          N, C, acc, ld);
    for (int pipe = 0; pipe < 2; pipe++) {
        std::vector<float> dyg = acc ? d0 : std::vector<float>(nc, NAN), dzg = e0, dwg = dw0;
        if (!acc)
            for (int r = 0; r < N; r++)
                for (int c = col0; c < col0 + C; c++) dzg[(size_t)r * ld + c] = NAN;
        int nb = std::min(N, nblk);
        std::vector<float> part((size_t)nb * C, NAN);
        std::vector<__nv_bfloat16> dzb((size_t)N * ld, __nv_bfloat16{0x7fc0});   /* inproj-d16: laid out as dz */
        launch1d(nb, GN_THREADS, [&] {
            if (pipe)
                gnorm_bwd_pipe_kernel<NPT>(dyg.data(), dzg.data() + col0, part.data(), dout.data(), y.data(), zs,
                                           w.data(), rc.data(), N, C, acc, ld, dzb.data() + col0);
            else
                gnorm_bwd_reg_kernel<NPT>(dyg.data(), dzg.data() + col0, part.data(), dout.data(), y.data(), zs,
                                          w.data(), rc.data(), N, C, acc, ld, dzb.data() + col0);
        });
        launch((C + 31) / 32, dim3(32, GN_FIN_ROWS), [&] { gnorm_dw_finish2_kernel(dwg.data(), part.data(), nb, C); });
        cmp(pipe ? "dy (pipelined)" : "dy", dyc, dyg);
        cmp(pipe ? "dz whole rows (pipelined)" : "dz whole rows", dzc, dzg);
        cmp(pipe ? "dw (pipelined)" : "dw", dwc, dwg);
        win_bf16_check(pipe ? "dz bf16 window (pipelined)" : "dz bf16 window", dzg, dzb, N, ld, col0, C);
        if (!acc) {   /* dzxd16: dzf = 0, the rounding only: dy and the bf16 bits the same, dz's memory untouched */
            std::vector<float> dy2(nc, NAN), dz2 = e0, dzbefore, part2((size_t)nb * C, NAN);
            for (int r = 0; r < N; r++)
                for (int c = col0; c < col0 + C; c++) dz2[(size_t)r * ld + c] = NAN;
            dzbefore = dz2;
            std::vector<__nv_bfloat16> dzb2((size_t)N * ld, __nv_bfloat16{0x7fc0});
            launch1d(nb, GN_THREADS, [&] {
                if (pipe)
                    gnorm_bwd_pipe_kernel<NPT>(dy2.data(), dz2.data() + col0, part2.data(), dout.data(), y.data(), zs,
                                               w.data(), rc.data(), N, C, 0, ld, dzb2.data() + col0, 0);
                else
                    gnorm_bwd_reg_kernel<NPT>(dy2.data(), dz2.data() + col0, part2.data(), dout.data(), y.data(), zs,
                                              w.data(), rc.data(), N, C, 0, ld, dzb2.data() + col0, 0);
            });
            size_t nbd = 0;
            for (size_t i = 0; i < dzb.size(); i++) nbd += dzb2[i].x != dzb[i].x;
            same_bits("dy, dz no fp32", dyg, dy2);
            same_bits("dz memory, no fp32", dzbefore, dz2);
            printf("    %-28s %zu of %zu bf16 differ from the fp32-writing run %s\n", "dz bf16 no fp32", nbd,
                   dzb.size(), nbd ? "FAILED" : "");
            if (nbd) fails++;
        }
    }
}

int main() {
    for (int acc = 0; acc < 2; acc++)
        for (int silu = 0; silu < 2; silu++) {
            conv_case<4, 1>(1, 1, 1, silu, true, acc);
            conv_case<4, 1>(2, 3, 5, silu, true, acc);      /* n < K */
            conv_case<4, 1>(2, 67, 129, silu, acc, acc);    /* odd C, several segments */
            conv_case<4, 4>(2, 67, 132, silu, true, acc);
            conv_case<4, 4>(2, 256, 512, silu, !acc, acc);
            conv_case<3, 1>(1, 40, 7, silu, true, acc);
            conv_case<2, 4>(3, 19, 8, silu, true, acc);
            conv_case<1, 1>(2, 9, 3, silu, true, acc);
            conv_case<4, 4>(1, 1, 4, silu, true, acc);      /* T = 1 */
        }
    conv_case<4, 4>(2, 1024, 64, true, true, 0);            /* the model's sequence length, 4 segments... */
    for (int acc = 0; acc < 2; acc++) {
        gnorm_case<1>(7, 36, 7, acc);
        gnorm_case<1>(9, 512, 4, acc);                          /* several rows per block */
        gnorm_case<3>(20, 1536, 6, acc);                        /* mamba2-gpt2small's E */
        gnorm_case<3>(5, 1028, 5, acc);                         /* C/4 = 257: the third float4 of one thread only */
        gnorm_case<8>(3, 4096, 2, acc);
        gnorm_case<3>(37, 1536, 6, acc, 5);                     /* pipelined: 8 rows per block, a partial last round */
        gnorm_case<3>(11, 1028, 3, acc, 4);                     /* C/4 = 257: one thread with a third float4 */
        gnorm_case<1>(13, 44, 2, acc, 13);                      /* one row per block (N == blocks) */
    }
    for (int acc = 0; acc < 2; acc++) {
        conv_win_case<4, 4>(2, 67, 128, 4, 140, acc);
        conv_win_case<4, 1>(2, 19, 12, 3, 17, acc);
        conv_win_case<3, 1>(3, 40, 7, 1, 9, acc);
        conv_win_case<4, 4>(1, 200, 1792, 1536, 3352, acc);   /* mamba2-gpt2small's x|B|C in its packed row */
        gnorm_win_case<1>(7, 36, 0, 40, 3, acc);
        gnorm_win_case<3>(20, 1536, 0, 3352, 6, acc);         /* mamba2-gpt2small's z in its packed row */
        gnorm_win_case<3>(5, 1028, 4, 1040, 2, acc);
    }
    printf(fails ? "m2_emu: %d FAILED\n" : "m2_emu: all passed\n", fails);
    return fails != 0;
}
