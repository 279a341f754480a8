/* emu.cpp - the chunked SSD kernels (src/ops/cuda/ssd_kernels.cuh) run on the CPU,
 * for checking their indices, barriers and copies where no GPU is at hand (it is
 * no substitute for test_cuda on a GPU). The header is turned into host C++ by
 * gen.py (the exact build) or gen_tc.py (the tensor-core build's schedule: LD 68,
 * the cp.async paths, mm_tc's barriers around exact fp32 products; wmma itself is
 * not emulated). A block is 256 OS threads with real barriers for __syncthreads
 * and per-warp barriers for the shuffles; blocks run one after another; shared
 * memory is NaN at each block's start. cp.async lands at issue (DEFER 0) or only
 * at the thread's next wait, the tile NaN until then (DEFER 1: a read before bar()
 * shows). Forward (states, y) and backward (dxbc, ddt, ddt_bias, dA_log, dD) are
 * compared with cpu_ssd_fwd / cpu_ssd_bwd at relative L2 1e-5. See run.sh. EMU_DUMP=file writes
 * the outputs raw, EMU_SERIAL=1 makes the thread interleaving (so the atomicAdd order and every
 * output) deterministic: both for bit-for-bit comparisons across a refactor of the kernels. */
#include <pthread.h>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <functional>
#include <type_traits>
#include <condition_variable>
#include <mutex>
#include <atomic>
#include <thread>
#include <vector>
using std::min;
extern "C" {
void cpu_ssd_fwd(float *y, float *states, const float *xbc, const float *dt_raw, const float *dt_bias, const float *A_log, const float *D, int B, int n, int nh, int P, int G, int N, int L);
void cpu_ssd_bwd(float *dxbc, float *ddt_raw, float *ddt_bias, float *dA_log, float *dD, const float *dy, const float *states, const float *xbc, const float *dt_raw, const float *dt_bias, const float *A_log, const float *D, int B, int n, int nh, int P, int G, int N, int L, int acc);
void fh_count_macs(uint64_t) {}
}
struct dim3 { unsigned x, y, z; };
struct float2 { float x, y; };
static inline float2 make_float2(float a, float b) { return {a, b}; }
struct float4 { float x, y, z, w; };
static inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
thread_local dim3 threadIdx, blockIdx;
static dim3 blockDim = {256, 1, 1};
static pthread_barrier_t g_bar, w_bar[8];
/* EMU_SERIAL=1: one thread runs at a time, handing over at its barriers (block or warp) to the next
 * runnable thread by id, so that every run interleaves the same way and the order of the atomicAdds
 * (and so every output) is deterministic: outputs can be compared bit for bit across a refactor
 * (EMU_DUMP). The default lets the OS interleave the threads (more schedules seen per run). */
static int SERIAL = 0;
struct Serial {
    std::mutex m;
    std::condition_variable cv[256];
    int turn = 0, bar_n = 0, wbar_n[8] = {};
    int wait_kind[256] = {};  /* 0 runnable, 1 at the block barrier, 2 at its warp barrier, 3 done */
} g_ser;
static void ser_pass(int me) {  /* lock held: the turn to the next runnable thread after me */
    for (int s = 1; s <= 256; s++) {
        int t = (me + s) & 255;
        if (g_ser.wait_kind[t] == 0) { g_ser.turn = t; g_ser.cv[t].notify_one(); return; }
    }
}
static void ser_wait(int me, std::unique_lock<std::mutex> &l) {
    g_ser.cv[me].wait(l, [&] { return g_ser.turn == me && g_ser.wait_kind[me] == 0; });
}
static void ser_start(int me) { std::unique_lock<std::mutex> l(g_ser.m); ser_wait(me, l); }
static void ser_end(int me) { std::unique_lock<std::mutex> l(g_ser.m); g_ser.wait_kind[me] = 3; ser_pass(me); }
static void ser_barrier(int me, bool warp) {
    std::unique_lock<std::mutex> l(g_ser.m);
    int w = me >> 5, &n = warp ? g_ser.wbar_n[w] : g_ser.bar_n;
    if (++n == (warp ? 32 : 256)) {  /* the last to arrive releases the others and runs on */
        n = 0;
        for (int t = warp ? 32 * w : 0; t < (warp ? 32 * w + 32 : 256); t++)
            if (g_ser.wait_kind[t] == (warp ? 2 : 1)) g_ser.wait_kind[t] = 0;
        return;
    }
    g_ser.wait_kind[me] = warp ? 2 : 1;
    ser_pass(me);
    ser_wait(me, l);
}
static void __syncthreads() {
    if (SERIAL) ser_barrier(threadIdx.x, false);
    else pthread_barrier_wait(&g_bar);
}
static void warp_bar(int w) {
    if (SERIAL) ser_barrier(threadIdx.x, true);
    else pthread_barrier_wait(&w_bar[w]);
}
static float g_shfl[256];
static float __shfl_xor_sync(unsigned, float v, int o) {
    int t = threadIdx.x, w = t >> 5;
    g_shfl[t] = v;
    warp_bar(w);
    float r = g_shfl[t ^ o];
    warp_bar(w);
    return r;
}
static void __syncwarp() { warp_bar(threadIdx.x >> 5); }
static std::mutex g_atom;
static float atomicAdd(float *p, float v) { std::lock_guard<std::mutex> l(g_atom); float o = *p; *p = o + v; return o; }
static int atomicAdd(int *p, int v) { std::lock_guard<std::mutex> l(g_atom); int o = *p; *p = o + v; return o; }
static void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
static float __ldcg(const float *p) { return *(const volatile float *)p; }
static float2 __ldcg(const float2 *p) { const volatile float *q = (const volatile float *)p; return {q[0], q[1]}; }
static inline float warp_sum(float v) { for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o); return v; }
static inline float block_sum(float v, float *sh) {
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v); __syncthreads(); if (lane == 0) sh[wid] = v; __syncthreads();
    v = lane < nw ? sh[lane] : 0.f; return warp_sum(v);
}
static inline float sigmoidf_(float x) { return 1.f / (1.f + expf(-x)); }
static inline float softplusf_(float x) { return fmaxf(x, 0.f) + log1pf(expf(-fabsf(x))); }
struct SsdDims { int B, n, nh, P, G, N, L, E, W, nch; int acc; int no_bc_atomics; };
static float g_smem[8 * 64 * 72];  /* the widest: ssd_chunk_scan_bf_kernel's 6 bf16 tiles as 4-byte host bf16t */
#define TS 64
#define NT 256
#define TILE (TS * LD)
/* cp.async: deferred to the thread's next wait (DEFER=1: the copy lands as late as
 * allowed) or done at once (DEFER=0: as early as possible) */
static int DEFER = 1;
struct Cp { float *dst; const float *src; bool valid; };
thread_local std::vector<Cp> g_pending;
static void cp_issue(float *dst, const float *src, bool valid) {
    if (!DEFER) { for (int q = 0; q < 4; q++) dst[q] = valid ? src[q] : 0.f; return; }
    /* the source is read when the copy lands; the kernels never write what they copy */
    g_pending.push_back({dst, src, valid});
    /* garbage until then, so that an early read shows */
    for (int q = 0; q < 4; q++) dst[q] = NAN;
}
static void cp_wait_all() {
    for (auto &c : g_pending) for (int q = 0; q < 4; q++) c.dst[q] = c.valid ? c.src[q] : 0.f;
    g_pending.clear();
}
/* the operands' rounding in the host mma.sync (gen.py): EMU_ROUND=tf32 (cvt.rna: to nearest, ties
 * away, 10 fraction bits) or bf16 (to nearest even, 7 bits), else none (exact fp32 products, so that
 * the 1e-5 bound checks the indices); EMU_TOL sets the bound (e.g. 1e-2, the bf16 mode's) */
static int ROUND = 0;
static inline unsigned emu_round(float v) {
    unsigned u;
    memcpy(&u, &v, 4);
    if (ROUND == 1) u = (u + 0x1000u) & 0xffffe000u;
    else if (ROUND == 2) u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    return u;
}
static inline float emu_f(unsigned u) { float v; memcpy(&v, &u, 4); return v; }
/* the bf16 variant's tiles (gen.py bf16t): EMU_TILE=bf16 rounds what is stored in them to nearest
 * even, as __float2bfloat16_rn does; else they hold the fp32 value (indices checked at 1e-5) */
static int TILE_ROUND = 0;
static inline float emu_tile(float v) {
    if (!TILE_ROUND) return v;
    unsigned u;
    memcpy(&u, &v, 4);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    return emu_f(u);
}
#ifdef EMU_TC
namespace ssd_exact {
constexpr int LD = 68;
constexpr bool TC = true;
#include "kern_tc.h"
}
#else
namespace ssd_exact {
constexpr int LD = 65;
constexpr bool TC = false;
#include "kern_host.h"
}
#endif
static void launch(dim3 grid, std::function<void()> f) {
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                for (int i = 0; i < 8 * 64 * 72; i++) g_smem[i] = NAN;  /* shared memory starts as garbage */
                std::vector<std::thread> th;
                g_ser.turn = 0; g_ser.bar_n = 0;
                for (int w = 0; w < 8; w++) g_ser.wbar_n[w] = 0;
                for (int t = 0; t < 256; t++) g_ser.wait_kind[t] = 0;
                for (unsigned t = 0; t < 256; t++)
                    th.emplace_back([=] {
                        threadIdx = {t, 0, 0}; blockIdx = {x, y, z};
                        if (SERIAL) ser_start(t);
                        f();
                        if (SERIAL) ser_end(t);
                    });
                for (auto &t : th) t.join();
            }
}
static unsigned long long rs = 12345;
static float urand() { rs = rs * 6364136223846793005ULL + 1442695040888963407ULL; return (float)((rs >> 11) * (1.0 / 9007199254740992.0)); }
static std::vector<float> rnd(size_t n, float mean, float sd) { std::vector<float> v(n); for (auto &x : v) x = mean + sd * (2 * urand() - 1) * 1.7f; return v; }
static double rel(const std::vector<float> &ref, const std::vector<float> &got, const std::vector<float> &init) {
    double num = 0, den = 0;
    for (size_t i = 0; i < ref.size(); i++) { double a = ref[i] - init[i], b = got[i] - init[i]; num += (a - b) * (a - b); den += a * a; }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}
int main(int argc, char **argv) {
    int B = atoi(argv[1]), n = atoi(argv[2]), nh = atoi(argv[3]), P = atoi(argv[4]), G = atoi(argv[5]), N = atoi(argv[6]), L = atoi(argv[7]);
    if (argc < 8) { fprintf(stderr, "usage: emu B n nh P G N L [p64 1|general 0] [defer 1|0] [acc 1|0]\n"); return 2; }
    int which = argc > 8 ? atoi(argv[8]) : 1;  /* 1: p64 kernel, 0: general kernel */
    DEFER = argc > 9 ? atoi(argv[9]) : 1;
    SERIAL = getenv("EMU_SERIAL") && atoi(getenv("EMU_SERIAL"));
    if (const char *r = getenv("EMU_ROUND")) ROUND = !strcmp(r, "tf32") ? 1 : !strcmp(r, "bf16") ? 2 : 0;
    TILE_ROUND = getenv("EMU_TILE") && !strcmp(getenv("EMU_TILE"), "bf16");
    const double TOL = getenv("EMU_TOL") ? atof(getenv("EMU_TOL")) : 1e-5;
    int ACC = argc > 10 ? atoi(argv[10]) : 1;  /* ops.h acc: 1 adds into dxbc / ddt_raw, 0 overwrites */
    pthread_barrier_init(&g_bar, NULL, 256);
    for (int w = 0; w < 8; w++) pthread_barrier_init(&w_bar[w], NULL, 32);
    int E = nh * P, W = E + 2 * G * N, nch = (n + L - 1) / L;
    SsdDims d = {B, n, nh, P, G, N, L, E, W, nch, 1};
    size_t nx = (size_t)B * n * W, ny = (size_t)B * n * E, ndt = (size_t)B * n * nh, PN = (size_t)P * N;
    auto xbc = rnd(nx, 0, 1), dtr = rnd(ndt, -2.5f, 1), dtb = rnd(nh, 0, 0.5f), D = rnd(nh, 1, 0.3f), dy = rnd(ny, 0, 1);
    std::vector<float> Al(nh);
    for (auto &a : Al) a = logf(1 + 15 * urand());
    std::vector<float> y(ny), st((size_t)B * (nch + 1) * nh * PN);
    cpu_ssd_fwd(y.data(), st.data(), xbc.data(), dtr.data(), dtb.data(), Al.data(), D.data(), B, n, nh, P, G, N, L);
    auto gx0 = rnd(nx, 0, 1), gdt0 = rnd(ndt, 0, 1), gdb0 = rnd(nh, 0, 1), gA0 = rnd(nh, 0, 1), gD0 = rnd(nh, 0, 1);
    auto cx = gx0, cdt = gdt0, cdb = gdb0, cA = gA0, cD = gD0;
    if (!ACC) { std::fill(cx.begin(), cx.end(), 0.f); std::fill(cdt.begin(), cdt.end(), 0.f); }
    cpu_ssd_bwd(cx.data(), cdt.data(), cdb.data(), cA.data(), cD.data(), dy.data(), st.data(), xbc.data(), dtr.data(), dtb.data(), Al.data(), D.data(), B, n, nh, P, G, N, L, ACC);
    auto ex = gx0, edt = gdt0, edb = gdb0, eA = gA0, eD = gD0;
    if (!ACC) {  /* as test_cuda: the outputs start as NaN; the host zeroes the B/C columns (ssd.cu) */
        std::fill(ex.begin(), ex.end(), NAN); std::fill(edt.begin(), edt.end(), NAN);
        for (size_t r = 0; r < (size_t)B * n; r++) for (int c = E; c < W; c++) ex[r * W + c] = 0.f;
        std::fill(gx0.begin(), gx0.end(), 0.f); std::fill(gdt0.begin(), gdt0.end(), 0.f);
    }
    std::vector<float> achunk((size_t)B * nh * nch), gbuf((size_t)B * nch * nh * PN, NAN);
    dim3 grid = {(unsigned)nch, (unsigned)nh, (unsigned)B};
    launch(grid, [&] { ssd_exact::ssd_chunk_state_kernel<false>(gbuf.data(), achunk.data(), dy.data(), xbc.data(), dtr.data(), dtb.data(), Al.data(), d); });
    launch({(unsigned)((PN + 255) / 256), (unsigned)nh, (unsigned)B}, [&] { ssd_exact::ssd_state_pass_bwd(gbuf.data(), achunk.data(), d); });
    /* as ssd.cu by default: the own terms and the state pass chained (ssd_chunk_state_bwd_chain_kernel;
     * tickets, so blocks in any launch order); its G must equal the two kernels' bit for bit (the same
     * products and the pass's expression). EMU_BWD_OLD=1 feeds the chunk kernel the two kernels' G. */
    std::vector<float> gbuf2(gbuf.size(), NAN);
    std::vector<int> bsync(1 + (size_t)B * nh * nch, 0);
    launch({(unsigned)(B * nh * nch), 1, 1}, [&] { ssd_exact::ssd_chunk_state_bwd_chain_kernel(gbuf2.data(), bsync.data(), dy.data(), xbc.data(), dtr.data(), dtb.data(), Al.data(), d); });
    size_t gdiff = 0;
    for (size_t i = 0; i < gbuf.size(); i++) gdiff += memcmp(&gbuf[i], &gbuf2[i], sizeof(float)) != 0;
    printf("   chain: G differs from state_pass's in %zu of %zu elements\n", gdiff, gbuf.size());
    /* ssd-sbwd: the chained kernel as its bf16-tile variant (ssd_chunk_state_bwd_chain_bf_kernel; ssd.cu's default at
     * the bf16 precision with P <= 64, N <= 128), both VEC variants where 16-byte loads apply; its G against the old
     * chained kernel's (not bit for bit: its products sum in the mma fragments' order; exact tiles unless EMU_TILE=bf16);
     * the chunk kernel then gets its G, as on the GPU, unless EMU_SBWD=old */
    double rgb = 0;
    std::vector<float> gbuf3, gbufw;
    if (ssd_exact::TC && P <= 64 && N <= 128) {
        const bool vec = ((E | W | P | N) & 3) == 0;
        for (int v = vec ? 1 : 0; v >= 0; v--) {
            std::vector<float> gb(gbuf.size(), NAN);
            std::vector<int> bs(1 + (size_t)B * nh * nch, 0);
            if (v)
                launch({(unsigned)(B * nh * nch), 1, 1}, [&] { ssd_exact::ssd_chunk_state_bwd_chain_bf_kernel<true, 4>(gb.data(), bs.data(), dy.data(), xbc.data(), dtr.data(), dtb.data(), Al.data(), d); });
            else
                launch({(unsigned)(B * nh * nch), 1, 1}, [&] { ssd_exact::ssd_chunk_state_bwd_chain_bf_kernel<false, 4>(gb.data(), bs.data(), dy.data(), xbc.data(), dtr.data(), dtb.data(), Al.data(), d); });
            /* slot 0 of each batch is dstates[1]; every slot is written (slot nch-1 zeroed), so NaN means a missed element */
            size_t nonfin = 0;
            for (float q : gb) nonfin += !std::isfinite(q);
            std::vector<float> zg(gb.size(), 0.f);
            const double r = rel(gbuf2, gb, zg);
            printf("   chain bf <%d>: G %.2e against the old chained kernel's; %zu not finite\n", v, r, nonfin);
            rgb = std::max(rgb, nonfin ? 1.0 : r);
            if (v == (vec ? 1 : 0)) gbuf3 = gb;
            /* ssd-sbwd-lb: the walk (ssd_chunk_state_bwd_walk_bf_kernel, FLOWHN_SSD_SBWD=walk; grid (N tiles, nh, B), no
             * chain): the same tiles, products and combine as the chained bf kernel, so its G must equal that kernel's
             * bit for bit (in any EMU_TILE / EMU_ROUND setting); it feeds the chunk kernel unless EMU_SBWD=chain or old */
            std::vector<float> gw(gbuf.size(), NAN);
            const dim3 wg = {(unsigned)((N + 63) / 64), (unsigned)nh, (unsigned)B};
            if (v)
                launch(wg, [&] { ssd_exact::ssd_chunk_state_bwd_walk_bf_kernel<true>(gw.data(), dy.data(), xbc.data(), dtr.data(), dtb.data(), Al.data(), d); });
            else
                launch(wg, [&] { ssd_exact::ssd_chunk_state_bwd_walk_bf_kernel<false>(gw.data(), dy.data(), xbc.data(), dtr.data(), dtb.data(), Al.data(), d); });
            size_t wdiff = 0;
            for (size_t i = 0; i < gw.size(); i++) wdiff += memcmp(&gw[i], &gb[i], sizeof(float)) != 0;
            printf("   walk bf <%d>: G differs from the chained bf kernel's in %zu of %zu elements; %.2e against the old chained kernel's\n",
                   v, wdiff, gw.size(), rel(gbuf2, gw, zg));
            if (wdiff) rgb = 1.0;
            if (v == (vec ? 1 : 0)) gbufw = gw;
        }
    }
    if (!(getenv("EMU_BWD_OLD") && atoi(getenv("EMU_BWD_OLD")))) {
        gbuf.swap(gbuf2);
        /* as ssd.cu's FLOWHN_SSD_SBWD: the walk by default (ssd-sbwd-lb), =chain the chained bf kernel, =old the old one */
        const char *sw = getenv("EMU_SBWD");
        if (!gbuf3.empty() && !(sw && !strcmp(sw, "old"))) gbuf.swap(!gbufw.empty() && !(sw && !strcmp(sw, "chain")) ? gbufw : gbuf3);
    }
    d.acc = ACC;
    /* as ssd.cu: C B^T once per (batch, chunk, group) for the p64 backward and chunk_scan */
    std::vector<float> cbuf((size_t)B * nch * G * 64 * 64, NAN);
    launch({(unsigned)nch, (unsigned)G, (unsigned)B}, [&] { ssd_exact::ssd_cb_kernel(cbuf.data(), xbc.data(), d); });
    if (which) {
        /* the thread layout, as ssd.cu's FLOWHN_SSD_CBWD: EMU_CBWD=old (or EMU_CBWD_OLD=1) the first one,
         * =wl the warp-local one, =mma the mma fragment layout (its host mma.sync, gen.py), else the bf16
         * variant (layout 3) in the tensor-core build and the warp-local one in the exact build */
        const char *cw = getenv("EMU_CBWD");
        int lay = (cw && !strcmp(cw, "old")) || (getenv("EMU_CBWD_OLD") && atoi(getenv("EMU_CBWD_OLD"))) ? 0
                  : (cw && !strcmp(cw, "wl")) ? 1 : (cw && !strcmp(cw, "mma")) ? 2 : !ssd_exact::TC ? 1
                  : (cw && !strcmp(cw, "bf3")) ? 3 : (cw && !strcmp(cw, "bf5")) ? 5 : (cw && !strcmp(cw, "bf9")) ? 9
                  /* EMU_CBWD=bf4: ssd-cbwd4's V 4 where W, P, N are even (as ssd.cu), else V 5; by default ssd-ldsm's
                   * V 8 / 9 (FLOWHN_SSD_CBWD unset) */
                  : (cw && !strcmp(cw, "bf4")) ? (((d.W | P | N) & 1) == 0 ? 4 : 5)
                  : ((d.W | P | N) & 1) == 0 ? 8 : 9;
        printf("     p64 layout %d\n", lay);
        if (lay == 0)
            launch(grid, [&] { ssd_exact::ssd_chunk_bwd_p64_kernel<0>(ex.data(), edt.data(), edb.data(), eA.data(), eD.data(), dy.data(), st.data(), gbuf.data(), xbc.data(), dtr.data(), dtb.data(), Al.data(), D.data(), cbuf.data(), d); });
        else if (lay == 1)
            launch(grid, [&] { ssd_exact::ssd_chunk_bwd_p64_kernel<1>(ex.data(), edt.data(), edb.data(), eA.data(), eD.data(), dy.data(), st.data(), gbuf.data(), xbc.data(), dtr.data(), dtb.data(), Al.data(), D.data(), cbuf.data(), d); });
        else if (lay == 2)
            launch(grid, [&] { ssd_exact::ssd_chunk_bwd_p64_kernel<2>(ex.data(), edt.data(), edb.data(), eA.data(), eD.data(), dy.data(), st.data(), gbuf.data(), xbc.data(), dtr.data(), dtb.data(), Al.data(), D.data(), cbuf.data(), d); });
        else if (lay == 3)  /* 3: the bf16 variant as ssd-cbwd3 left it (FLOWHN_SSD_CBWD=bf3; EMU_TILE=bf16 rounds its tiles) */
            launch(grid, [&] { ssd_exact::ssd_chunk_bwd_p64_bf_kernel<3>(ex.data(), edt.data(), edb.data(), eA.data(), eD.data(), dy.data(), st.data(), gbuf.data(), xbc.data(), dtr.data(), dtb.data(), Al.data(), D.data(), cbuf.data(), d); });
        else if (lay == 4)  /* 4: ssd-cbwd4's (the default at the bf16 precision) */
            launch(grid, [&] { ssd_exact::ssd_chunk_bwd_p64_bf_kernel<4>(ex.data(), edt.data(), edb.data(), eA.data(), eD.data(), dy.data(), st.data(), gbuf.data(), xbc.data(), dtr.data(), dtb.data(), Al.data(), D.data(), cbuf.data(), d); });
        else if (lay == 5)  /* 5: the same with scalar global accesses (odd W, P or N) */
            launch(grid, [&] { ssd_exact::ssd_chunk_bwd_p64_bf_kernel<5>(ex.data(), edt.data(), edb.data(), eA.data(), eD.data(), dy.data(), st.data(), gbuf.data(), xbc.data(), dtr.data(), dtb.data(), Al.data(), D.data(), cbuf.data(), d); });
        else if (lay == 8)  /* 8: ssd-ldsm's (V 4 with ldmatrix fragment loads; the default at the bf16 precision) */
            launch(grid, [&] { ssd_exact::ssd_chunk_bwd_p64_bf_kernel<8>(ex.data(), edt.data(), edb.data(), eA.data(), eD.data(), dy.data(), st.data(), gbuf.data(), xbc.data(), dtr.data(), dtb.data(), Al.data(), D.data(), cbuf.data(), d); });
        else  /* 9: V 8 with scalar global accesses (odd W, P or N) */
            launch(grid, [&] { ssd_exact::ssd_chunk_bwd_p64_bf_kernel<9>(ex.data(), edt.data(), edb.data(), eA.data(), eD.data(), dy.data(), st.data(), gbuf.data(), xbc.data(), dtr.data(), dtb.data(), Al.data(), D.data(), cbuf.data(), d); });
    } else
        launch(grid, [&] { ssd_exact::ssd_chunk_bwd_kernel(ex.data(), edt.data(), edb.data(), eA.data(), eD.data(), dy.data(), st.data(), gbuf.data(), xbc.data(), dtr.data(), dtb.data(), Al.data(), D.data(), d); });
    /* the forward kernels too (states, y) */
    std::vector<float> est(st.size(), NAN), ey(ny, NAN), ach2((size_t)B * nh * nch);
    launch(grid, [&] { ssd_exact::ssd_chunk_state_kernel<true>(est.data(), ach2.data(), NULL, xbc.data(), dtr.data(), dtb.data(), Al.data(), d); });
    launch({(unsigned)((PN + 255) / 256), (unsigned)nh, (unsigned)B}, [&] { ssd_exact::ssd_state_pass_fwd(est.data(), ach2.data(), d); });
    launch(grid, [&] { ssd_exact::ssd_chunk_scan_kernel(ey.data(), est.data(), xbc.data(), dtr.data(), dtb.data(), Al.data(), D.data(), cbuf.data(), d); });
    std::vector<float> z0(ny, 0.f), zs(st.size(), 0.f);
    double ry = rel(y, ey, z0), rst = rel(st, est, zs);
    printf("     fwd: y %.2e states %.2e\n", ry, rst);
    /* ssd-fwd2: chunk_state and chunk_scan as their bf16-tile kernels (ssd.cu at the bf16 precision, P <= 64, N <= 128): the
     * state pass between them, the same C B^T; VEC as ssd.cu picks it (16-byte loads where W, E, P, N are multiples of 4), and
     * the scalar variant too; EMU_TILE=bf16 rounds its tiles as the GPU does (else exact: indices at 1e-5) */
    double ryb = 0;
    if (ssd_exact::TC && P <= 64 && N <= 128) {
        const bool vec = ((W | E | P | N) & 3) == 0;
        const int fwd_hi = getenv("EMU_FWD") && atoi(getenv("EMU_FWD")) == 2 ? 0 : 1;
        for (int vv = (vec ? 1 : 0) + 2 * fwd_hi; vv >= 0; vv--) {
            /* vv: VEC (bit 0) and the variant V = 2 + (vv >> 1): ssd-fwd3's (V 3: ldmatrix, bf16 m16n8k16, unrolled
             * walks; ssd.cu's default) first, then ssd-fwd2's (V 2); EMU_FWD=2 runs only V 2 */
            const int v = vv & 1, V3 = vv >> 1;
            if (!vec && v) continue;
            /* as ssd.cu: ssd_chunk_state_bf_kernel, the state pass, ssd_chunk_scan_bf_kernel on its states */
            std::vector<float> eyb(ny, NAN), estb(st.size(), NAN), ach3((size_t)B * nh * nch, NAN);
            auto pass = [&] { launch({(unsigned)((PN + 255) / 256), (unsigned)nh, (unsigned)B}, [&] { ssd_exact::ssd_state_pass_fwd(estb.data(), ach3.data(), d); }); };
#define EMU_FWD_BF(VEC, VV)                                                                                                         \
            launch(grid, [&] { ssd_exact::ssd_chunk_state_bf_kernel<VEC, VV>(estb.data(), ach3.data(), xbc.data(), dtr.data(), dtb.data(), Al.data(), d); }); \
            pass();                                                                                                                 \
            launch(grid, [&] { ssd_exact::ssd_chunk_scan_bf_kernel<VEC, VV>(eyb.data(), estb.data(), xbc.data(), dtr.data(), dtb.data(), Al.data(), D.data(), cbuf.data(), d); })
            if (v && V3) { EMU_FWD_BF(true, 3); }
            else if (V3) { EMU_FWD_BF(false, 3); }
            else if (v) { EMU_FWD_BF(true, 2); }
            else { EMU_FWD_BF(false, 2); }
#undef EMU_FWD_BF
            double r1 = rel(y, eyb, z0), r2 = rel(ey, eyb, z0), r3 = rel(st, estb, zs), r4 = rel(est, estb, zs);
            size_t nonfin = 0, adiff = 0;
            for (float q : eyb) nonfin += !std::isfinite(q);
            for (float q : estb) nonfin += !std::isfinite(q);
            for (size_t i = 0; i < ach3.size(); i++) adiff += memcmp(&ach3[i], &ach2[i], sizeof(float)) != 0;
            printf("     fwd%d <%d>: y %.2e against the CPU, %.2e against the old kernels; states %.2e, %.2e; "
                   "a_c differs in %zu; %zu not finite\n", 2 + V3, v, r1, r2, r3, r4, adiff, nonfin);
            ryb = std::max(ryb, nonfin || adiff ? 1.0 : std::max(std::max(r1, r2), std::max(r3, r4)));
            if (V3) {
                /* ssd-fwd-walk (FLOWHN_SSD_FWD_WALK, ssd.cu's default over V 3): chunk_state V 3 and the pass as one
                 * walk, grid (N tiles, nh, B); its states must equal the two kernels' bit for bit (every slot
                 * NaN-initialised, so a missed element shows), and chunk_scan V 3 on them must give the same y */
                std::vector<float> estw(st.size(), NAN), eyw(ny, NAN);
                const dim3 wg{(unsigned)((N + 63) / 64), (unsigned)nh, (unsigned)B};
                if (v) launch(wg, [&] { ssd_exact::ssd_chunk_state_fwd_walk_bf_kernel<true>(estw.data(), xbc.data(), dtr.data(), dtb.data(), Al.data(), d); });
                else launch(wg, [&] { ssd_exact::ssd_chunk_state_fwd_walk_bf_kernel<false>(estw.data(), xbc.data(), dtr.data(), dtb.data(), Al.data(), d); });
                if (v) launch(grid, [&] { ssd_exact::ssd_chunk_scan_bf_kernel<true, 3>(eyw.data(), estw.data(), xbc.data(), dtr.data(), dtb.data(), Al.data(), D.data(), cbuf.data(), d); });
                else launch(grid, [&] { ssd_exact::ssd_chunk_scan_bf_kernel<false, 3>(eyw.data(), estw.data(), xbc.data(), dtr.data(), dtb.data(), Al.data(), D.data(), cbuf.data(), d); });
                size_t sdiff = 0, ydiff = 0;
                for (size_t i = 0; i < estw.size(); i++) sdiff += memcmp(&estw[i], &estb[i], sizeof(float)) != 0;
                for (size_t i = 0; i < eyw.size(); i++) ydiff += memcmp(&eyw[i], &eyb[i], sizeof(float)) != 0;
                const double rw = rel(st, estw, zs), ryw = rel(y, eyw, z0);
                printf("     fwd walk <%d>: states differ from chunk_state V 3 + pass in %zu of %zu, y in %zu of %zu; "
                       "states %.2e, y %.2e against the CPU\n", v, sdiff, estw.size(), ydiff, eyw.size(), rw, ryw);
                ryb = std::max(ryb, sdiff || ydiff ? 1.0 : std::max(rw, ryw));
            }
        }
    }
    double r[5] = {rel(cx, ex, gx0), rel(cdt, edt, gdt0), rel(cdb, edb, gdb0), rel(cA, eA, gA0), rel(cD, eD, gD0)};
    bool ok = true;
    for (double v : r) ok = ok && v < TOL;
    ok = ok && gdiff == 0 && rgb < TOL;
    for (float v : ex) ok = ok && std::isfinite(v);
    ok = ok && ry < TOL && rst < TOL && ryb < TOL;
    if (const char *dump = getenv("EMU_DUMP")) {  /* raw outputs, for bit-for-bit comparison across a refactor */
        FILE *f = fopen(dump, "wb");
        for (auto *v : {&ex, &edt, &edb, &eA, &eD, &ey, &est}) fwrite(v->data(), sizeof(float), v->size(), f);
        fclose(f);
    }
    printf("%s acc=%d defer=%d B=%d n=%d nh=%d P=%d G=%d N=%d L=%d kernel=%s: dxbc %.2e ddt %.2e ddt_bias %.2e dA_log %.2e dD %.2e\n",
           ok ? "ok  " : "FAIL", ACC, DEFER, B, n, nh, P, G, N, L, which ? "p64" : "general", r[0], r[1], r[2], r[3], r[4]);
    return ok ? 0 : 1;
}
