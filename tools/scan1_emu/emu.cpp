/* emu.cpp - the register-resident Mamba-1 scan kernels
 * (src/ops/cuda/selective_scan_reg.cuh) run on the CPU, for checking their
 * tile copies, chunk/sub-chunk index math, time segments (the segment passes
 * and the folds, at given K), reduce-scatter and atomics where no
 * GPU is at hand (no substitute for tests/cuda/test_cuda.cu on a GPU). A block
 * is one warp: its 32 lanes run as OS threads, __syncwarp and each shuffle are
 * barriers, blocks run one after another. cp.async copies are queued per lane
 * and done either when issued ("eager") or at the last moment the kernel's
 * wait allows ("lazy": wait_group 1 lands all but the newest group), so a
 * read before its wait or a copy into a buffer still in use shows up as wrong
 * results; shared memory starts as NaN. Outputs are compared with the CPU op
 * (src/ops/cpu/selective_scan.c) at relative L2 1e-5 (test_cuda's fp32 bound).
 * The backward runs in its three versions (scan_bwd_reg_kernel<LOW, S16, V2>:
 * "v2" lines the default, "low" the session-8 one, FLOWHN_SCAN1_BWD=low,
 * "nosplit" the 63.7 KB one); "shift" runs pass the backward's per-(t, e)
 * inputs and hs one float off 16-byte alignment (V2's 4-byte fallbacks).
 * See run.sh. */
#include <pthread.h>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <mutex>
#include <random>
#include <thread>
#include <vector>
using std::min;
using std::max;
extern "C" {
void cpu_selective_scan_fwd(float *y, float *hs, const float *x, const float *dt_raw, const float *A_log,
                            const float *Bm, const float *Cm, const float *D, const float *z, int B, int n, int E,
                            int S, int L);
void cpu_selective_scan_bwd(float *dx, float *ddt_raw, float *dA_log, float *dBm, float *dCm, float *dD, float *dz,
                            const float *dy, const float *hs, const float *x, const float *dt_raw, const float *A_log,
                            const float *Bm, const float *Cm, const float *D, const float *z, int B, int n, int E,
                            int S, int L, int acc);
}
struct dim3 {
    unsigned x, y, z;
};
struct alignas(16) float4 { float x, y, z, w; };
thread_local dim3 threadIdx, blockIdx;
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)

static pthread_barrier_t w_bar;
static void __syncwarp() { pthread_barrier_wait(&w_bar); }
static float g_shfl[32];
static float __shfl_xor_sync(unsigned, float v, int o, int width = 32) {
    int t = threadIdx.x, p = t ^ o;
    if (o >= width) p = t;  /* not used by the kernels */
    pthread_barrier_wait(&w_bar);
    g_shfl[t] = v;
    pthread_barrier_wait(&w_bar);
    return g_shfl[p];
}
static float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
static int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
static std::mutex g_atomic;
static float atomicAdd(float *p, float v) {
    std::lock_guard<std::mutex> g(g_atomic);
    float o = *p;
    *p = o + v;
    return o;
}
static float sigmoidf_(float x) { return 1.f / (1.f + expf(-x)); }
static float softplusf_(float x) { return fmaxf(x, 0.f) + log1pf(expf(-fabsf(x))); }
#define SCAN_DECAY_SCALE 1.4426950408889634f
static float scan_decay(float x2) { return exp2f(x2); }

alignas(16) static float g_smem[1 << 15];  /* 128 KB */
static float *sr_smem() { return g_smem; }
struct Copy { float *dst; const float *src; bool valid; };
thread_local std::vector<Copy> t_open;
thread_local std::vector<std::vector<Copy>> t_groups;
static bool g_eager;
static void land(const std::vector<Copy> &g) {
    for (const Copy &c : g) *c.dst = c.valid ? *c.src : 0.f;
}
static void sr_cp4(float *dst, const float *src, bool valid) {
    if (g_eager) *dst = valid ? *src : 0.f;
    else t_open.push_back({dst, src, valid});
}
static void sr_cp16(float *dst, const float *src) {
    if (((uintptr_t)dst & 15) || ((uintptr_t)src & 15)) { fprintf(stderr, "sr_cp16: misaligned\n"); abort(); }
    for (int i = 0; i < 4; i++) sr_cp4(dst + i, src + i, true);
}
/* prefetches: no data; the address must lie in one of the kernel's inputs (g_ranges) */
static std::vector<std::pair<const float *, const float *>> g_ranges;
static void sr_pf(const float *p) {
    for (auto &r : g_ranges)
        if (p >= r.first && p < r.second) return;
    fprintf(stderr, "prefetch out of range\n");
    abort();
}
static void sr_pf_l1(const float *p) { sr_pf(p); }
static void sr_pf_l2(const float *p) { sr_pf(p); }
static void sr_commit() { t_groups.push_back(t_open); t_open.clear(); }
static void sr_wait_prev() {  /* wait_group 1 */
    while (t_groups.size() > 1) { land(t_groups.front()); t_groups.erase(t_groups.begin()); }
}

static void sr_wait_all() {  /* wait_group 0 */
    while (!t_groups.empty()) { land(t_groups.front()); t_groups.erase(t_groups.begin()); }
}

#include "../../src/ops/cuda/selective_scan_reg.cuh"

template <class F>
static void launch(unsigned gx, unsigned gy, unsigned gz, F kern) {
    for (unsigned bz = 0; bz < gz; bz++)
    for (unsigned by = 0; by < gy; by++)
        for (unsigned bx = 0; bx < gx; bx++) {
            for (size_t i = 0; i < sizeof g_smem / sizeof(float); i++) g_smem[i] = NAN;
            std::vector<std::thread> th;
            for (unsigned l = 0; l < 32; l++)
                th.emplace_back([=] {
                    threadIdx = {l, 0, 0};
                    blockIdx = {bx, by, bz};
                    t_open.clear();
                    t_groups.clear();
                    kern();
                    if (!t_groups.empty() || !t_open.empty()) { /* copies left in flight: fine on a GPU */ }
                });
            for (auto &t : th) t.join();
        }
}

static std::mt19937 rng(1234);
static std::vector<float> rnd(size_t n, float mean, float sd) {
    std::normal_distribution<float> d(mean, sd);
    std::vector<float> v(n);
    for (auto &x : v) x = d(rng);
    return v;
}
static double rel(const std::vector<float> &a, const std::vector<float> &b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); i++) {
        if (!std::isfinite(b[i])) return INFINITY;
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)a[i] * a[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static int fails;
static int g_bwd = 4;  /* the backward: 4 the dense pair kernel (default, scan1b), 3 the session-10 pair kernel,
                       * 2 V2, 1 the session-8 LOW one, 0 nosplit */
static bool g_shift;  /* the backward's dt_raw, x, dy, z and hs one float off 16-byte alignment */
static const char *bwd_name() {
    return g_bwd == 4 ? (g_shift ? "dense shift" : "dense") : g_bwd == 3 ? (g_shift ? "pair shift" : "pair") : g_bwd == 2 ? (g_shift ? "v2 shift" : "v2") : g_bwd == 1 ? "low" : "nosplit";
}
static void check(const char *what, const std::vector<float> &ref, const std::vector<float> &got) {
    double r = rel(ref, got);
    bool ok = r <= 1e-5;
    if (!ok) fails++;
    printf(" %s %.1e%s", what, r, ok ? "" : " FAIL");
}

/* K time segments of cps chunks (the host's sr_split, K given) */
static void run(int B, int n, int E, int S, int L, int acc, int Kf, int Kb) {
    size_t ne = (size_t)B * n * E, nsb = (size_t)B * n * S;
    int nc = (n + L - 1) / L;
    size_t nhs = (size_t)B * (nc + 1) * E * S;
    auto x = rnd(ne, 0, 1), dtr = rnd(ne, -2.5f, 1), z = rnd(ne, 0, 1), dy = rnd(ne, 0, 1);
    auto Bm = rnd(nsb, 0, 1), Cm = rnd(nsb, 0, 1), D = rnd(E, 1, 0.3f);
    std::vector<float> Al((size_t)E * S);
    std::uniform_real_distribution<float> u(0, 1);
    for (auto &a : Al) a = logf(1 + 15 * u(rng));
    std::vector<float> y(ne), hs(nhs), gy(ne, NAN), ghs(nhs, NAN);
    cpu_selective_scan_fwd(y.data(), hs.data(), x.data(), dtr.data(), Al.data(), Bm.data(), Cm.data(), D.data(),
                           z.data(), B, n, E, S, L);
    unsigned gx = (E + 31) / 32;
    /* K segments of cps chunks as the host makes them: K clamped to nc, none empty */
    auto segs = [&](int K, int nch, int *cps) {
        K = max(1, min(K, nch));
        *cps = (nch + K - 1) / K;
        return (nch + *cps - 1) / *cps;
    };
    int cpf, K1 = segs(Kf, nc, &cpf);
    std::vector<float> cR((size_t)B * max(K1, 1) * E * (S + 1), NAN);
    float *csd = cR.data() + (size_t)B * K1 * E * S;
    if (K1 > 1)
        launch(gx, B, K1 - 1, [&] {
            scan_fwd_seg_kernel(cR.data(), csd, x.data(), dtr.data(), Al.data(), Bm.data(), n, E, S, cpf * L, K1);
        });
    launch(gx, B, K1, [&] {
        scan_fwd_reg_kernel(gy.data(), ghs.data(), x.data(), dtr.data(), Al.data(), Bm.data(), Cm.data(), D.data(),
                            z.data(), n, E, S, L, cR.data(), csd, cpf, K1);
    });
    printf("B=%d n=%d E=%d S=%d L=%d acc=%d K=%d", B, n, E, S, L, acc, K1);
    /* backward: the op's host code clamps L to n; chunks over SR_T take the old kernels */
    int Lb = L > n ? n : L;
    if (Lb > SR_T) { printf(" %s: (bwd: old kernels)", g_eager ? "eager" : "lazy"); check("y", y, gy); check("hs", hs, ghs); printf("\n"); return; }
    int ncb = (n + Lb - 1) / Lb, cpb, K2 = segs(Kb, ncb, &cpb);
    printf("/%d %s %s:", K2, g_eager ? "eager" : "lazy", bwd_name());
    check("y", y, gy);
    check("hs", hs, ghs);
    auto init = [&](size_t m) { return acc ? rnd(m, 0, 1) : std::vector<float>(m, 0.f); };
    std::vector<float> gx0 = init(ne), gdt0 = init(ne), gz0 = init(ne), gB0 = init(nsb), gC0 = init(nsb);
    std::vector<float> gA0 = rnd((size_t)E * S, 0, 1), gD0 = rnd(E, 0, 1);  /* always accumulated */
    auto rx = gx0, rdt = gdt0, rz = gz0, rB = gB0, rC = gC0, rA = gA0, rD = gD0;
    cpu_selective_scan_bwd(rx.data(), rdt.data(), rA.data(), rB.data(), rC.data(), rD.data(), rz.data(), dy.data(),
                           hs.data(), x.data(), dtr.data(), Al.data(), Bm.data(), Cm.data(), D.data(), z.data(), B, n,
                           E, S, L, acc);
    auto kx = acc ? gx0 : std::vector<float>(ne, NAN), kdt = acc ? gdt0 : std::vector<float>(ne, NAN);
    auto kz = acc ? gz0 : std::vector<float>(ne, NAN), kB = gB0, kC = gC0, kA = gA0, kD = gD0;
    /* !acc: the host zeroes dBm, dCm (cuda_zero), the kernel stores dx, ddt, dz */
    std::vector<float> bR((size_t)B * K2 * E * (S + 1), NAN);
    float *bsd = bR.data() + (size_t)B * K2 * E * S;
    if (K2 > 1)
        launch(gx, B, K2 - 1, [&] {
            scan_bwd_seg_kernel(bR.data(), bsd, dy.data(), dtr.data(), Al.data(), Cm.data(), z.data(), n, E, S,
                                cpb * Lb, K2);
        });
    /* the version (as the host picks it: S16 when S == SR_S) */
    auto bwd = g_bwd == 0 ? scan_bwd_reg_kernel<false, false>
             : g_bwd == 1 ? (S == SR_S ? scan_bwd_reg_kernel<true, true> : scan_bwd_reg_kernel<true, false>)
             : S == SR_S ? scan_bwd_reg_kernel<true, true, true> : scan_bwd_reg_kernel<true, false, true>;
    /* g_shift: copies one float past a 16-byte boundary */
    auto sh = [&](const std::vector<float> &v, std::vector<float> &keep) {
        if (!g_shift) return v.data();
        keep.assign(v.size() + 4, NAN);
        std::copy(v.begin(), v.end(), keep.begin() + 1);
        return (const float *)keep.data() + 1;
    };
    std::vector<float> k1, k2, k3, k4, k5;
    const float *bdy = sh(dy, k1), *bhs = sh(ghs, k2), *bx = sh(x, k3), *bdt = sh(dtr, k4), *bz = sh(z, k5);
    g_ranges.clear();
    g_ranges.push_back({bdy, bdy + ne});
    g_ranges.push_back({bx, bx + ne});
    g_ranges.push_back({bdt, bdt + ne});
    g_ranges.push_back({bz, bz + ne});
    g_ranges.push_back({bhs, bhs + nhs});
    g_ranges.push_back({Bm.data(), Bm.data() + nsb});
    g_ranges.push_back({Cm.data(), Cm.data() + nsb});
    /* the pair kernel: 16 channels a warp (the segment pass above keeps 32) */
    if (g_bwd == 3) bwd = S == SR_S ? scan_bwd_pair_kernel<true> : scan_bwd_pair_kernel<false>;
    if (g_bwd == 4) bwd = S == SR_S ? scan_bwd_pair_kernel<true, 14, true> : scan_bwd_pair_kernel<false, 14, true>;
    launch(g_bwd >= 3 ? (E + SP_C - 1) / SP_C : gx, B, K2, [&] {
        bwd(kx.data(), kdt.data(), kA.data(), kB.data(), kC.data(), kD.data(), kz.data(), bdy, bhs, bx, bdt,
            Al.data(), Bm.data(), Cm.data(), D.data(), bz, n, E, S, Lb, acc, bR.data(), bsd, cpb, K2);
    });
    check("dx", rx, kx); check("ddt", rdt, kdt); check("dA_log", rA, kA); check("dB", rB, kB);
    check("dC", rC, kC); check("dD", rD, kD); check("dz", rz, kz);
    printf("\n");
}

int main(int argc, char **argv) {
    pthread_barrier_init(&w_bar, NULL, 32);
    /* the host's segment choice (sr_segments) at the model shapes, with resident one-warp blocks from
     * ptxas -v (132 SMs): forward 25/SM (80 registers, 8 KB), its segment pass 23/SM (88), backward 7/SM
     * (LOW: 30 KB + 1 KB reserved; nosplit: 3/SM, 63.7 KB), its carry pass 25/SM (80 registers) */
    static const int model[][4] = {{8, 1024, 1536, 32}, {8, 448, 4096, 32}, {1, 32768, 1536, 32}, {1, 4096, 1536, 32}};
    for (const auto &m : model) {
        long w = (long)m[0] * ((m[2] + 31) / 32);
        int nc = (m[1] + m[3] - 1) / m[3], cf, cb;
        int Kf = sr_segments(w, 132 * 25, 132 * 23, nc, m[1], 0.8, &cf), Kb = sr_segments(w, 132 * 7, 132 * 25, nc, m[1], 0.3, &cb);
        int cb0, Kb0 = sr_segments(w, 132 * 3, 132 * 25, nc, m[1], 0.3, &cb0);
        printf("model B=%d n=%d E=%d: %ld warps; fwd K=%d (%d chunks, %ld warps, %.1f/SM), bwd K=%d (%d chunks, %ld warps, "
               "%.1f waves of 924), nosplit bwd K=%d (%d chunks, %.1f waves of 396)\n",
               m[0], m[1], m[2], w, Kf, cf, w * Kf, w * Kf / 132.0, Kb, cb, w * Kb, w * Kb / 924.0, Kb0, cb0,
               w * Kb0 / 396.0);
        /* the pair backward: 2w warps, 14/SM (15 KB + 1 KB reserved), its segment pass's slots doubled (host) */
        int cp, Kp = sr_segments(2 * w, 132 * 14, 2 * 132 * 25, nc, m[1], 0.3, &cp);
        printf("  pair bwd K=%d (%d chunks, %ld warps, %.1f waves of 1848)\n", Kp, cp, 2 * w * Kp, 2 * w * Kp / 1848.0);
    }
    if (argc > 1) return 0;
    static const int shapes[][5] = {/* B, n, E, S, L: odd T and E, dead lanes, S < 16, partial tiles and chunks,
                                     * chunks of 1, 3, 5 (partial sub-chunks) and 32 steps, L > n */
                                    {1, 1, 1, 1, 1},   {2, 19, 5, 16, 4},  {1, 128, 64, 16, 32}, {2, 37, 7, 3, 64},
                                    {1, 21, 70, 5, 1}, {2, 77, 45, 16, 32}, {1, 100, 33, 8, 5},  {2, 70, 40, 16, 3},
                                    {1, 200, 96, 16, 32}, {1, 33, 32, 16, 30}, {1, 203, 37, 16, 32}};
    /* segment counts: none, 2, 3 (odd splits of the chunks), 7, and as many as SR_KMAX allows (clamped to nc) */
    static const int Ks[] = {1, 2, 3, 7, SR_KMAX};
    /* SCAN1_EMU_BWD=4 (3, 2, 1, 0): only that backward's lines */
    const char *only = getenv("SCAN1_EMU_BWD");
    int want = only && *only ? atoi(only) : -1;
    for (int mode = 0; mode < 10; mode++) {
        g_eager = mode & 1;
        g_bwd = 4 - mode / 2;
        if (want >= 0 && g_bwd != want) continue;
        for (const auto &s : shapes)
            for (int k = 0; k < 5; k++) run(s[0], s[1], s[2], s[3], s[4], k & 1, Ks[k], Ks[(k + 2) % 5]);
    }
    /* long T, B 1: T not a multiple of the chunk, odd E, the host's K for 48 warps (the model's) */
    g_eager = false;
    for (int m = 7; m >= 0; m--) {  /* 7 dense, 6 dense shift, 5 pair, 4 pair shift, 3 v2, 2 v2 shift, 1 low, 0 nosplit */
        g_bwd = m >= 6 ? 4 : m == 5 || m == 4 ? 3 : m == 3 || m == 2 ? 2 : m;
        g_shift = m == 6 || m == 4 || m == 2;
        if (want >= 0 && g_bwd != want) continue;
        run(1, 4096 + 13, 45, 16, 32, 0, 63, 8);
        run(1, 4096, 33, 16, 32, 1, 64, 64);
        run(1, 1000, 40, 16, 32, 1, 3, 12);  /* odd T, the 135m-like K */
        run(2, 257, 33, 5, 32, 0, 2, 9);     /* S < 16: the scalar B, C reads, 9 segments of one chunk */
        if (g_bwd == 4) run(1, 448, 64, 16, 32, 1, 3, 7);  /* flowhn-fac-1b's n and K (14 chunks, 7 segments of 2) */
    }
    printf("%s: %d failed checks\n", fails ? "FAIL" : "ok", fails);
    return fails != 0;
}
