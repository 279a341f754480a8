# Turns ssd_kernels.cuh into host C++ for the thread emulation (tools/ssd_emu/emu.cpp).
#   python3 gen.py [--tc] ssd_kernels.cuh out.h
# Without --tc: the exact build (fp32 products, no copies in flight).
# With --tc: the tensor-core build's schedule: the products stay exact fp32 (wmma is not emulated) but
# keep mm_tc's two barriers, and cp.async copies go through emu.cpp's cp_issue / cp_wait_all, which can
# land them early or late.
import re, sys
tc = sys.argv[1] == "--tc"
src, dst = sys.argv[1 + tc], sys.argv[2 + tc]
s = open(src).read()
# wmma (mm_strip) is replaced by a host product that writes the warp's strip of Sx the way the
# fragments' store does: its own strip only, with an arbitrary lane <-> element assignment (wmma's is
# opaque) and K rounded up to 8 as the k-steps are; mm_tc's way back into the thread layout (and its
# barriers: block-wide, or __syncwarp in the warp-local layout) is the kernels' own code.
a = s.index("/* The same product on tensor cores")
b = s.index("/* The strips back into the callers' thread layout")
strip = """template <bool A_RK, bool B_CK, int UNR = 1>
inline void mm_strip(const float *A, const float *Bm, int K, float *Sx) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, r0 = (warp >> 1) * 16, c0 = (warp & 1) * 32;
    const int K8 = (K + 7) & ~7;
    for (int m = 0; m < 16; m++) {
        int r = r0 + m, c = c0 + ((lane * 5 + m) & 31);  /* row m: a permutation of the lanes */
        float s = 0.f;
        for (int k = 0; k < K8; k++) s += (A_RK ? A[r * LD + k] : A[k * LD + r]) * (B_CK ? Bm[c * LD + k] : Bm[k * LD + c]);
        Sx[r * LD + c] = s;
    }
}

"""
s = s[:a] + strip + s[b:]
# The mma.sync primitives of mm_mma (the p64 backward's layout 2) are replaced by host versions that
# do what the PTX ISA defines for mma.m16n8k8 .tf32 ("Matrix Fragments for mma.m16n8k8"): each lane
# hands in its fragments (A: a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4); B: b0 (k t, n g),
# b1 (k t+4, n g); g = lane >> 2, t = lane & 3), the warp exchanges them (a warp barrier each side),
# and each lane gets back its own C/D elements c0 (g, 2t), c1 (g, 2t+1), c2 (g+8, 2t), c3 (g+8, 2t+1).
# So mm_mma's loads, its k-steps and the thread layout Lay<2> built on the fragments are checked as
# written; only the operands' rounding is the emulator's (emu_round: none by default, EMU_ROUND=tf32
# or bf16 to measure what the rounding costs against the CPU).
a = s.index("/* One warp-wide mma.sync m16n8k8")
b = s.index("/* end of the mma primitives */")
mma = """inline unsigned tf32_bits(float v) { return emu_round(v); }
inline void mma_tf32(float &d0, float &d1, float &d2, float &d3, const unsigned a[4], const unsigned b[2]) {
    static unsigned fa[8][32][4], fb[8][32][2];
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31, g = l >> 2, t = l & 3;
    for (int q = 0; q < 4; q++) fa[w][l][q] = a[q];
    fb[w][l][0] = b[0]; fb[w][l][1] = b[1];
    __syncwarp();
    /* A(r, k) is lane 4 (r & 7) + (k & 3)'s register (r >> 3) + 2 (k >> 2); B(k, n) lane 4 n + (k & 3)'s k >> 2 */
    auto A = [&](int r, int k) { return emu_f(fa[w][4 * (r & 7) + (k & 3)][(r >> 3) + 2 * (k >> 2)]); };
    auto B = [&](int k, int n) { return emu_f(fb[w][4 * n + (k & 3)][k >> 2]); };
    float *d[4] = {&d0, &d1, &d2, &d3};
    for (int i = 0; i < 4; i++) {
        int r = g + 8 * (i >> 1), c = 2 * t + (i & 1);
        float s = 0.f;
        for (int k = 0; k < 8; k++) s += A(r, k) * B(k, c);
        *d[i] += s;
    }
    __syncwarp();
}
"""
s = s[:a] + mma + s[b:]
# The bf16 tiles of the p64 backward's bf16 variant: a 4-byte host type (the kernel keeps its bf16 pair
# in the last tile, so the wider host tiles run into unused shared memory), rounded to bf16 by emu_tile
# only with EMU_TILE=bf16 (exact by default, so that the 1e-5 bound checks the indices).
a = s.index("typedef __nv_bfloat16 bf16t;")
b = s.index("/* end of the bf16 primitives */")
s = s[:a] + """struct bf16t { float v; };
inline bf16t to_bf(float v) { return {emu_tile(v)}; }
inline float from_bf(bf16t v) { return v.v; }
inline void st_bf4(bf16t *p, float4 v) { p[0] = to_bf(v.x); p[1] = to_bf(v.y); p[2] = to_bf(v.z); p[3] = to_bf(v.w); }
inline float2 ld_bf2(const bf16t *p) { return {p[0].v, p[1].v}; }
""" + s[b:]
# ssd-fwd3's ldmatrix and bf16 mma.m16n8k16 (mm_ldsm): the warp exchanges what the PTX ISA defines
# ("Warp-level matrix load instruction: ldmatrix", "Matrix Fragments for mma.m16n8k16" .bf16): lanes 8i..8i+7 hand
# in the row addresses of matrix i (each must be 16-byte aligned on the GPU: 8 host elements, checked here against
# shared memory's start), lane (g, t) gets row g, columns 2t, 2t+1 of each (or with .trans row 2t, 2t+1 of column
# g) as one register (host: the two values); the mma reads A(r, k) from lane 4 (r & 7) + ((k & 7) >> 1)'s register
# (r >> 3) + 2 (k >> 3), half k & 1, and B(k, n) from lane 4 n + ((k & 7) >> 1)'s register k >> 3, half k & 1.
a = s.index("typedef unsigned bfrag;")
b = s.index("/* end of the ldmatrix primitives */")
s = s[:a] + """struct bfrag { float lo, hi; };
inline void ldsm_(bfrag r[4], const bf16t *p, bool tr) {
    static const bf16t *rows[8][32];
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31, g = l >> 2, t = l & 3;
    if (((const float *)p - g_smem) % 8 != 0) { fprintf(stderr, "ldmatrix: row address not 16-byte aligned\\n"); abort(); }
    rows[w][l] = p;
    __syncwarp();
    for (int i = 0; i < 4; i++) {
        if (tr) r[i] = {rows[w][8 * i + 2 * t][g].v, rows[w][8 * i + 2 * t + 1][g].v};
        else r[i] = {rows[w][8 * i + g][2 * t].v, rows[w][8 * i + g][2 * t + 1].v};
    }
    __syncwarp();
}
inline void ldsm_x4(bfrag r[4], const bf16t *p) { ldsm_(r, p, false); }
inline void ldsm_x4_t(bfrag r[4], const bf16t *p) { ldsm_(r, p, true); }
inline void mma_bf16(float &d0, float &d1, float &d2, float &d3, const bfrag a[4], const bfrag b[2]) {
    static bfrag fa[8][32][4], fb[8][32][2];
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31, g = l >> 2, t = l & 3;
    for (int q = 0; q < 4; q++) fa[w][l][q] = a[q];
    fb[w][l][0] = b[0]; fb[w][l][1] = b[1];
    __syncwarp();
    auto half = [](const bfrag &f, int h) { return h ? f.hi : f.lo; };
    auto A = [&](int r, int k) { return half(fa[w][4 * (r & 7) + ((k & 7) >> 1)][(r >> 3) + 2 * (k >> 3)], k & 1); };
    auto B = [&](int k, int n) { return half(fb[w][4 * n + ((k & 7) >> 1)][k >> 3], k & 1); };
    float *d[4] = {&d0, &d1, &d2, &d3};
    for (int i = 0; i < 4; i++) {
        int r = g + 8 * (i >> 1), c = 2 * t + (i & 1);
        float s = 0.f;
        for (int k = 0; k < 16; k++) s += A(r, k) * B(k, c);
        *d[i] += s;
    }
    __syncwarp();
}
""" + s[b:]
# The ldmatrix primitives of mm_mma_l (the bf16 variant's V 8, ssd-ldsm): each lane hands in its row address, the
# warp exchanges them (a warp barrier each side), and lane (g, t) reads what the PTX ISA gives it ("Warp-level
# matrix load instruction: ldmatrix"): word t of row g of each matrix (fp32 rows: the float; bf16 rows: elements
# 2t, 2t + 1), or with .trans elements g of rows 2t, 2t + 1. Rounded as mm_mma_s rounds its operands.
a = s.index("/* ldmatrix primitives")
b = s.index("/* end of the ldmatrix primitives */", a)   # the second marker: ssd-fwd3's block comes first
s = s[:a] + """template <class T, class F>
inline void ldsm_emu(const T *p, F f) {
    static const void *pa[8][32];
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    pa[w][l] = p;
    __syncwarp();
    for (int j = 0; j < 4; j++) f(j, [&](int i) { return (const T *)pa[w][8 * j + i]; });
    __syncwarp();
}
inline void ldsm_f32(unsigned r[4], const float *p) {
    const int g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;
    ldsm_emu(p, [&](int j, auto row) { r[j] = tf32_bits(row(g)[t]); });
}
inline void ldsm_bf(unsigned lo[4], unsigned hi[4], const bf16t *p) {
    const int g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;
    ldsm_emu(p, [&](int j, auto row) { lo[j] = tf32_bits(from_bf(row(g)[2 * t])); hi[j] = tf32_bits(from_bf(row(g)[2 * t + 1])); });
}
inline void ldsm_bf_t(unsigned lo[4], unsigned hi[4], const bf16t *p) {
    const int g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;
    ldsm_emu(p, [&](int j, auto row) { lo[j] = tf32_bits(from_bf(row(2 * t)[g])); hi[j] = tf32_bits(from_bf(row(2 * t + 1)[g])); });
}
""" + s[b:]
wait = '    if constexpr (TC) asm volatile("cp.async.wait_all;\\n" ::);\n'
cp16z = r'__device__ __forceinline__ void cp16z\(float \*dst, const float \*src, bool valid\) \{.*?\n\}'
if tc:
    s = s.replace(wait, '    if constexpr (TC) cp_wait_all();\n')
    s = re.sub(cp16z, 'inline void cp16z(float *dst, const float *src, bool valid) { cp_issue(dst, src, valid); }', s,
               flags=re.S)
else:
    s = s.replace(wait, '')
    s = re.sub(cp16z, 'inline void cp16z(float *dst, const float *src, bool valid) '
               '{ for (int q = 0; q < 4; q++) dst[q] = valid ? src[q] : 0.f; }', s, flags=re.S)
s = re.sub(r'__device__ __forceinline__ size_t opaque\(size_t v\) \{.*?\n\}', 'inline size_t opaque(size_t v) { return v; }',
           s, flags=re.S)
s = s.replace("extern __shared__ __align__(128) float smem[];", "float *smem = g_smem;")
s = s.replace("__shared__", "static")
s = re.sub(r'__launch_bounds__\([^)]*\)', '', s)
s = s.replace("__global__", "").replace("__device__", "").replace("__forceinline__", "inline")
assert "asm" not in s, [l for l in s.split("\n") if "asm" in l]
open(dst, "w").write(s)
