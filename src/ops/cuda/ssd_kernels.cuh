/* ssd_kernels.cuh - the chunked SSD kernels (see ssd.cu), included once per
 * namespace: ssd_exact (LD 65, fp32 CUDA-core products) and ssd_tc (LD 68,
 * TF32 tensor-core products); LD and TC come from the namespace. */
/* ---- shared-memory tile helpers ---- */

/* ---- barriers and asynchronous tile copies ----
 * The tensor-core build copies tiles with cp.async (16 bytes, zero-filled
 * past the valid rows), so that all of a phase's tiles are in flight at once;
 * every barrier first waits for the thread's own copies, which makes them
 * visible to the block after it, as the plain stores were. */
__device__ __forceinline__ void bar() {
    if constexpr (TC) asm volatile("cp.async.wait_all;\n" ::);
    __syncthreads();
}
/* A barrier that leaves the thread's cp.async copies in flight: for shared
 * data written with plain stores (the decays, mm_tc's scratch tile) and for
 * the end of a tile's readers, so that copies issued earlier keep overlapping
 * the work in between (only bar() may precede a read of copied tiles). */
__device__ __forceinline__ void sync_plain() { __syncthreads(); }
/* v, as a value the compiler cannot see through (nothing derived from it is hoisted out of a loop) */
__device__ __forceinline__ size_t opaque(size_t v) {
    asm volatile("" : "+l"(v));
    return v;
}
__device__ __forceinline__ void cp16z(float *dst, const float *src, bool valid) {
    unsigned sa = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sa), "l"(src), "r"(valid ? 16 : 0));
}

/* Element (r, c) of a shared tile: rows of M elements (M > 0), or (M == 0: the bf16 variant's V 4, its Ua
 * and Ys) rows of LDS = 72 floats with the columns XOR-swizzled by 4 ((r >> 2) & 1). Row stride 72 (bank 8r
 * + c) makes mm_mma's (k + t, x + g) reads conflict-free; the swizzle makes its (x + g, k + t) reads (rows g
 * and g + 4, 8 (g & 3) apart otherwise) and a C-layout float2 (columns 2t, 2t + 1 of rows g) conflict-free
 * too; 16-byte chunks and column pairs stay whole (perf-notes, ssd-cbwd4). tixs is the same index with the
 * row and the column split as hi + lo, hi a multiple of 8 and lo < 8, so that the swizzle (which sees only
 * the low bits) folds into per-thread constants and immediates. */
constexpr int LDS = 72;
template <int M>
__device__ __forceinline__ int tix(int r, int c) {
    if constexpr (M == 0) return r * LDS + (c ^ (4 * ((r >> 2) & 1)));
    else return r * M + c;
}
template <int M>
__device__ __forceinline__ int tixs(int rh, int rl, int ch, int cl) {
    if constexpr (M == 0) return (rh + rl) * LDS + ch + (cl ^ (4 * ((rl >> 2) & 1)));
    else return (rh + rl) * M + ch + cl;
}

/* dst[tix<M>(r, c)] = s_r * src[r*ld + c] (s_r = 1 without rs) inside rows x cols, 0 in the rest of the tile.
 * In the tensor-core build (LD 68: 16-byte aligned rows), 16-byte copies when the rows allow (the
 * model's P, N and row widths are multiples of 4): cp.async without a row scale (completed by the
 * next bar()), else 16-byte loads, all issued before the scaled 16-byte stores.
 * M = LD: rows of LD (load_tile); M = 0: the bf16 variant's V 4 tiles (Ys, Ua swizzled at LDS). */
template <int M>
__device__ __forceinline__ void load_tile_m(float *dst, const float *src, size_t ld, int rows, int cols,
                                          const float *rs = nullptr) {
    if (TC && !rs && (((uintptr_t)src | (ld * sizeof(float))) & 15) == 0 && (cols & 3) == 0) {
#pragma unroll
        for (int q = 0; q < TS * TS / 4 / NT; q++) {
            int idx = threadIdx.x + q * NT, r = idx >> 4, c = (idx & 15) * 4;
            bool ok = r < rows && c < cols;
            cp16z(dst + tix<M>(r, c), ok ? src + (size_t)r * ld + c : src, ok);
        }
        return;
    }
    if (TC && (((uintptr_t)src | (ld * sizeof(float))) & 15) == 0 && (cols & 3) == 0) {
        float4 v[TS * TS / 4 / NT];
#pragma unroll
        for (int q = 0; q < TS * TS / 4 / NT; q++) {
            int idx = threadIdx.x + q * NT, r = idx >> 4, c = (idx & 15) * 4;
            v[q] = make_float4(0.f, 0.f, 0.f, 0.f);
            if (r < rows && c < cols) v[q] = *(const float4 *)(src + (size_t)r * ld + c);
        }
#pragma unroll
        for (int q = 0; q < TS * TS / 4 / NT; q++) {
            int idx = threadIdx.x + q * NT, r = idx >> 4, c = (idx & 15) * 4;
            float sr = (rs && r < rows) ? rs[r] : 1.f;
            *(float4 *)(dst + tix<M>(r, c)) = make_float4(v[q].x * sr, v[q].y * sr, v[q].z * sr, v[q].w * sr);
        }
        return;
    }
    for (int idx = threadIdx.x; idx < TS * TS; idx += NT) {
        int r = idx >> 6, c = idx & (TS - 1);
        float v = 0.f;
        if (r < rows && c < cols) v = src[(size_t)r * ld + c] * (rs ? rs[r] : 1.f);
        dst[tix<M>(r, c)] = v;
    }
}
__device__ __forceinline__ void load_tile(float *dst, const float *src, size_t ld, int rows, int cols,
                                          const float *rs = nullptr) {
    load_tile_m<LD>(dst, src, ld, rows, cols, rs);
}

/* ---- the thread layouts of a 64 x 64 output: thread owns rows row(a), columns col(b), a, b < 4 ----
 * WL 0 (every kernel but the p64 backward's newer paths): rows ty + 16a, columns tx + 16b (ty =
 * tid >> 4, tx = tid & 15): a row's owners are the 16 lanes of a half-warp, and a warp's 512
 * elements lie in every warp's wmma strip, so mm_tc's way back goes through the whole block.
 * WL 1 (warp-local): warp w owns exactly its wmma strip, rows 16 (w >> 1) .. +16, columns
 * 32 (w & 1) .. +32; lane l owns rows 2 (l >> 3) + {0, 1, 8, 9} and columns (l & 7) + 8b of it, so
 * the way back needs only __syncwarp; a row's owners are 8 lanes (l & 7) of each of two warps. The rows
 * 2 (l >> 3) + const make a row-major read of LD 68 (bank 4 row + col) conflict-free across the warp.
 * WL 2 (mma fragments, the tensor-core build's default for the p64 backward): warp w owns rows
 * 32 (w >> 2) .. +32, columns 16 (w & 3) .. +16; lane l (g = l >> 2, t = l & 3) owns rows g + 8a and
 * columns 2t + (b & 1) + 8 (b >> 1): the union of the C/D fragments of the 2 x 2 m16n8k8 mmas that cover
 * the strip (PTX ISA, "Matrix Fragments for mma.m16n8k8": c0, c1 at row g, columns 2t, 2t + 1; c2, c3
 * at row g + 8), so the accumulators are the thread's elements and no way back is needed (mm_mma).
 * A row's owners are the 4 lanes of a quad (t) in each of 4 warps. */
template <int WL>
struct Lay {
    int r0, c0;
    __device__ __forceinline__ Lay() {
        const int w = threadIdx.x >> 5, l = threadIdx.x & 31;
        if constexpr (WL == 2) {
            r0 = 32 * (w >> 2) + (l >> 2);
            c0 = 16 * (w & 3) + 2 * (l & 3);
        } else if constexpr (WL == 1) {
            r0 = 16 * (w >> 1) + 2 * (l >> 3);
            c0 = 32 * (w & 1) + (l & 7);
        } else {
            r0 = threadIdx.x >> 4;
            c0 = threadIdx.x & 15;
        }
    }
    __device__ __forceinline__ int row(int a) const {
        return WL == 2 ? r0 + 8 * a : WL == 1 ? r0 + (a & 1) + 8 * (a >> 1) : r0 + 16 * a;
    }
    __device__ __forceinline__ int col(int b) const {
        return WL == 2 ? c0 + (b & 1) + 8 * (b >> 1) : WL == 1 ? c0 + 8 * b : c0 + 16 * b;
    }
    /* v summed over the owners of the thread's rows inside its warp (the lanes that differ in col) */
    __device__ __forceinline__ float row_sum(float v) const {
        for (int o = WL == 2 ? 2 : WL == 1 ? 4 : 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        return v;
    }
    /* one lane per row and warp (the one that adds row_sum's result) */
    __device__ __forceinline__ bool row_lead() const {
        return (threadIdx.x & (WL == 2 ? 3 : WL == 1 ? 7 : 15)) == 0;
    }
};

/* acc[a][b] += sum_{k<K} A(k, row(a)) * Bm(k, col(b)), where A(k, r) is A[r][k]
 * (A_RK) or A[k][r], and Bm(k, c) is Bm[c][k] (B_CK) or Bm[k][c]. */
template <bool A_RK, bool B_CK, int WL = 0>
__device__ __forceinline__ void mm_fma(float acc[4][4], const float *A, const float *Bm, int K) {
    const Lay<WL> L;
    const int ak = A_RK ? 1 : LD, bk = B_CK ? 1 : LD;
#pragma unroll 4
    for (int k = 0; k < K; k++) {
        float av[4], bv[4];
#pragma unroll
        for (int q = 0; q < 4; q++) {
            av[q] = A[k * ak + (A_RK ? L.row(q) * LD : L.row(q))];
            bv[q] = Bm[k * bk + (B_CK ? L.col(q) * LD : L.col(q))];
        }
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
}


/* The same product on tensor cores (TF32 in, fp32 accumulate), the path of the
 * tf32 and bf16 matmul precisions. Warp w owns the 16 x 32 output strip (rows
 * 16 (w >> 1), columns 32 (w & 1)) as two 16 x 16 fragments; the operands are
 * the same shared tiles (LD = 68 here: wmma wants 16-byte row strides and
 * 32-byte aligned fragments), read row- or column-major as they lie. mm_strip
 * stores the warp's strip of the product into the scratch tile Sx (fragment
 * layouts are opaque); K is rounded up to 8: the tiles are zero past the valid
 * rows and columns. UNR: the k-loop's unroll, 2 in the warp-local path (a warp
 * no longer waits at a block barrier after the product, so its own latency chain
 * is what is left: the next k-step's fragment loads may issue before this step's
 * mma; ptxas: still 128 registers, 0 spills), 1 in the first layout (as it was).
 * (tools/ssd_emu/gen.py replaces mm_strip with a host version from here to mm_tc.) */
template <bool A_RK, bool B_CK, int UNR = 1>
__device__ __forceinline__ void mm_strip(const float *A, const float *Bm, int K, float *Sx) {
    using namespace nvcuda;
    typedef typename std::conditional<A_RK, wmma::row_major, wmma::col_major>::type LA;
    typedef typename std::conditional<B_CK, wmma::col_major, wmma::row_major>::type LB;
    const int warp = threadIdx.x >> 5, r0 = (warp >> 1) * 16, c0 = (warp & 1) * 32;
    wmma::fragment<wmma::accumulator, 16, 16, 8, float> f0, f1;
    wmma::fill_fragment(f0, 0.f);
    wmma::fill_fragment(f1, 0.f);
#pragma unroll UNR
    for (int k0 = 0; k0 < K; k0 += 8) {
        wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, LA> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, LB> fb0, fb1;
        wmma::load_matrix_sync(fa, A_RK ? A + r0 * LD + k0 : A + k0 * LD + r0, LD);
        wmma::load_matrix_sync(fb0, B_CK ? Bm + c0 * LD + k0 : Bm + k0 * LD + c0, LD);
        wmma::load_matrix_sync(fb1, B_CK ? Bm + (c0 + 16) * LD + k0 : Bm + k0 * LD + c0 + 16, LD);
#pragma unroll
        for (int t = 0; t < fa.num_elements; t++) fa.x[t] = wmma::__float_to_tf32(fa.x[t]);
#pragma unroll
        for (int t = 0; t < fb0.num_elements; t++) {
            fb0.x[t] = wmma::__float_to_tf32(fb0.x[t]);
            fb1.x[t] = wmma::__float_to_tf32(fb1.x[t]);
        }
        wmma::mma_sync(f0, fa, fb0, f0);
        wmma::mma_sync(f1, fa, fb1, f1);
    }
    wmma::store_matrix_sync(Sx + r0 * LD + c0, f0, LD, wmma::mem_row_major);
    wmma::store_matrix_sync(Sx + r0 * LD + c0 + 16, f1, LD, wmma::mem_row_major);
}

/* The strips back into the callers' thread layout (every epilogue stays as it is). In the
 * WL 0 layout a thread's elements lie in other warps' strips: two block barriers (Sx
 * written; Sx read, free for the next product). In the warp-local one (WL 1) they lie in the warp's
 * own strip: __syncwarp for both. Every thread of the block (WL 1: of the warp) must call it. */
template <bool A_RK, bool B_CK, int WL>
__device__ __forceinline__ void mm_tc(float acc[4][4], const float *A, const float *Bm, int K, float *Sx) {
    mm_strip<A_RK, B_CK, WL ? 2 : 1>(A, Bm, K, Sx);
    if constexpr (WL) __syncwarp();
    else sync_plain();  /* Sx is written with plain stores: copies in flight may stay so */
    const Lay<WL> L;
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] += Sx[L.row(i) * LD + L.col(j)];
    if constexpr (WL) __syncwarp();
    else sync_plain();  /* Sx free for the next product */
}

/* One warp-wide mma.sync m16n8k8 (TF32 in, fp32 accumulate): d += A (16 x 8) x B (8 x 8), the
 * fragments as the PTX ISA lays them out (see mm_mma). tf32_bits rounds as wmma::__float_to_tf32
 * does (cvt.rna). (tools/ssd_emu/gen.py replaces these two with host versions that exchange the
 * fragments through the warp in exactly this layout.) */
__device__ __forceinline__ unsigned tf32_bits(float v) {
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(v));
    return r;
}
__device__ __forceinline__ void mma_tf32(float &d0, float &d1, float &d2, float &d3, const unsigned a[4],
                                         const unsigned b[2]) {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d0), "+f"(d1), "+f"(d2), "+f"(d3)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
/* end of the mma primitives */

/* bf16 storage for the p64 backward's bf16 variant (ssd_chunk_bwd_p64_bf_kernel): the N loop's
 * operand tiles are held rounded to bf16 (to nearest even) and widened exactly when a fragment is
 * loaded, so the mma itself stays the TF32 one (a bf16 value is a TF32 value: cvt.rna leaves it as it
 * is). (tools/ssd_emu/gen.py replaces these with host versions; EMU_TILE=bf16 rounds there.) */
typedef __nv_bfloat16 bf16t;
__device__ __forceinline__ bf16t to_bf(float v) { return __float2bfloat16_rn(v); }
__device__ __forceinline__ float from_bf(bf16t v) { return __bfloat162float(v); }
/* four bf16 (rounded as to_bf) stored as one 8-byte word (p 8-byte aligned; p[0] = v.x), and two read as
 * one 4-byte word (p 4-byte aligned): the bf16 variant's V 4 (ssd-cbwd4) */
__device__ __forceinline__ void st_bf4(bf16t *p, float4 v) {
    __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
    uint2 u;
    u.x = *(const unsigned *)&lo;
    u.y = *(const unsigned *)&hi;
    *(uint2 *)p = u;
}
__device__ __forceinline__ float2 ld_bf2(const bf16t *p) { return __bfloat1622float2(*(const __nv_bfloat162 *)p); }
/* end of the bf16 primitives */

/* ldmatrix and the bf16 mma (ssd-fwd3's mm_ldsm). bfrag: one 32-bit register holding two bf16 (the lower
 * address in the low half). ldsm_x4 loads four 8 x 8 bf16 matrices, lanes 8i..8i+7 giving the 16-byte rows
 * of matrix i; lane (g = l >> 2, t = l & 3) receives row g, columns 2t, 2t + 1 of each (register i), or with
 * ldsm_x4_t (.trans) row 2t and 2t + 1 of column g. mma_bf16 is mma.m16n8k16 .bf16 with fp32 accumulation:
 * A fragment registers (rows g / g + 8, k 2t.. / 2t + 8..) in the order (r, k), (r + 8, k), (r, k + 8),
 * (r + 8, k + 8); B (k 2t.., n g), (k 2t + 8.., n g); C as mma_tf32's. The "memory" clobber keeps the
 * shared reads on their side of the barriers. (tools/ssd_emu/gen.py replaces these with host versions that
 * exchange the rows and fragments through the warp in exactly this layout.) */
typedef unsigned bfrag;
__device__ __forceinline__ void ldsm_x4(bfrag r[4], const bf16t *p) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a)
                 : "memory");
}
__device__ __forceinline__ void ldsm_x4_t(bfrag r[4], const bf16t *p) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a)
                 : "memory");
}
__device__ __forceinline__ void mma_bf16(float &d0, float &d1, float &d2, float &d3, const bfrag a[4],
                                         const bfrag b[2]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d0), "+f"(d1), "+f"(d2), "+f"(d3)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
/* end of the ldmatrix primitives */
__device__ __forceinline__ float ld_op(const float *p) { return *p; }
__device__ __forceinline__ float ld_op(const bf16t *p) { return from_bf(*p); }

/* ldmatrix primitives (the bf16 variant's V 8, ssd-ldsm). Each lane hands in the address of one 16-byte row: lane
 * 8j + i the row i of 8 x 8 matrix j (j < 4); lane (g, t) gets a 32-bit word of each matrix. ldsm_f32: fp32 rows
 * of 4 floats, lane (g, t) gets float t of row g of each matrix, rounded as tf32_bits (the TF32 fragment
 * element). ldsm_bf / ldsm_bf_t: bf16 rows of 8 elements, lane (g, t) gets elements 2t and 2t + 1 of row g
 * (ldsm_bf) or rows 2t, 2t + 1 at column g (ldsm_bf_t, .trans), widened exactly to fp32 (lo, hi): a bf16 value is
 * a TF32 value, so tf32_bits would leave it as it is. (tools/ssd_emu/gen.py replaces these with host versions
 * that exchange the row addresses through the warp.) */
__device__ __forceinline__ void ldsm_raw(unsigned r[4], const void *p) {
    unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
__device__ __forceinline__ void ldsm_raw_t(unsigned r[4], const void *p) {
    unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
__device__ __forceinline__ void ldsm_f32(unsigned r[4], const float *p) {
    ldsm_raw(r, p);
#pragma unroll
    for (int j = 0; j < 4; j++) r[j] = tf32_bits(__uint_as_float(r[j]));
}
__device__ __forceinline__ void ldsm_bf(unsigned lo[4], unsigned hi[4], const bf16t *p) {
    unsigned r[4];
    ldsm_raw(r, p);
#pragma unroll
    for (int j = 0; j < 4; j++) lo[j] = r[j] << 16, hi[j] = r[j] & 0xffff0000u;
}
__device__ __forceinline__ void ldsm_bf_t(unsigned lo[4], unsigned hi[4], const bf16t *p) {
    unsigned r[4];
    ldsm_raw_t(r, p);
#pragma unroll
    for (int j = 0; j < 4; j++) lo[j] = r[j] << 16, hi[j] = r[j] & 0xffff0000u;
}
/* end of the ldmatrix primitives */

/* acc += A Bm as mm_mma_s (Lay<2>, m16n8k8 TF32, tiles by tixs), for the bf16 variant's V 8 (ssd-ldsm): its
 * fragments loaded with ldmatrix and 8-byte loads instead of one 2- or 4-byte load an element.
 * PAIR = false (A fp32 [r][k], Bm fp32 [c][k]): the mma's k order; ldsm_f32 gives a0..a3 of a 16-row tile
 * (matrices: rows +0 / +8, k +0 / +4) and b0, b1 of both 8-column tiles in one instruction each: 3 a k-step
 * instead of 12 loads. PAIR = true: in each k-step the mma's k slots t and t + 4 take k0 + 2t and k0 + 2t + 1
 * (the same permutation in A and Bm, so the same sum: only the order of the adds inside an mma changes), so
 * that a lane's two k of a row are adjacent: A fp32 [r][k] as one float2 a row (4 a k-step), A bf16 [r][k] by
 * ldsm_bf (one a k-step), Bm bf16 [k][c] by ldsm_bf_t or [c][k] by ldsm_bf (one for two k-steps: the 2 x 2
 * matrices (k-step, column tile)). Tiles must be readable (not necessarily valid) up to k 16 ceil(K / 16) <=
 * TS: the second k-step's mmas are skipped past K rounded to 8, as mm_mma_s's. rs as mm_mma_s's (fp32 A). */
template <bool PAIR, bool B_CK, class TA, class TB, int MA, int MB>
__device__ __forceinline__ void mm_mma_l(float acc[4][4], const TA *A, const TB *Bm, int K,
                                       const float *rs = nullptr) {
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31, g = l >> 2, t = l & 3, li = l & 7, lj = l >> 3;
    const int rb = 32 * (w >> 2), cb = 16 * (w & 3);
    const int r0 = rb + g;
    float sc[4] = {1.f, 1.f, 1.f, 1.f};  /* rows r0 + 8q */
    if (rs) {
#pragma unroll
        for (int q = 0; q < 4; q++) sc[q] = rs[r0 + 8 * q];
    }
    if constexpr (!PAIR) {
        static_assert(B_CK, "mm_mma_l: the natural order takes fp32 [r][k] and [c][k] tiles");
#pragma unroll 2
        for (int k0 = 0; k0 < K; k0 += 8) {
            unsigned fa[2][4], fb[4];
#pragma unroll
            for (int mi = 0; mi < 2; mi++)  /* matrix lj: rows +8 (lj & 1), k +4 (lj >> 1): a0, a1, a2, a3 */
                ldsm_f32(fa[mi], A + tixs<MA>(rb + 16 * mi + 8 * (lj & 1), li, k0, 4 * (lj >> 1)));
            /* matrix lj: column tile lj >> 1, k +4 (lj & 1): b0, b1 of tile 0, then of tile 1 */
            ldsm_f32(fb, Bm + tixs<MB>(cb + 8 * (lj >> 1), li, k0, 4 * (lj & 1)));
#pragma unroll
            for (int mi = 0; mi < 2; mi++)
#pragma unroll
                for (int ni = 0; ni < 2; ni++)
                    mma_tf32(acc[2 * mi][2 * ni], acc[2 * mi][2 * ni + 1], acc[2 * mi + 1][2 * ni],
                             acc[2 * mi + 1][2 * ni + 1], fa[mi], fb + 2 * ni);
        }
    } else {
#pragma unroll 1
        for (int k0 = 0; k0 < K; k0 += 16) {
            /* Bm's 2 x 2 matrices (k-step lj >> 1, column tile lj & 1): lo = b0, hi = b1 */
            unsigned blo[4], bhi[4];
            if constexpr (B_CK) ldsm_bf(blo, bhi, Bm + tixs<MB>(cb + 8 * (lj & 1), li, k0 + 8 * (lj >> 1), 0));
            else ldsm_bf_t(blo, bhi, Bm + tixs<MB>(k0 + 8 * (lj >> 1), li, cb + 8 * (lj & 1), 0));
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int k1 = k0 + 8 * h;
                if (h && k1 >= K) break;
                unsigned fa[2][4];
                if constexpr (std::is_same<TA, float>::value) {
#pragma unroll
                    for (int mi = 0; mi < 2; mi++)
#pragma unroll
                        for (int e = 0; e < 2; e++) {  /* rows r0 + 16 mi + 8 e: slots (a_e, a_{e+2}) */
                            float2 v = *(const float2 *)(A + tixs<MA>(rb + 16 * mi + 8 * e, g, k1, 2 * t));
                            const float s = sc[2 * mi + e];
                            fa[mi][e] = tf32_bits(rs ? v.x * s : v.x);
                            fa[mi][e + 2] = tf32_bits(rs ? v.y * s : v.y);
                        }
                } else {
                    /* matrix lj: rows 16 (lj >> 1) + 8 (lj & 1): lo = a0 / a1, hi = a2 / a3 of tile lj >> 1 */
                    unsigned lo[4], hi[4];
                    ldsm_bf(lo, hi, A + tixs<MA>(rb + 8 * lj, li, k1, 0));
#pragma unroll
                    for (int mi = 0; mi < 2; mi++) {
                        fa[mi][0] = lo[2 * mi];
                        fa[mi][1] = lo[2 * mi + 1];
                        fa[mi][2] = hi[2 * mi];
                        fa[mi][3] = hi[2 * mi + 1];
                    }
                }
#pragma unroll
                for (int mi = 0; mi < 2; mi++)
#pragma unroll
                    for (int ni = 0; ni < 2; ni++) {
                        const unsigned fb[2] = {blo[2 * h + ni], bhi[2 * h + ni]};
                        mma_tf32(acc[2 * mi][2 * ni], acc[2 * mi][2 * ni + 1], acc[2 * mi + 1][2 * ni],
                                 acc[2 * mi + 1][2 * ni + 1], fa[mi], fb);
                    }
            }
        }
    }
}


/* acc[a][b] += sum_{k<K} A(row(a), k) Bm(k, col(b)) in Lay<2>, on the tensor cores with the
 * accumulators in registers (A(r, k) = A[r][k] (A_RK) or A[k][r]; Bm(k, c) = Bm[c][k] (B_CK) or
 * Bm[k][c]; the same operand tiles and the same TF32 rounding as mm_tc, no scratch tile). Per
 * k-step of 8 the warp runs the 2 x 2 m16n8k8 mmas of its 32 x 16 strip; lane (g, t) loads
 * A fragments a0 (g, t), a1 (g + 8, t), a2 (g, t + 4), a3 (g + 8, t + 4) of each 16-row tile and
 * B fragments b0 (k t, n g), b1 (k t + 4, n g) of each 8-column tile; the result fragment c0..c3
 * of mma (mi, ni) is acc[2mi][2ni], acc[2mi][2ni + 1], acc[2mi + 1][2ni], acc[2mi + 1][2ni + 1]
 * (rows g + 8 (2mi + {0, 1}), columns 2t + {0, 1} + 8ni: Lay<2>). K is rounded up to 8: the tiles
 * are zero past the valid rows and columns, as for wmma. No barrier: the warp reads shared tiles only.
 * TA, TB: the tiles' element types (float, or bf16t in the bf16 variant); rs (the bf16 variant's
 * x G product): A(r, k) is scaled by rs[r] before the rounding, so that a row-scaled product adds
 * into an accumulator that holds other terms (no accumulator of its own). MA, MB: the tiles' row lengths
 * (tix: LD by default; the bf16 variant's V 4 has bf16 tiles of LDH and swizzled fp32 ones, 0). */
/* mm_mma's loop with the tiles' index by tixs (row lengths MA, MB; 0: swizzled at LDS) */
template <bool A_RK, bool B_CK, class TA, class TB, int UNR, int MA, int MB>
__device__ __forceinline__ void mm_mma_s(float acc[4][4], const TA *A, const TB *Bm, int K,
                                       const float *rs = nullptr) {
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31, g = l >> 2, t = l & 3;
    const int r0 = 32 * (w >> 2) + g;
    /* the element of A at row rh + g, k kh + kl, and of Bm at k kh + kl, column ch + g (rh, ch, kh
     * multiples of 8: tixs) */
    const int rb = 32 * (w >> 2), cb = 16 * (w & 3);
    auto at = [&](int rh, int kh, int kl) {
        return ld_op(A + (A_RK ? tixs<MA>(rh, g, kh, kl) : tixs<MA>(kh, kl, rh, g)));
    };
    auto bt = [&](int kh, int kl, int ch) {
        return ld_op(Bm + (B_CK ? tixs<MB>(ch, g, kh, kl) : tixs<MB>(kh, kl, ch, g)));
    };
    float sc[4] = {1.f, 1.f, 1.f, 1.f};  /* rows r0 + 8q */
    if (rs) {
#pragma unroll
        for (int q = 0; q < 4; q++) sc[q] = rs[r0 + 8 * q];
    }
#pragma unroll UNR
    for (int k0 = 0; k0 < K; k0 += 8) {
        unsigned fa[2][4], fb[2][2];
#pragma unroll
        for (int mi = 0; mi < 2; mi++) {
            const int r = rb + 16 * mi;  /* rows r + g, r + 8 + g */
            if (rs) {
                fa[mi][0] = tf32_bits(at(r, k0, t) * sc[2 * mi]);
                fa[mi][1] = tf32_bits(at(r + 8, k0, t) * sc[2 * mi + 1]);
                fa[mi][2] = tf32_bits(at(r, k0, t + 4) * sc[2 * mi]);
                fa[mi][3] = tf32_bits(at(r + 8, k0, t + 4) * sc[2 * mi + 1]);
            } else {
                fa[mi][0] = tf32_bits(at(r, k0, t));
                fa[mi][1] = tf32_bits(at(r + 8, k0, t));
                fa[mi][2] = tf32_bits(at(r, k0, t + 4));
                fa[mi][3] = tf32_bits(at(r + 8, k0, t + 4));
            }
        }
#pragma unroll
        for (int ni = 0; ni < 2; ni++) {
            fb[ni][0] = tf32_bits(bt(k0, t, cb + 8 * ni));
            fb[ni][1] = tf32_bits(bt(k0, t + 4, cb + 8 * ni));
        }
#pragma unroll
        for (int mi = 0; mi < 2; mi++)
#pragma unroll
            for (int ni = 0; ni < 2; ni++)
                mma_tf32(acc[2 * mi][2 * ni], acc[2 * mi][2 * ni + 1], acc[2 * mi + 1][2 * ni],
                         acc[2 * mi + 1][2 * ni + 1], fa[mi], fb[ni]);
    }
}

template <bool A_RK, bool B_CK, class TA = float, class TB = float, int UNR = 2, int MA = LD, int MB = LD>
__device__ __forceinline__ void mm_mma(float acc[4][4], const TA *A, const TB *Bm, int K,
                                       const float *rs = nullptr) {
    if constexpr (MA != LD || MB != LD) {  /* other row lengths or the swizzle: mm_mma_s */
        mm_mma_s<A_RK, B_CK, TA, TB, UNR, MA, MB>(acc, A, Bm, K, rs);
        return;
    }
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31, g = l >> 2, t = l & 3;
    const int r0 = 32 * (w >> 2) + g, c0 = 16 * (w & 3) + g;
    auto at = [&](int r, int k) { return ld_op(A_RK ? A + r * LD + k : A + k * LD + r); };
    auto bt = [&](int k, int c) { return ld_op(B_CK ? Bm + c * LD + k : Bm + k * LD + c); };
    float sc[4] = {1.f, 1.f, 1.f, 1.f};  /* rows r0 + 8q */
    if (rs) {
#pragma unroll
        for (int q = 0; q < 4; q++) sc[q] = rs[r0 + 8 * q];
    }
#pragma unroll UNR
    for (int k0 = 0; k0 < K; k0 += 8) {
        unsigned fa[2][4], fb[2][2];
#pragma unroll
        for (int mi = 0; mi < 2; mi++) {
            const int r = r0 + 16 * mi;
            if (rs) {
                fa[mi][0] = tf32_bits(at(r, k0 + t) * sc[2 * mi]);
                fa[mi][1] = tf32_bits(at(r + 8, k0 + t) * sc[2 * mi + 1]);
                fa[mi][2] = tf32_bits(at(r, k0 + t + 4) * sc[2 * mi]);
                fa[mi][3] = tf32_bits(at(r + 8, k0 + t + 4) * sc[2 * mi + 1]);
            } else {
                fa[mi][0] = tf32_bits(at(r, k0 + t));
                fa[mi][1] = tf32_bits(at(r + 8, k0 + t));
                fa[mi][2] = tf32_bits(at(r, k0 + t + 4));
                fa[mi][3] = tf32_bits(at(r + 8, k0 + t + 4));
            }
        }
#pragma unroll
        for (int ni = 0; ni < 2; ni++) {
            fb[ni][0] = tf32_bits(bt(k0 + t, c0 + 8 * ni));
            fb[ni][1] = tf32_bits(bt(k0 + t + 4, c0 + 8 * ni));
        }
#pragma unroll
        for (int mi = 0; mi < 2; mi++)
#pragma unroll
            for (int ni = 0; ni < 2; ni++)
                mma_tf32(acc[2 * mi][2 * ni], acc[2 * mi][2 * ni + 1], acc[2 * mi + 1][2 * ni],
                         acc[2 * mi + 1][2 * ni + 1], fa[mi], fb[ni]);
    }
}

/* acc += the product in the caller's layout: fp32 FMAs (exact build), wmma through Sx (WL 0, 1), or
 * mma.sync straight into the accumulators (WL 2; Sx unused) */
template <bool A_RK, bool B_CK, int WL = 0>
__device__ __forceinline__ void mm(float acc[4][4], const float *A, const float *Bm, int K, float *Sx) {
    if constexpr (TC && WL == 2) mm_mma<A_RK, B_CK>(acc, A, Bm, K);
    else if constexpr (TC) mm_tc<A_RK, B_CK, WL>(acc, A, Bm, K, Sx);
    else mm_fma<A_RK, B_CK, WL>(acc, A, Bm, K);
}

__device__ __forceinline__ void zero(float acc[4][4]) {
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.f;
}

/* sum over the 16 threads of a half-warp (the tx of one ty) */
__device__ __forceinline__ float half_warp_sum(float v) {
    for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* ---- per-chunk decays ---- */
struct Chunk {
    int b, h, g, c, t0, l;
    float Ae;  /* e^{A_log} */
};

__device__ __forceinline__ Chunk chunk_of(const SsdDims &d, const float *A_log) {
    Chunk k;
    k.c = blockIdx.x; k.h = blockIdx.y; k.b = blockIdx.z;
    k.g = k.h / (d.nh / d.G);
    k.t0 = k.c * d.L;
    k.l = min(d.L, d.n - k.t0);
    k.Ae = expf(A_log[k.h]);
    return k;
}

/* the chained state backward's chunk for ticket t: tickets go from the last chunk to the first, every
 * (b, h) of a chunk before any of the chunk below it, so a block waits only on lower tickets */
__device__ __forceinline__ Chunk chain_chunk_of(int t, const SsdDims &d, const float *A_log) {
    const int nbh = d.nh * d.B;
    Chunk k;
    k.c = d.nch - 1 - t / nbh; k.h = (t % nbh) % d.nh; k.b = (t % nbh) / d.nh;
    k.g = k.h / (d.nh / d.G);
    k.t0 = k.c * d.L;
    k.l = min(d.L, d.n - k.t0);
    k.Ae = expf(A_log[k.h]);
    return k;
}

/* Fills u (dt_raw + bias), dt, la, ecum, etail for j < l (0 beyond), *etot =
 * ecum_{l-1}, and, if Mt is given, the decay matrix Mt[i][j] = M_ij (0 off the
 * causal triangle). Ends with a barrier. */
__device__ __forceinline__ void chunk_decays(const SsdDims &d, const Chunk &k, const float *dt_raw, const float *dt_bias,
                             float *u_s, float *dt_s, float *la_s, float *ecum_s, float *etail_s, float *etot,
                             float *Mt) {
    int tid = threadIdx.x;
    if (tid < TS) {
        float u = 0.f, dt = 0.f, la = 0.f;
        if (tid < k.l) {
            u = dt_raw[((size_t)k.b * d.n + k.t0 + tid) * d.nh + k.h] + dt_bias[k.h];
            dt = softplusf_(u);
            la = -dt * k.Ae;
        }
        u_s[tid] = u; dt_s[tid] = dt; la_s[tid] = la;
        ecum_s[tid] = 0.f; etail_s[tid] = 0.f;
    }
    sync_plain();  /* plain stores only: a caller's tile copies stay in flight */
    if (tid == 64) {  /* the running sum from the chunk's start (the CPU's step 3 order) */
        float s = 0.f;
        for (int i = 0; i < k.l; i++) { s += la_s[i]; ecum_s[i] = expf(s); }
        *etot = expf(s);
    } else if (tid == 96) {  /* from the end, walking down (the CPU's chunk-state order) */
        float s = 0.f;
        etail_s[k.l - 1] = 1.f;
        for (int j = k.l - 2; j >= 0; j--) { s += la_s[j + 1]; etail_s[j] = expf(s); }
    } else if (Mt && tid < TS) {  /* row i, walking j down from i (the CPU's quadratic-form order) */
        int i = tid;
        float *row = Mt + i * LD, s = 0.f;
        for (int j = TS - 1; j > i; j--) row[j] = 0.f;
        if (i < k.l) {
            row[i] = 1.f;
            for (int j = i - 1; j >= 0; j--) { s += la_s[j + 1]; row[j] = expf(s); }
        } else {
            for (int j = i; j >= 0; j--) row[j] = 0.f;
        }
    }
    sync_plain();
}

/* The chunk-state product's tile loop, shared by ssd_chunk_state_kernel and the
 * backward's chained kernel: o[p][n] = sum_j s_j U[j][p] V[j][n] over the P x N
 * tiles, U's rows (ldu apart) scaled by sc_s in shared memory once they land.
 * The caller has started the first tiles' copies into S0 / S1 and written
 * sc_s; every thread of the block calls it. */
__device__ __forceinline__ void state_tiles(float *o, const float *U, size_t ldu, const float *V, const Chunk &k,
                                            const SsdDims &d, float *S0, float *S1, float *Sx, const float *sc_s) {
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    for (int p0 = 0; p0 < d.P; p0 += TS)
        for (int n0 = 0; n0 < d.N; n0 += TS) {
            if (p0 > 0 || n0 > 0) {
                bar();  /* the previous tiles read */
                if (n0 == 0) load_tile(S0, U + p0, ldu, k.l, min(TS, d.P - p0));
                load_tile(S1, V + n0, d.W, k.l, min(TS, d.N - n0));
            }
            bar();  /* the copies landed; sc_s written */
            if (n0 == 0) {  /* U's rows scaled by s_j (the same product as scaling while loading) */
                for (int idx = threadIdx.x; idx < TS * TS; idx += NT) {
                    int r = idx >> 6, c = idx & (TS - 1);
                    S0[r * LD + c] *= sc_s[r];
                }
                sync_plain();
            }
            float acc[4][4];
            zero(acc);
            mm<false, false>(acc, S0, S1, k.l, Sx);  /* [p][n] += U[j][p] V[j][n] */
#pragma unroll
            for (int a = 0; a < 4; a++)
#pragma unroll
                for (int b = 0; b < 4; b++) {
                    int p = p0 + ty + 16 * a, nn = n0 + tx + 16 * b;
                    if (p < d.P && nn < d.N) o[(size_t)p * d.N + nn] = acc[a][b];
                }
        }
}

/* ---- forward: the chunk's own state, and the backward's own-term of dstates ----
 * out slot = sum_j s_j U_j^T V_j ([P, N]) with, forward: U = x, V = B,
 * s = etail dt, into states[b, c+1]; backward: U = dy, V = C, s = ecum, into
 * gbuf[b, c]. Both write the chunk's decay a_c = ecum_{l-1} to achunk[b, h, c]. */
constexpr size_t STATE_SMEM = (2 + TC) * TILE * sizeof(float);
template <bool FWD>
__global__ void __launch_bounds__(NT, 4) ssd_chunk_state_kernel(float *out, float *achunk, const float *dy,
                                                             const float *xbc, const float *dt_raw,
                                                             const float *dt_bias, const float *A_log, SsdDims d) {
    extern __shared__ __align__(128) float smem[];
    float *S0 = smem, *S1 = S0 + TILE, *Sx = TC ? S1 + TILE : nullptr;
    __shared__ float u_s[TS], dt_s[TS], la_s[TS], ecum_s[TS], etail_s[TS], sc_s[TS], etot;
    Chunk k = chunk_of(d, A_log);
    size_t row0 = (size_t)k.b * d.n + k.t0, ldu = FWD ? d.W : d.E;
    auto u_at = [&](size_t r0) { return FWD ? xbc + r0 * d.W + (size_t)k.h * d.P : dy + r0 * d.E + (size_t)k.h * d.P; };
    auto v_at = [&](size_t r0) { return xbc + r0 * d.W + d.E + (size_t)(FWD ? k.g : d.G + k.g) * d.N; };
    /* the first tiles are copied before the decays are computed (they need none of
     * them: U's row scale is applied in shared memory once it has landed), so the
     * copies overlap the dt loads and the serial decay scans */
    load_tile(S0, u_at(row0), ldu, k.l, min(TS, d.P));
    load_tile(S1, v_at(row0), d.W, k.l, min(TS, d.N));
    chunk_decays(d, k, dt_raw, dt_bias, u_s, dt_s, la_s, ecum_s, etail_s, &etot, nullptr);
    /* the pointers again (not kept live across the decays: that spilled at 64 registers) */
    row0 = opaque(row0);
    const float *U = u_at(row0), *V = v_at(row0);
    if (threadIdx.x < TS) sc_s[threadIdx.x] = FWD ? etail_s[threadIdx.x] * dt_s[threadIdx.x] : ecum_s[threadIdx.x];
    if (threadIdx.x == 0) achunk[((size_t)k.b * d.nh + k.h) * d.nch + k.c] = etot;
    size_t slots = FWD ? d.nch + 1 : d.nch;
    float *o = out + (((size_t)k.b * slots + k.c + (FWD ? 1 : 0)) * d.nh + k.h) * (size_t)d.P * d.N;
    state_tiles(o, U, ldu, V, k, d, S0, S1, Sx, sc_s);
}

/* The two passes walk the chunks in order, one thread per (b, h, state
 * element). Each loads PASS_BATCH chunks' values and decays before storing
 * any, so that many loads are in flight per thread (the compiler may not move
 * a load above the previous chunk's store, which it cannot prove to be
 * elsewhere; the decays were loaded after the stores at first, one memory
 * round trip per chunk). */
#define PASS_BATCH 8

/* states[b, c+1] = S_c + a_c states[b, c], c ascending (states[b, 0] = 0) */
__global__ void ssd_state_pass_fwd(float *states, const float *achunk, SsdDims d) {
    size_t PN = (size_t)d.P * d.N, e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    int h = blockIdx.y, b = blockIdx.z;
    if (e >= PN) return;
    const float *a = achunk + ((size_t)b * d.nh + h) * d.nch;
    float *s = states + (size_t)b * (d.nch + 1) * d.nh * PN + (size_t)h * PN + e;
    size_t step = (size_t)d.nh * PN;
    float carry = 0.f;
    s[0] = 0.f;
    for (int c0 = 0; c0 < d.nch; c0 += PASS_BATCH) {
        float v[PASS_BATCH], av[PASS_BATCH];
#pragma unroll
        for (int q = 0; q < PASS_BATCH; q++)
            if (c0 + q < d.nch) {
                v[q] = s[(size_t)(c0 + q + 1) * step];
                av[q] = a[c0 + q];
            }
#pragma unroll
        for (int q = 0; q < PASS_BATCH; q++)
            if (c0 + q < d.nch) {
                carry = v[q] + av[q] * carry;
                s[(size_t)(c0 + q + 1) * step] = carry;
            }
    }
}

/* g[b, c] holds the chunk's own term of dstates[c]; replaced by G_c = dstates[c+1],
 * c descending: dstates[c] = own_c + a_c dstates[c+1], dstates[nch] = 0 */
__global__ void ssd_state_pass_bwd(float *g, const float *achunk, SsdDims d) {
    size_t PN = (size_t)d.P * d.N, e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    int h = blockIdx.y, b = blockIdx.z;
    if (e >= PN) return;
    const float *a = achunk + ((size_t)b * d.nh + h) * d.nch;
    float *s = g + (size_t)b * d.nch * d.nh * PN + (size_t)h * PN + e;
    size_t step = (size_t)d.nh * PN;
    float carry = 0.f;
    for (int c1 = d.nch - 1; c1 >= 0; c1 -= PASS_BATCH) {  /* chunks c1, c1-1, ... */
        float own[PASS_BATCH], av[PASS_BATCH];
#pragma unroll
        for (int q = 0; q < PASS_BATCH; q++)
            if (c1 - q >= 0) {
                own[q] = s[(size_t)(c1 - q) * step];
                av[q] = a[c1 - q];
            }
#pragma unroll
        for (int q = 0; q < PASS_BATCH; q++)
            if (c1 - q >= 0) {
                s[(size_t)(c1 - q) * step] = carry;
                carry = own[q] + av[q] * carry;
            }
    }
}

/* ---- backward: the chunks' own terms of dstates and the state pass in one kernel ----
 * main ran chunk_state<false> (own_c into gbuf[b, c], 100 MB at gpt2small) and then
 * ssd_state_pass_bwd (gbuf read and written once more, two dependent DRAM round trips per
 * thread): the pass was ~0.1 ms a layer for no arithmetic (perf-notes, session 7). Here a
 * block (b, h, c) computes own_c exactly as chunk_state<false> does (the same code, so the
 * same values), stores it raw into gbuf[b, c-1] (where G_{c-1} = dstates[c] belongs), waits
 * for chunk c+1's block to publish gbuf[b, c] = G_c = dstates[c+1], and replaces its raw
 * elements by dstates[c] = own_c + a_c G_c (the pass's expression: the same values), each
 * thread the elements it stored itself; fence, barrier, flag. Blocks take tickets in reverse
 * chunk-major order (all (b, h) of the last chunk first), so a block waits only for a lower
 * ticket, whose block is already resident or done (no deadlock in any launch order). The
 * last chunk's block also zeroes gbuf[b, nch-1] (dstates[nch] = 0); chunk 0's blocks have
 * nothing to do (dstates[0] is never read). achunk is not written (only the old pass read it).
 * sync: [0] the ticket counter, [1 + ticket] the flags (zeroed by the host before the launch). */
__global__ void __launch_bounds__(NT, 4) ssd_chunk_state_bwd_chain_kernel(float *g, int *sync, const float *dy,
                                                                       const float *xbc, const float *dt_raw,
                                                                       const float *dt_bias, const float *A_log,
                                                                       SsdDims d) {
    extern __shared__ __align__(128) float smem[];
    float *S0 = smem, *S1 = S0 + TILE, *Sx = TC ? S1 + TILE : nullptr;
    __shared__ float u_s[TS], dt_s[TS], la_s[TS], ecum_s[TS], etail_s[TS], sc_s[TS], etot;
    __shared__ int ticket_s;
    if (threadIdx.x == 0) ticket_s = atomicAdd(sync, 1);
    __syncthreads();
    const int t = ticket_s, nbh = d.nh * d.B;
    const size_t PN = (size_t)d.P * d.N;
    Chunk k = chain_chunk_of(t, d, A_log);
    const int c = k.c;
    float *gin = g + (((size_t)k.b * d.nch + c) * d.nh + k.h) * PN;  /* G_c, from chunk c+1's block */
    if (c == d.nch - 1)
        for (size_t e = threadIdx.x; e < PN; e += NT) gin[e] = 0.f;  /* G_{nch-1} = dstates[nch] = 0 */
    if (c == 0) return;  /* own_0 only feeds dstates[0], which nothing reads; nobody waits on chunk 0 */
    float *o = gin - (size_t)d.nh * PN;  /* gbuf[b, c-1]: own_c raw, then dstates[c] */
    size_t row0 = (size_t)k.b * d.n + k.t0;
    auto u_at = [&](size_t r0) { return dy + r0 * d.E + (size_t)k.h * d.P; };
    auto v_at = [&](size_t r0) { return xbc + r0 * d.W + d.E + (size_t)(d.G + k.g) * d.N; };
    /* from here to the chain: chunk_state<false>'s body (U = dy, V = C, s = ecum) */
    load_tile(S0, u_at(row0), d.E, k.l, min(TS, d.P));
    load_tile(S1, v_at(row0), d.W, k.l, min(TS, d.N));
    chunk_decays(d, k, dt_raw, dt_bias, u_s, dt_s, la_s, ecum_s, etail_s, &etot, nullptr);
    row0 = opaque(row0);
    const float *U = u_at(row0), *V = v_at(row0);
    if (threadIdx.x < TS) sc_s[threadIdx.x] = ecum_s[threadIdx.x];
    state_tiles(o, U, d.E, V, k, d, S0, S1, Sx, sc_s);
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;   /* state_tiles' element of each 16 x 16 block */

    /* the chain: dstates[c] = own_c + a_c dstates[c+1] once chunk c+1's block has published it.
     * The ticket and the slots' addresses again from ticket_s (re-read after the barriers), not
     * kept live across the products: that spilled at 64 registers. */
    {
        const int t1 = ticket_s, c1 = d.nch - 1 - t1 / nbh;
        gin = g + (((size_t)((t1 % nbh) / d.nh) * d.nch + c1) * d.nh + (t1 % nbh) % d.nh) * PN;
        o = gin - (size_t)d.nh * PN;
    }
    int *flag = sync + 1;
    const int t2 = ticket_s;
    const bool last = t2 < nbh;
    if (!last && threadIdx.x == 0) {
        while (*(volatile int *)&flag[t2 - nbh] == 0) {
        }
        __threadfence();
    }
    sync_plain();  /* every thread waits for the flag (no copies are in flight here) */
    const float ac = etot;
#pragma unroll 1
    for (int p0 = 0; p0 < d.P; p0 += TS)
#pragma unroll 1
        for (int n0 = 0; n0 < d.N; n0 += TS) {
            float gv[4][4];
#pragma unroll
            for (int a = 0; a < 4; a++)
#pragma unroll
                for (int b = 0; b < 4; b++) {
                    int p = p0 + ty + 16 * a, nn = n0 + tx + 16 * b;
                    /* through L2 (ld.cg): another block wrote it during this kernel */
                    gv[a][b] = (!last && p < d.P && nn < d.N) ? __ldcg(gin + (size_t)p * d.N + nn) : 0.f;
                }
#pragma unroll
            for (int a = 0; a < 4; a++)
#pragma unroll
                for (int b = 0; b < 4; b++) {
                    int p = p0 + ty + 16 * a, nn = n0 + tx + 16 * b;
                    if (p < d.P && nn < d.N) {
                        size_t e = (size_t)p * d.N + nn;
                        o[e] = o[e] + ac * gv[a][b];  /* this thread's own raw own_c (the pass's order) */
                    }
                }
        }
    __threadfence();  /* dstates[c] visible device-wide before the flag */
    sync_plain();     /* every thread's fence done */
    if (threadIdx.x == 0) *(volatile int *)&flag[t2] = 1;
}

/* ---- forward: outputs of one chunk ---- */
constexpr size_t SCAN_SMEM = (3 + TC) * TILE * sizeof(float);
__global__ void __launch_bounds__(NT, TC ? 3 : 4) ssd_chunk_scan_kernel(float *y, const float *states, const float *xbc,
                                                            const float *dt_raw, const float *dt_bias,
                                                            const float *A_log, const float *D,
                                                            const float *cbuf, SsdDims d) {
    extern __shared__ __align__(128) float smem[];
    float *S0 = smem, *S1 = S0 + TILE, *Mt = S1 + TILE, *Sx = TC ? Mt + TILE : nullptr;
    __shared__ float u_s[TS], dt_s[TS], la_s[TS], ecum_s[TS], etail_s[TS], etot;
    Chunk k = chunk_of(d, A_log);
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    size_t row0 = (size_t)k.b * d.n + k.t0;
    const float *X = xbc + row0 * d.W + (size_t)k.h * d.P;
    const float *Cm = xbc + row0 * d.W + d.E + (size_t)(d.G + k.g) * d.N;
    const float *h0 = states + (((size_t)k.b * (d.nch + 1) + k.c) * d.nh + k.h) * (size_t)d.P * d.N;
    /* C B^T (ssd_cb_kernel, once per batch, chunk and group for the group's heads)
     * is copied before the decays are computed (it needs none of them), so the
     * copy overlaps the dt loads and the serial decay scans */
    load_tile(S0, cbuf + (((size_t)k.b * d.nch + k.c) * d.G + k.g) * (TS * TS), TS, TS, TS);
    chunk_decays(d, k, dt_raw, dt_bias, u_s, dt_s, la_s, ecum_s, etail_s, &etot, Mt);
    bar();  /* C B^T */
    /* W in place of M: each thread rewrites only the elements it reads */
#pragma unroll
    for (int a = 0; a < 4; a++)
#pragma unroll
        for (int b = 0; b < 4; b++) {
            int i = ty + 16 * a, j = tx + 16 * b;
            Mt[i * LD + j] = S0[i * LD + j] * Mt[i * LD + j] * dt_s[j];
        }

    float Dh = D[k.h];
    for (int p0 = 0; p0 < d.P; p0 += TS) {
        int pc = min(TS, d.P - p0);
        float acc[4][4];
        zero(acc);
        for (int n0 = 0; n0 < d.N; n0 += TS) {  /* [i][p] += C_i[n] h0[p][n] */
            bar();
            load_tile(S0, Cm + n0, d.W, k.l, min(TS, d.N - n0));
            load_tile(S1, h0 + (size_t)p0 * d.N + n0, d.N, pc, min(TS, d.N - n0));
            bar();
            mm<true, true>(acc, S0, S1, min(TS, d.N - n0), Sx);
        }
#pragma unroll
        for (int a = 0; a < 4; a++)
#pragma unroll
            for (int b = 0; b < 4; b++) acc[a][b] *= ecum_s[ty + 16 * a];
        bar();
        load_tile(S1, X + p0, d.W, k.l, pc);
        bar();
        mm<true, false>(acc, Mt, S1, k.l, Sx);  /* [i][p] += W[i][j] x[j][p] */
#pragma unroll
        for (int a = 0; a < 4; a++)
#pragma unroll
            for (int b = 0; b < 4; b++) {
                int i = ty + 16 * a, p = tx + 16 * b;
                if (i < k.l && p < pc) y[(row0 + i) * d.E + (size_t)k.h * d.P + p0 + p] = acc[a][b] + Dh * S1[i * LD + p];
            }
    }
}

/* ---- pieces of the two chunk backward kernels (ssd_chunk_bwd_kernel, ssd_chunk_bwd_p64_kernel) ----
 * Each is the code both kernels ran, moved here as it was (the same operations in the same order:
 * the same values); the tiles they work on are the callers'. */

/* gh + the thread's part of sum(G * h0), added in order: with vec (16-byte loads: the tensor-core build,
 * PN a multiple of 4) the 16-byte pairs e0, e0 + NT, ... (a caller may have summed the ones before e0),
 * else every element from threadIdx.x (no caller sums any before). U: the unroll of the 16-byte loop
 * (2 in the general kernel, 4 in the p64 one, as they were: their register budgets differ). */
template <int U>
__device__ __forceinline__ float gh_sum(float gh, const float *Gc, const float *h0, size_t PN, int e0, bool vec) {
    if (vec) {
        const float4 *g4 = (const float4 *)Gc, *h4 = (const float4 *)h0;
#pragma unroll U
        for (int e = e0; e < (int)(PN / 4); e += NT) {
            float4 a = g4[e], b = h4[e];
            gh += a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
        }
    } else {
        for (size_t e = threadIdx.x; e < PN; e += NT) gh += Gc[e] * h0[e];
    }
    return gh;
}

/* From C B^T (cb) and dy x^T (dw) in the thread layout and M in Mt: W = CB M dt (Wt), dCB = dW M dt (Dt),
 * dSeg = dW W in place of M; ddtw_s[j] += sum_i dW_ij CB_ij M_ij */
template <int WL = 0>
__device__ __forceinline__ void w_dcb_dseg(const float cb[4][4], const float dw[4][4], float *Mt, float *Wt,
                                           float *Dt, const float *dt_s, float *ddtw_s) {
    const Lay<WL> L;
#pragma unroll
    for (int b = 0; b < 4; b++) {
        int j = L.col(b);
        float col = 0.f;
#pragma unroll
        for (int a = 0; a < 4; a++) {
            int i = L.row(a);
            float m = Mt[i * LD + j], w = cb[a][b] * m * dt_s[j];
            Wt[i * LD + j] = w;
            Dt[i * LD + j] = dw[a][b] * m * dt_s[j];
            Mt[i * LD + j] = dw[a][b] * w;
            col += dw[a][b] * cb[a][b] * m;
        }
        atomicAdd(&ddtw_s[j], col);
    }
}

/* acc (the state part of dC, [i][n]) scaled by ecum_i; dcum_s[i] += C_i . acc_i (C_n in Ct) */
template <int WL = 0>
__device__ __forceinline__ void dcum_add(float acc[4][4], const float *Ct, const float *ecum_s, float *dcum_s) {
    const Lay<WL> L;
#pragma unroll
    for (int a = 0; a < 4; a++) {
        int i = L.row(a);
        float dc = 0.f;
#pragma unroll
        for (int b = 0; b < 4; b++) {
            acc[a][b] *= ecum_s[i];
            dc += Ct[i * LD + L.col(b)] * acc[a][b];
        }
        dc = L.row_sum(dc);
        if (L.row_lead()) atomicAdd(&dcum_s[i], dc);
    }
}

/* atomicAdd(at(r, c), acc) for the thread's elements inside rows x cols (at: the callers' own address
 * arithmetic, kept as it was: in the p64 kernel it is recomputed per tile to save registers) */
template <int WL = 0, class At>
__device__ __forceinline__ void atomic_add_tile(const float acc[4][4], int rows, int cols, At at) {
    const Lay<WL> L;
#pragma unroll
    for (int a = 0; a < 4; a++)
#pragma unroll
        for (int b = 0; b < 4; b++) {
            int r = L.row(a), c = L.col(b);
            if (r < rows && c < cols) atomicAdd(at(r, c), acc[a][b]);
        }
}

/* Mt[i][c] := sum_{j<c} dSeg_ij for c <= i < l (row prefixes, one thread per row) */
__device__ __forceinline__ void dseg_row_prefix(float *Mt, int l) {
    if (threadIdx.x < l) {
        int i = threadIdx.x;
        float run = 0.f;
        for (int c = 0; c <= i; c++) {
            float t = Mt[i * LD + c];
            Mt[i * LD + c] = run;
            run += t;
        }
    }
}

/* The end of both backward kernels: per position kk < l, dla = dla0(kk) (the kernel's dtotal and dSeg,
 * dcum sums) + the q terms, then ddt_raw, and the block's ddt_bias, dA_log and dD (dDp: the thread's
 * part). ddt_raw is this block's alone: d.acc 0 stores. */
template <class Dla0>
__device__ __forceinline__ void chunk_bwd_finish(const SsdDims &d, const Chunk &k, size_t row0, Dla0 dla0,
                                                 const float *u_s, const float *dt_s, const float *la_s,
                                                 const float *etail_s, const float *ddtw_s, const float *q_s,
                                                 float *red, float dDp, float *ddt_raw, float *ddt_bias,
                                                 float *dA_log, float *dD) {
    float dbias = 0.f, dAl = 0.f;
    if (threadIdx.x < k.l) {
        int kk = threadIdx.x;
        float dla = dla0(kk);
        for (int j = 0; j < kk; j++) dla += etail_s[j] * dt_s[j] * q_s[j];
        float ddt = ddtw_s[kk] + etail_s[kk] * q_s[kk] - k.Ae * dla;
        float du = ddt * sigmoidf_(u_s[kk]);
        if (ddt_raw) {
            float *o = ddt_raw + (row0 + kk) * d.nh + k.h;
            *o = d.acc ? *o + du : du;
        }
        dbias = du;
        dAl = dla * la_s[kk];
    }
    dbias = block_sum(dbias, red);
    dAl = block_sum(dAl, red);
    dDp = block_sum(dDp, red);
    if (threadIdx.x == 0) {
        if (ddt_bias) atomicAdd(&ddt_bias[k.h], dbias);
        if (dA_log) atomicAdd(&dA_log[k.h], dAl);
        if (dD) atomicAdd(&dD[k.h], dDp);
    }
}

/* ---- backward: every gradient of one chunk (see the header) ---- */
constexpr size_t BWD_SMEM = (5 + TC) * TILE * sizeof(float);
/* the p64 backward in the mma layout (WL 2): the five tiles without the wmma scratch tile */
constexpr size_t P64_MMA_SMEM = 5 * TILE * sizeof(float);
__global__ void __launch_bounds__(NT, 2) ssd_chunk_bwd_kernel(float *dxbc, float *ddt_raw, float *ddt_bias,
                                                           float *dA_log, float *dD, const float *dy,
                                                           const float *states, const float *gbuf,
                                                           const float *xbc, const float *dt_raw,
                                                           const float *dt_bias, const float *A_log,
                                                           const float *D, SsdDims d) {
    extern __shared__ __align__(128) float smem[];
    float *S0 = smem, *S1 = S0 + TILE, *Mt = S1 + TILE, *Wt = Mt + TILE, *Dt = Wt + TILE;
    float *Sx = TC ? Dt + TILE : nullptr;
    __shared__ float u_s[TS], dt_s[TS], la_s[TS], ecum_s[TS], etail_s[TS], etot;
    __shared__ float ddtw_s[TS], q_s[TS], dcum_s[TS], red[32];
    Chunk k = chunk_of(d, A_log);
    if (threadIdx.x < TS) ddtw_s[threadIdx.x] = q_s[threadIdx.x] = dcum_s[threadIdx.x] = 0.f;
    chunk_decays(d, k, dt_raw, dt_bias, u_s, dt_s, la_s, ecum_s, etail_s, &etot, Mt);
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    size_t row0 = (size_t)k.b * d.n + k.t0, PN = (size_t)d.P * d.N;
    const float *X = xbc + row0 * d.W + (size_t)k.h * d.P;
    const float *Bm = xbc + row0 * d.W + d.E + (size_t)k.g * d.N;
    const float *Cm = xbc + row0 * d.W + d.E + (size_t)(d.G + k.g) * d.N;
    const float *dY = dy + row0 * d.E + (size_t)k.h * d.P;
    const float *h0 = states + (((size_t)k.b * (d.nch + 1) + k.c) * d.nh + k.h) * PN;
    const float *Gc = gbuf + (((size_t)k.b * d.nch + k.c) * d.nh + k.h) * PN;
    float Dh = D[k.h];
    /* the thread's part of sum(G * h0), for dtotal at the end; first, while few registers are live */
    /* (16-byte loads: several in flight, the plain loop waited on each) */
    float gh = gh_sum<2>(0.f, Gc, h0, PN, threadIdx.x, TC && (PN & 3) == 0);

    float cb[4][4], dw[4][4];  /* C_i . B_j and dy_i . x_j */
    zero(cb);
    zero(dw);
    for (int n0 = 0; n0 < d.N; n0 += TS) {
        bar();
        load_tile(S0, Cm + n0, d.W, k.l, min(TS, d.N - n0));
        load_tile(S1, Bm + n0, d.W, k.l, min(TS, d.N - n0));
        bar();
        mm<true, true>(cb, S0, S1, min(TS, d.N - n0), Sx);
    }
    for (int p0 = 0; p0 < d.P; p0 += TS) {
        bar();
        load_tile(S0, dY + p0, d.E, k.l, min(TS, d.P - p0));
        load_tile(S1, X + p0, d.W, k.l, min(TS, d.P - p0));
        bar();
        mm<true, true>(dw, S0, S1, min(TS, d.P - p0), Sx);
    }
    /* W, dCB, and dSeg (in place of M); ddtw_s[j] = sum_i dW_ij CB_ij M_ij */
    w_dcb_dseg(cb, dw, Mt, Wt, Dt, dt_s, ddtw_s);

    /* dx; q_j = x_j . (G B_j) */
    float dDp = 0.f;
    for (int p0 = 0; p0 < d.P; p0 += TS) {
        int pc = min(TS, d.P - p0);
        float acc[4][4];
        zero(acc);
        for (int n0 = 0; n0 < d.N; n0 += TS) {  /* [j][p] += B_j[n] G[p][n] */
            bar();
            load_tile(S0, Bm + n0, d.W, k.l, min(TS, d.N - n0));
            load_tile(S1, Gc + (size_t)p0 * d.N + n0, d.N, pc, min(TS, d.N - n0));
            bar();
            mm<true, true>(acc, S0, S1, min(TS, d.N - n0), Sx);
        }
        bar();
        load_tile(S0, X + p0, d.W, k.l, pc);
        load_tile(S1, dY + p0, d.E, k.l, pc);
        bar();  /* also publishes Wt */
#pragma unroll
        for (int a = 0; a < 4; a++) {
            int j = ty + 16 * a;
            float q = 0.f;
#pragma unroll
            for (int b = 0; b < 4; b++) {
                int p = tx + 16 * b;
                q += S0[j * LD + p] * acc[a][b];
                dDp += S0[j * LD + p] * S1[j * LD + p];
                acc[a][b] *= etail_s[j] * dt_s[j];
            }
            q = half_warp_sum(q);
            if (tx == 0) atomicAdd(&q_s[j], q);
        }
        mm<false, false>(acc, Wt, S1, k.l, Sx);  /* [j][p] += W[i][j] dy[i][p] */
        if (dxbc)
#pragma unroll
            for (int a = 0; a < 4; a++)
#pragma unroll
                for (int b = 0; b < 4; b++) {
                    int j = ty + 16 * a, p = tx + 16 * b;
                    if (j < k.l && p < pc) {   /* this block's alone: d.acc 0 stores */
                        float g = acc[a][b] + Dh * S1[j * LD + p];
                        float *o = dxbc + (row0 + j) * d.W + (size_t)k.h * d.P + p0 + p;
                        *o = d.acc ? *o + g : g;
                    }
                }
    }

    /* dB and dC, one column tile of N at a time; dcum_i = C_i . (state part of dC_i) */
    for (int n0 = 0; n0 < d.N; n0 += TS) {
        int nc = min(TS, d.N - n0);
        float acc[4][4];
        zero(acc);
        for (int p0 = 0; p0 < d.P; p0 += TS) {  /* [j][n] += x_j[p] G[p][n] */
            bar();
            load_tile(S0, X + p0, d.W, k.l, min(TS, d.P - p0));
            load_tile(S1, Gc + (size_t)p0 * d.N + n0, d.N, min(TS, d.P - p0), nc);
            bar();
            mm<true, false>(acc, S0, S1, min(TS, d.P - p0), Sx);
        }
#pragma unroll
        for (int a = 0; a < 4; a++)
#pragma unroll
            for (int b = 0; b < 4; b++) acc[a][b] *= etail_s[ty + 16 * a] * dt_s[ty + 16 * a];
        bar();
        load_tile(S0, Cm + n0, d.W, k.l, nc);
        bar();
        mm<false, false>(acc, Dt, S0, k.l, Sx);  /* [j][n] += dCB[i][j] C[i][n] */
        if (dxbc)
            atomic_add_tile(acc, k.l, nc, [&](int j, int nn) {
                return &dxbc[(row0 + j) * d.W + d.E + (size_t)k.g * d.N + n0 + nn];
            });

        zero(acc);
        for (int p0 = 0; p0 < d.P; p0 += TS) {  /* [i][n] += dy_i[p] h0[p][n] */
            bar();
            load_tile(S0, dY + p0, d.E, k.l, min(TS, d.P - p0));
            load_tile(S1, h0 + (size_t)p0 * d.N + n0, d.N, min(TS, d.P - p0), nc);
            bar();
            mm<true, false>(acc, S0, S1, min(TS, d.P - p0), Sx);
        }
        bar();
        load_tile(S0, Cm + n0, d.W, k.l, nc);
        load_tile(S1, Bm + n0, d.W, k.l, nc);
        bar();
        dcum_add(acc, S0, ecum_s, dcum_s);
        mm<true, false>(acc, Dt, S1, k.l, Sx);  /* [i][n] += dCB[i][j] B[j][n] */
        if (dxbc)
            atomic_add_tile(acc, k.l, nc, [&](int i, int nn) {
                return &dxbc[(row0 + i) * d.W + d.E + (size_t)(d.G + k.g) * d.N + n0 + nn];
            });
    }

    /* dtotal = a_c sum(G * h0), gh summed at the start */
    float dtot = etot * block_sum(gh, red);

    /* sum_{j<k<=i} dSeg_ij: row prefixes (Mt[i][k] := sum_{j<k} dSeg_ij), then column sums over i >= k */
    dseg_row_prefix(Mt, k.l);
    bar();
    chunk_bwd_finish(d, k, row0, [&](int kk) {
        float dla = dtot;
        for (int i = kk; i < k.l; i++) dla += Mt[i * LD + kk] + dcum_s[i];
        return dla;
    }, u_s, dt_s, la_s, etail_s, ddtw_s, q_s, red, dDp, ddt_raw, ddt_bias, dA_log, dD);
}


/* ---- C B^T of one (batch, chunk, group), for the p64 backward ----
 * cbuf[b][c][g] is a TS x TS tile (row stride TS): C_i . B_j for i, j < l, 0
 * elsewhere (the tiles are zero-filled past l). The group's heads share B and C,
 * so the p64 backward's heads copy this tile instead of each computing it (the
 * same products in the same order: the same values). Up to two N tiles of C and
 * B are copied per wait (N = 128: one wait). 128 blocks at the gpt2small shape. */
constexpr size_t CB_SMEM = (4 + TC) * TILE * sizeof(float);
__global__ void __launch_bounds__(NT, 2) ssd_cb_kernel(float *cbuf, const float *xbc, SsdDims d) {
    extern __shared__ __align__(128) float smem[];
    float *S = smem, *Sx = TC ? S + 4 * TILE : nullptr;  /* S: C_n, B_n, C_{n+1}, B_{n+1} */
    const int c = blockIdx.x, g = blockIdx.y, b = blockIdx.z, tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    const int t0 = c * d.L, l = min(d.L, d.n - t0);
    size_t row0 = (size_t)b * d.n + t0;
    const float *Bm = xbc + row0 * d.W + d.E + (size_t)g * d.N;
    const float *Cm = xbc + row0 * d.W + d.E + (size_t)(d.G + g) * d.N;
    float cb[4][4];
    zero(cb);
#pragma unroll 1
    for (int n0 = 0; n0 < d.N; n0 += 2 * TS) {
        if (n0 > 0) sync_plain();  /* the previous tiles read */
        for (int q = 0; q < 2 && n0 + q * TS < d.N; q++) {
            int m0 = n0 + q * TS, nc = min(TS, d.N - m0);
            load_tile(S + 2 * q * TILE, Cm + m0, d.W, l, nc);
            load_tile(S + (2 * q + 1) * TILE, Bm + m0, d.W, l, nc);
        }
        bar();
        for (int q = 0; q < 2 && n0 + q * TS < d.N; q++)
            mm<true, true>(cb, S + 2 * q * TILE, S + (2 * q + 1) * TILE, min(TS, d.N - n0 - q * TS), Sx);
    }
    float *o = cbuf + (((size_t)b * d.nch + c) * d.G + g) * (TS * TS);
#pragma unroll
    for (int a = 0; a < 4; a++)
#pragma unroll
        for (int e = 0; e < 4; e++) o[(ty + 16 * a) * TS + tx + 16 * e] = cb[a][e];
}

/* ---- backward for P <= 64 (one tile of head channels): the same gradients as
 * ssd_chunk_bwd_kernel with fewer memory round trips ----
 * The old kernel loads 26 tiles in 14 phases (load -> barrier -> product), each
 * phase waiting for its own loads; with P <= 64 the chunk's x and dy are one
 * tile each and stay resident, and the products are regrouped around the
 * tiles they share:
 *   start: x, dy and the group's C B^T tile (ssd_cb_kernel, computed once for
 *          the group's heads) copied before the decays are computed (overlapping
 *          their serial scans and the sum(G*h0) loads); dW = dy x^T
 *   then:  W, dCB, dSeg (as before); dx's W^T dy + D dy term, written at once;
 *          the dSeg prefix sums reduced to one value per position (frees M)
 *   per n: (h0_n, C_n): the state part of dC, dcum, dB's dCB^T C term;
 *          (G_n, B_n): dC's dCB B term, dB's state term x G_n, B G_n^T (for
 *          dx and q); G_n and h0_{n+1} are copied while the products before
 *          them run (the waits are for C_n and B_n)
 *   end:   dx's etail dt (B G^T) term and q, then dt, dA_log, D as before.
 * At N = 128: 11 tile loads in ~5 waits (+ the sum(G*h0) loads) instead of 26 in 14.
 * dx: read before the W^T dy product, stored after it; the last term goes out by
 * atomicAdd from the same thread (no read to wait for at the end).
 * Tiles: Xs = x, Ys = dy (resident), Ms = M then dSeg then staging, Ua = C B^T,
 * then W / dCB in Ua / Ub (Ua holds h0_n and G_n, Ms C_n and B_n afterwards).
 * WL (Lay): 1, the warp-local thread layout (session 7; the exact build's default, FLOWHN_SSD_CBWD=wl
 * in the tensor-core one), in which each product's way back from the tensor cores is __syncwarp, not
 * two block barriers (24 of the block's 50 at N 128); 0 (FLOWHN_SSD_CBWD=old), the first layout;
 * 2 (the tensor-core build's default), the mma.sync fragment layout: the products accumulate in
 * registers (mm_mma), no scratch tile and no way back at all. The same sums; row sums and the
 * mma's inner order differ between layouts in fp32 rounding. */
template <int WL>
__global__ void __launch_bounds__(NT, 2) ssd_chunk_bwd_p64_kernel(float *dxbc, float *ddt_raw, float *ddt_bias,
                                                               float *dA_log, float *dD, const float *dy,
                                                               const float *states, const float *gbuf,
                                                               const float *xbc, const float *dt_raw,
                                                               const float *dt_bias, const float *A_log,
                                                               const float *D, const float *cbuf, SsdDims d) {
    extern __shared__ __align__(128) float smem[];
    float *Xs = smem, *Ys = Xs + TILE, *Ms = Ys + TILE, *Ua = Ms + TILE, *Ub = Ua + TILE;
    float *Sx = TC && WL != 2 ? Ub + TILE : nullptr;  /* WL 2: no scratch tile (P64_MMA_SMEM) */
    __shared__ float u_s[TS], dt_s[TS], la_s[TS], ecum_s[TS], etail_s[TS], etot;
    __shared__ float ddtw_s[TS], q_s[TS], dcum_s[TS], dseg_s[TS], red[32];
    Chunk k = chunk_of(d, A_log);
    const Lay<WL> L;  /* the thread's rows L.row(a), columns L.col(b) of every 64 x 64 output */
    const int P = d.P;  /* P <= TS (host) */
    size_t row0 = (size_t)k.b * d.n + k.t0, PN = (size_t)P * d.N;
    const float *X = xbc + row0 * d.W + (size_t)k.h * P;
    const float *Bm = xbc + row0 * d.W + d.E + (size_t)k.g * d.N;
    const float *Cm = xbc + row0 * d.W + d.E + (size_t)(d.G + k.g) * d.N;
    const float *dY = dy + row0 * d.E + (size_t)k.h * P;
    const float *h0 = states + (((size_t)k.b * (d.nch + 1) + k.c) * d.nh + k.h) * PN;
    const float *Gc = gbuf + (((size_t)k.b * d.nch + k.c) * d.nh + k.h) * PN;
    /* the first tiles, before anything else: they need nothing of the decays */
    load_tile(Xs, X, d.W, k.l, P);
    load_tile(Ys, dY, d.E, k.l, P);
    load_tile(Ua, cbuf + (((size_t)k.b * d.nch + k.c) * d.G + k.g) * (TS * TS), TS, TS, TS);
    if (threadIdx.x < TS) ddtw_s[threadIdx.x] = q_s[threadIdx.x] = dcum_s[threadIdx.x] = 0.f;
    /* the thread's part of sum(G * h0) (for dtotal at the end): the first GH_PF
     * 16-byte pairs are loaded before the decays and summed after them (8 pairs
     * spill registers), the rest further down */
    constexpr int GH_PF = 4;
    float gh = 0.f;
    const bool gh4 = TC && (PN & 3) == 0;
    float4 gpf[GH_PF], hpf[GH_PF];
    if (gh4) {
        const float4 *g4 = (const float4 *)Gc, *h4 = (const float4 *)h0;
#pragma unroll
        for (int q = 0; q < GH_PF; q++) {
            int e = threadIdx.x + q * NT;
            gpf[q] = hpf[q] = make_float4(0.f, 0.f, 0.f, 0.f);
            if (e < (int)(PN / 4)) { gpf[q] = g4[e]; hpf[q] = h4[e]; }
        }
    }
    chunk_decays(d, k, dt_raw, dt_bias, u_s, dt_s, la_s, ecum_s, etail_s, &etot, Ms);
    if (gh4) {
#pragma unroll
        for (int q = 0; q < GH_PF; q++)
            gh += gpf[q].x * hpf[q].x + gpf[q].y * hpf[q].y + gpf[q].z * hpf[q].z + gpf[q].w * hpf[q].w;
    }
    /* the rest of sum(G * h0), while the first copies are in flight */
    gh = gh_sum<4>(gh, Gc, h0, PN, threadIdx.x + GH_PF * NT, gh4);
    float Dh = D[k.h];

    float cb[4][4], dw[4][4];  /* C_i . B_j and dy_i . x_j */
    zero(dw);
    bar();  /* x, dy, C B^T */
    mm<true, true, WL>(dw, Ys, Xs, P, Sx);                /* [i][j] += dy[i][p] x[j][p] */
#pragma unroll
    for (int a = 0; a < 4; a++)
#pragma unroll
        for (int b = 0; b < 4; b++) cb[a][b] = Ua[L.row(a) * LD + L.col(b)];
    sync_plain();  /* Ua read: W and dCB go to Ua, Ub */
    /* W (Ua), dCB (Ub), dSeg (Ms, in place of M); ddtw_s[j] = sum_i dW_ij CB_ij M_ij */
    w_dcb_dseg<WL>(cb, dw, Ms, Ua, Ub, dt_s, ddtw_s);
    sync_plain();  /* W, dCB, dSeg written */

    /* dx, first part: [j][p] = sum_i W_ij dy_i[p] + D dy_j[p], added to dx read before the product
     * (so that the read overlaps it); dD's x . dy */
    float dDp = 0.f;
    {
        float acc[4][4], old[4][4];
#pragma unroll
        for (int a = 0; a < 4; a++)
#pragma unroll
            for (int b = 0; b < 4; b++) {
                int j = L.row(a), p = L.col(b);
                /* this block's alone: d.acc 0 stores (ops.h acc; the stored value may be NaN) */
                old[a][b] = (d.acc && dxbc && j < k.l && p < P) ? dxbc[(row0 + j) * d.W + (size_t)k.h * P + p] : 0.f;
            }
        zero(acc);
        mm<false, false, WL>(acc, Ua, Ys, k.l, Sx);  /* [j][p] += W[i][j] dy[i][p] */
#pragma unroll
        for (int a = 0; a < 4; a++)
#pragma unroll
            for (int b = 0; b < 4; b++) {
                int j = L.row(a), p = L.col(b);
                dDp += Xs[j * LD + p] * Ys[j * LD + p];
                if (dxbc && j < k.l && p < P)
                    dxbc[(row0 + j) * d.W + (size_t)k.h * P + p] = old[a][b] + acc[a][b] + Dh * Ys[j * LD + p];
            }
    }
    sync_plain();  /* W read: Ua takes h0_0 */
    load_tile(Ua, h0, d.N, P, min(TS, d.N));
    /* sum_{j<k<=i} dSeg_ij: row prefixes (Ms[i][c] := sum_{j<c} dSeg_ij), then
     * dseg_s[k] = sum_{i>=k} Ms[i][k]; Ms is then free */
    dseg_row_prefix(Ms, k.l);
    sync_plain();
    if (threadIdx.x < k.l) {
        int kk = threadIdx.x;
        float s = 0.f;
        for (int i = kk; i < k.l; i++) s += Ms[i * LD + kk];
        dseg_s[kk] = s;
    }
    sync_plain();  /* Ms read */

    /* dB and dC, one column tile of N at a time; dcum_i = C_i . (state part of dC_i);
     * (d.no_bc_atomics: FLOWHN_SSD_TIME_NO_BC_ATOMICS=1, timing only, see ssd.cu)
     * bg[j][p] = sum_n B_j[n] G[p][n] (over the tiles) for dx and q */
    float bg[4][4];
    zero(bg);
#pragma unroll 1
    for (int n0 = 0; n0 < d.N; n0 += TS) {
        /* the compiler hoisted every address of this body (64-bit row products for
         * the copies and atomics) out of the loop and spilled them; made opaque here,
         * they are recomputed per tile instead (a few integer ops) */
        size_t W = opaque(d.W), Nn = opaque(d.N), r0 = opaque(row0);
        int nc = min(TS, d.N - n0);
        float accB[4][4], accC[4][4];
        load_tile(Ms, Cm + n0, W, k.l, nc);
        bar();  /* h0_n (Ua), C_n (Ms) */
        zero(accC);
        mm<true, false, WL>(accC, Ys, Ua, P, Sx);  /* [i][n] += dy_i[p] h0[p][n] */
        sync_plain();  /* h0_n read */
        load_tile(Ua, Gc + n0, Nn, P, nc);
        dcum_add<WL>(accC, Ms, ecum_s, dcum_s);
        zero(accB);
        mm<false, false, WL>(accB, Ub, Ms, k.l, Sx);  /* [j][n] += dCB[i][j] C[i][n] */
        sync_plain();  /* C_n read */
        load_tile(Ms, Bm + n0, W, k.l, nc);
        bar();  /* G_n (Ua), B_n (Ms) */
        /* dC first, then dB, so that at most three accumulators are live (no spills) */
        mm<true, false, WL>(accC, Ub, Ms, k.l, Sx);  /* [i][n] += dCB[i][j] B[j][n] */
        if (dxbc && !d.no_bc_atomics)
            atomic_add_tile<WL>(accC, k.l, nc, [&](int i, int nn) {
                return &dxbc[(r0 + i) * W + d.E + (size_t)(d.G + k.g) * Nn + n0 + nn];
            });
        {
            float xg[4][4];
            zero(xg);
            mm<true, false, WL>(xg, Xs, Ua, P, Sx);  /* [j][n] += x[j][p] G[p][n] */
#pragma unroll
            for (int a = 0; a < 4; a++)
#pragma unroll
                for (int b = 0; b < 4; b++) accB[a][b] += xg[a][b] * etail_s[L.row(a)] * dt_s[L.row(a)];
        }
        if (dxbc && !d.no_bc_atomics)
            atomic_add_tile<WL>(accB, k.l, nc, [&](int j, int nn) {
                return &dxbc[(r0 + j) * W + d.E + (size_t)k.g * Nn + n0 + nn];
            });
        mm<true, true, WL>(bg, Ms, Ua, nc, Sx);  /* [j][p] += B[j][n] G[p][n] */
        sync_plain();  /* G_n, B_n read: Ua takes h0_{n+1}, Ms C_{n+1} */
        if (n0 + TS < d.N) load_tile(Ua, h0 + n0 + TS, Nn, P, min(TS, d.N - n0 - TS));
    }

    /* dx, second part: etail_j dt_j (G B_j), by atomicAdd (no read to wait for at the block's end; the
     * thread stored this element itself above in either acc mode, and the block owns it); q_j = x_j . (G B_j) */
#pragma unroll
    for (int a = 0; a < 4; a++) {
        int j = L.row(a);
        float q = 0.f, sc = etail_s[j] * dt_s[j];
#pragma unroll
        for (int b = 0; b < 4; b++) {
            int p = L.col(b);
            q += Xs[j * LD + p] * bg[a][b];
            if (dxbc && j < k.l && p < P) atomicAdd(&dxbc[(row0 + j) * d.W + (size_t)k.h * P + p], sc * bg[a][b]);
        }
        q = L.row_sum(q);
        if (L.row_lead()) atomicAdd(&q_s[j], q);
    }

    /* dtotal = a_c sum(G * h0); block_sum's barriers also publish q_s and dcum_s */
    float dtot = etot * block_sum(gh, red);
    chunk_bwd_finish(d, k, row0, [&](int kk) {
        float dla = dtot + dseg_s[kk];
        for (int i = kk; i < k.l; i++) dla += dcum_s[i];
        return dla;
    }, u_s, dt_s, la_s, etail_s, ddtw_s, q_s, red, dDp, ddt_raw, ddt_bias, dA_log, dD);
}

/* ---- the p64 backward at 3 blocks per SM (the bf16 matmul precision's default; perf-notes,
 * ssd-cbwd3) ----
 * dst[r][c] = bf16(src[r*ld + c]) inside rows x cols, 0 in the rest of the 64 x LD tile (rows of
 * M bf16 elements). Not cp.async (the values are converted on the way): every load of the thread is
 * issued before its stores. PACK: the four bf16 of a float4 as one 8-byte store (M * 2 bytes a multiple of 8). */
template <int M = LD, bool PACK = false>
__device__ __forceinline__ void load_tile_bf(bf16t *dst, const float *src, size_t ld, int rows, int cols) {
    if ((((uintptr_t)src | (ld * sizeof(float))) & 15) == 0 && (cols & 3) == 0) {
        float4 v[TS * TS / 4 / NT];
#pragma unroll
        for (int q = 0; q < TS * TS / 4 / NT; q++) {
            int idx = threadIdx.x + q * NT, r = idx >> 4, c = (idx & 15) * 4;
            v[q] = make_float4(0.f, 0.f, 0.f, 0.f);
            if (r < rows && c < cols) v[q] = *(const float4 *)(src + (size_t)r * ld + c);
        }
#pragma unroll
        for (int q = 0; q < TS * TS / 4 / NT; q++) {
            int idx = threadIdx.x + q * NT, r = idx >> 4, c = (idx & 15) * 4;
            bf16t *o = dst + r * M + c;
            if constexpr (PACK) st_bf4(o, v[q]);  /* one 8-byte store: a half-warp's row in 2 wavefronts */
            else { o[0] = to_bf(v[q].x); o[1] = to_bf(v[q].y); o[2] = to_bf(v[q].z); o[3] = to_bf(v[q].w); }
        }
        return;
    }
    for (int idx = threadIdx.x; idx < TS * TS; idx += NT) {
        int r = idx >> 6, c = idx & (TS - 1);
        float v = 0.f;
        if (r < rows && c < cols) v = src[(size_t)r * ld + c];
        dst[r * M + c] = to_bf(v);
    }
}

/* The same gradients as ssd_chunk_bwd_p64_kernel<2> (the mma fragment layout Lay<2>, whose phases it
 * follows) in 4 fp32 tiles (69,632 B) instead of 5, and at most 48 accumulators live instead of 64,
 * so that 3 blocks fit an SM (__launch_bounds__(NT, 3): <= 80 registers):
 *   - C B^T is read from cbuf (L2) into registers, not copied into a tile;
 *   - dCB stays in registers while W (Ua) feeds dx's W^T dy, then goes into Ua;
 *   - once dSeg is reduced, Ms holds two bf16 tiles (64 x LD bf16: 8,704 B each): (h0_n, C_n), then
 *     (G_n, B_n). The five products of the N loop read bf16 operands (rounded once, widened exactly,
 *     TF32 mma); dW = dy x^T and W^T dy read fp32 tiles (TF32, as in the mma kernel). bf16 operands
 *     are the bf16 precision's contract only: ssd.cu launches this kernel only there.
 *   - per n: accC = ecum o (dy h0_n) (dcum from it), accB = dCB^T C_n; then accC += dCB B_n and its
 *     atomics, accB += (etail dt o x) G_n (the row scale applied to the A fragments: no xg
 *     accumulator) and its atomics, bg += B_n G_n^T.
 * Tiles: Xs = x, Ys = dy (resident), Ua = W then dCB, Ms = M, dSeg, then the bf16 pair. Ms is last, so
 * that the emulator's 4-byte host bf16t (tools/ssd_emu) may run past it into unused smem. */
constexpr size_t P64_BF_SMEM = 4 * TILE * sizeof(float);
/* V 4 (ssd-cbwd4, the default): Ys and Ua swizzled at LDS (tix<0>: 1 KB more each), the bf16 pair at LDH
 * elements a row (72: 36 words, bank 4 row + col / 2, so that mm_mma's (k + t, n + g) and (x + g, k + t)
 * reads are both conflict-free), 1 KB past Ms: 72,704 B, 3 blocks per SM with the 2,816 B static. */
constexpr int LDH = 72;
constexpr size_t P64_BF4_SMEM = (TILE + 2 * TS * LDS) * sizeof(float) +
                                (TILE * sizeof(float) > 2 * TS * LDH * sizeof(bf16t) ? TILE * sizeof(float)
                                                                                      : 2 * TS * LDH * sizeof(bf16t));
/* V 8, 9 (ssd-ldsm): x swizzled at LDS too (its ldmatrix rows and C-layout float2 reads conflict-free), 1 KB more:
 * 3 x (73,728 + 2,816 + 1,024) = 232,704 <= 233,472 B, still 3 blocks per SM */
constexpr size_t P64_BF8_SMEM = P64_BF4_SMEM + (TS * LDS - TILE) * sizeof(float);
/* two adjacent fp32 atomic adds (p 8-byte aligned) by one vector atomic where the GPU has it (sm_90: each
 * element added on its own, as two atomicAdds) */
__device__ __forceinline__ void atomic_add2(float *p, float a, float b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    atomicAdd((float2 *)p, make_float2(a, b));
#else
    atomicAdd(p, a);
    atomicAdd(p + 1, b);
#endif
}
/* atomic_add_tile<2> with the column pairs col(2bb), col(2bb) + 1 of a row as one atomic_add2 where v2 (the
 * addresses 8-byte aligned at even columns, cols even) */
template <class At>
__device__ __forceinline__ void atomic_add_tile2(const float acc[4][4], int rows, int cols, bool v2, At at) {
    const Lay<2> L;
#pragma unroll
    for (int a = 0; a < 4; a++)
#pragma unroll
        for (int bb = 0; bb < 2; bb++) {
            int r = L.row(a), c = L.col(2 * bb);
            if (r >= rows) continue;
            if (v2) {
                if (c < cols) atomic_add2(at(r, c), acc[a][2 * bb], acc[a][2 * bb + 1]);
            } else {
                if (c < cols) atomicAdd(at(r, c), acc[a][2 * bb]);
                if (c + 1 < cols) atomicAdd(at(r, c + 1), acc[a][2 * bb + 1]);
            }
        }
}
/* V: 3 the ssd-cbwd3 kernel as it was (FLOWHN_SSD_CBWD=bf3); 4 (=bf4) the same sums with the memory side
 * of ssd-cbwd4 (perf-notes): the bf16 pair at LDH with 8-byte stores and bf16x2 reads of C_n; Ua and Ys at
 * LDS, swizzled (tix<0>), with float2 C-layout accesses; float2 global loads of cbuf and float2 atomics of
 * the C layout (dB, dC, dx's second part). 5: V 4 with scalar global accesses, for shapes where W, P or N
 * is odd (the host picks 4 or 5). Only the order of the float2 atomics' adds differs from V 3.
 * 8, 9 (ssd-ldsm, the default): V 4, 5 with the dy x^T, dy h0_n, dCB B_n and B G^T products' fragments loaded by ldmatrix and
 * 8-byte loads (mm_mma_l; perf-notes "SSD chunk backward: mma fragments by ldmatrix") and x swizzled at LDS as Ys:
 * the same sums, the adds inside an mma in another k order. */
template <int V>
__global__ void __launch_bounds__(NT, 3) ssd_chunk_bwd_p64_bf_kernel(float *dxbc, float *ddt_raw, float *ddt_bias,
                                                                  float *dA_log, float *dD, const float *dy,
                                                                  const float *states, const float *gbuf,
                                                                  const float *xbc, const float *dt_raw,
                                                                  const float *dt_bias, const float *A_log,
                                                                  const float *D, const float *cbuf, SsdDims d) {
    constexpr bool N4 = V >= 4;
    constexpr bool LM = V >= 8;  /* V 8, 9 (ssd-ldsm): four of the products' fragments by ldmatrix (mm_mma_l) */
    constexpr int MU = N4 ? 0 : LD;    /* Ua's and Ys's tix */
    constexpr int MH = N4 ? LDH : LD;  /* the bf16 pair's row */
    constexpr int UT = N4 ? TS * LDS : TILE;  /* Ys's and Ua's size */
    constexpr int MX = LM ? 0 : LD;           /* Xs's tix (V 8: swizzled at LDS as Ys) */
    constexpr int XT = LM ? TS * LDS : TILE;  /* Xs's size */
    extern __shared__ __align__(128) float smem[];
    float *Xs = smem, *Ys = Xs + XT, *Ua = Ys + UT, *Ms = Ua + UT;
    bf16t *S0 = (bf16t *)Ms, *S1 = S0 + (N4 ? TS * LDH : TILE);  /* the N loop's pair, from Ms on the GPU */
    __shared__ float u_s[TS], dt_s[TS], la_s[TS], ecum_s[TS], etail_s[TS], etot;
    __shared__ float ddtw_s[TS], q_s[TS], dcum_s[TS], dseg_s[TS], sx_s[TS], red[32];
    Chunk k = chunk_of(d, A_log);
    const Lay<2> L;
    /* Ua's and Ys's index of the thread's elements (L.row(a), L.col(2 bb)) (V 4: swizzled, tixs) */
    auto uix = [](int a, int bb) {
        const int w = threadIdx.x >> 5, g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;
        return tixs<MU>(32 * (w >> 2) + 8 * a, g, 16 * (w & 3) + 8 * bb, 2 * t);
    };
    const int P = d.P;  /* P <= TS (host) */
    size_t row0 = (size_t)k.b * d.n + k.t0, PN = (size_t)P * d.N;
    /* float2 global accesses at the C layout's column pairs (V 4; the host takes V 5 unless d.W, P and
     * d.N are even and dxbc is 8-byte aligned). A compile-time choice: the run-time one (both paths in
     * one kernel) cost ptxas ~100 bytes of spills at 80 registers. */
    constexpr bool v2 = V == 4 || V == 8;
    const float *X = xbc + row0 * d.W + (size_t)k.h * P;
    const float *Bm = xbc + row0 * d.W + d.E + (size_t)k.g * d.N;
    const float *Cm = xbc + row0 * d.W + d.E + (size_t)(d.G + k.g) * d.N;
    const float *dY = dy + row0 * d.E + (size_t)k.h * P;
    const float *h0 = states + (((size_t)k.b * (d.nch + 1) + k.c) * d.nh + k.h) * PN;
    const float *Gc = gbuf + (((size_t)k.b * d.nch + k.c) * d.nh + k.h) * PN;
    const float *CB = cbuf + (((size_t)k.b * d.nch + k.c) * d.G + k.g) * (TS * TS);
    load_tile_m<MX>(Xs, X, d.W, k.l, P);
    load_tile_m<MU>(Ys, dY, d.E, k.l, P);
    if (threadIdx.x < TS) ddtw_s[threadIdx.x] = q_s[threadIdx.x] = dcum_s[threadIdx.x] = 0.f;
    /* sum(G * h0) after the decays (the mma kernel prefetches 4 pairs first: 32 registers here) */
    chunk_decays(d, k, dt_raw, dt_bias, u_s, dt_s, la_s, ecum_s, etail_s, &etot, Ms);
    if (threadIdx.x < TS) sx_s[threadIdx.x] = etail_s[threadIdx.x] * dt_s[threadIdx.x];
    float gh = gh_sum<2>(0.f, Gc, h0, PN, threadIdx.x, TC && (PN & 3) == 0);
    float Dh = D[k.h];

    float dcb[4][4];  /* dCB in registers until W is read */
    {
        float cb[4][4], dw[4][4];  /* C_i . B_j (from cbuf) and dy_i . x_j */
        if constexpr (N4) {  /* cbuf's 64 x 64 tile: 8-byte aligned column pairs */
#pragma unroll
            for (int a = 0; a < 4; a++)
#pragma unroll
                for (int bb = 0; bb < 2; bb++) {
                    float2 v = *(const float2 *)&CB[L.row(a) * TS + L.col(2 * bb)];
                    cb[a][2 * bb] = v.x;
                    cb[a][2 * bb + 1] = v.y;
                }
        } else {
#pragma unroll
            for (int a = 0; a < 4; a++)
#pragma unroll
                for (int b = 0; b < 4; b++) cb[a][b] = CB[L.row(a) * TS + L.col(b)];
        }
        zero(dw);
        bar();  /* x, dy (and the decays' shared arrays, sx_s) */
        if constexpr (LM) mm_mma_l<false, true, float, float, MU, MX>(dw, Ys, Xs, P);
        else mm_mma<true, true, float, float, 2, MU, LD>(dw, Ys, Xs, P);  /* [i][j] += dy[i][p] x[j][p] */
        /* W (Ua), dSeg (Ms, in place of M), dCB (registers); ddtw_s[j] = sum_i dW_ij CB_ij M_ij: the
         * expressions of w_dcb_dseg (V 4: a column pair at a time, the same sums in the same order) */
        if constexpr (N4) {
#pragma unroll
            for (int bb = 0; bb < 2; bb++) {
                float col[2] = {0.f, 0.f};
#pragma unroll
                for (int a = 0; a < 4; a++) {
                    int i = L.row(a), j = L.col(2 * bb);
                    float2 mv = *(const float2 *)&Ms[i * LD + j];
                    float m[2] = {mv.x, mv.y}, w[2], sg[2];
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        const int b = 2 * bb + e;
                        w[e] = cb[a][b] * m[e] * dt_s[j + e];
                        dcb[a][b] = dw[a][b] * m[e] * dt_s[j + e];
                        sg[e] = dw[a][b] * w[e];
                        col[e] += dw[a][b] * cb[a][b] * m[e];
                    }
                    *(float2 *)&Ua[uix(a, bb)] = make_float2(w[0], w[1]);
                    *(float2 *)&Ms[i * LD + j] = make_float2(sg[0], sg[1]);
                }
                atomicAdd(&ddtw_s[L.col(2 * bb)], col[0]);
                atomicAdd(&ddtw_s[L.col(2 * bb) + 1], col[1]);
            }
        } else {
#pragma unroll
            for (int b = 0; b < 4; b++) {
                int j = L.col(b);
                float col = 0.f;
#pragma unroll
                for (int a = 0; a < 4; a++) {
                    int i = L.row(a);
                    float m = Ms[i * LD + j], w = cb[a][b] * m * dt_s[j];
                    Ua[i * LD + j] = w;
                    dcb[a][b] = dw[a][b] * m * dt_s[j];
                    Ms[i * LD + j] = dw[a][b] * w;
                    col += dw[a][b] * cb[a][b] * m;
                }
                atomicAdd(&ddtw_s[j], col);
            }
        }
    }
    sync_plain();  /* W, dSeg written */

    float dDp = 0.f;
    {   /* dx, first part: [j][p] = sum_i W_ij dy_i[p] + D dy_j[p] (as the mma kernel) */
        float acc[4][4], old[4][4];
        /* (V 4 too: float2 loads here, with the scalar path for odd shapes, cost ptxas ~80 bytes of spills) */
#pragma unroll
        for (int a = 0; a < 4; a++)
#pragma unroll
            for (int b = 0; b < 4; b++) {
                int j = L.row(a), p = L.col(b);
                old[a][b] = (d.acc && dxbc && j < k.l && p < P) ? dxbc[(row0 + j) * d.W + (size_t)k.h * P + p] : 0.f;
            }
        zero(acc);
        mm_mma<false, false, float, float, 2, MU, MU>(acc, Ua, Ys, k.l);  /* [j][p] += W[i][j] dy[i][p] */
        if constexpr (N4) {
#pragma unroll
            for (int a = 0; a < 4; a++)
#pragma unroll
                for (int bb = 0; bb < 2; bb++) {
                    int j = L.row(a), p = L.col(2 * bb);
                    float2 x2 = *(const float2 *)&Xs[LM ? uix(a, bb) : j * LD + p], y2 = *(const float2 *)&Ys[uix(a, bb)];
                    dDp += x2.x * y2.x;
                    float r0 = old[a][2 * bb] + acc[a][2 * bb] + Dh * y2.x;
                    dDp += x2.y * y2.y;
                    float r1 = old[a][2 * bb + 1] + acc[a][2 * bb + 1] + Dh * y2.y;
                    float *o = dxbc + (row0 + j) * d.W + (size_t)k.h * P + p;
                    /* scalar stores: a float2 store here cost ptxas ~100 bytes of spills at 80 registers */
                    if (dxbc && j < k.l) {
                        if (p < P) o[0] = r0;
                        if (p + 1 < P) o[1] = r1;
                    }
                }
        } else {
#pragma unroll
            for (int a = 0; a < 4; a++)
#pragma unroll
                for (int b = 0; b < 4; b++) {
                    int j = L.row(a), p = L.col(b);
                    dDp += Xs[j * LD + p] * Ys[j * LD + p];
                    if (dxbc && j < k.l && p < P)
                        dxbc[(row0 + j) * d.W + (size_t)k.h * P + p] = old[a][b] + acc[a][b] + Dh * Ys[j * LD + p];
                }
        }
    }
    /* the block sums of dD's x . dy and of sum(G * h0) now, not at the end: two registers fewer in the
     * N loop (the same sums: dD's goes to the end as thread 0's part, the others 0) */
    dDp = block_sum(dDp, red);
    dDp = threadIdx.x == 0 ? dDp : 0.f;
    const float dtot = etot * block_sum(gh, red);  /* dtotal = a_c sum(G * h0) */
    dseg_row_prefix(Ms, k.l);
    sync_plain();  /* W read (Ua takes dCB), the row prefixes written */
#pragma unroll
    for (int a = 0; a < 4; a++)
#pragma unroll
        for (int b = 0; b < 4; b++) {
            if constexpr (N4) {
                if (!(b & 1)) *(float2 *)&Ua[uix(a, b >> 1)] = make_float2(dcb[a][b], dcb[a][b + 1]);
            } else
                Ua[L.row(a) * LD + L.col(b)] = dcb[a][b];
        }
    if (threadIdx.x < k.l) {
        int kk = threadIdx.x;
        float s = 0.f;
        for (int i = kk; i < k.l; i++) s += Ms[i * LD + kk];
        dseg_s[kk] = s;
    }
    sync_plain();  /* Ms read (free for the bf16 pair), dCB written */

    float bg[4][4];  /* bg[j][p] = sum_n B_j[n] G[p][n] (over the tiles) for dx and q */
    zero(bg);
#pragma unroll 1
    for (int n0 = 0; n0 < d.N; n0 += TS) {
        size_t W = opaque(d.W), Nn = opaque(d.N), r0 = opaque(row0);
        int nc = min(TS, d.N - n0);
        float accB[4][4], accC[4][4];
        load_tile_bf<MH, N4>(S0, h0 + n0, Nn, P, nc);
        load_tile_bf<MH, N4>(S1, Cm + n0, W, k.l, nc);
        sync_plain();  /* h0_n (S0), C_n (S1) */
        zero(accC);
        if constexpr (LM) mm_mma_l<true, false, float, bf16t, MU, MH>(accC, Ys, S0, P);
        else mm_mma<true, false, float, bf16t, 2, MU, MH>(accC, Ys, S0, P);  /* [i][n] += dy_i[p] h0[p][n] */
        /* accC *= ecum_i; dcum_s[i] += C_i . accC_i (dcum_add on the bf16 tile; V 4 reads the column pairs
         * as bf16x2, the same sum in the same order) */
#pragma unroll
        for (int a = 0; a < 4; a++) {
            int i = L.row(a);
            float dc = 0.f;
#pragma unroll
            for (int b = 0; b < 4; b++) {
                accC[a][b] *= ecum_s[i];
                if constexpr (N4) {
                    float2 c2 = ld_bf2(S1 + i * MH + L.col(b & 2));
                    dc += (b & 1 ? c2.y : c2.x) * accC[a][b];
                } else
                    dc += from_bf(S1[i * LD + L.col(b)]) * accC[a][b];
            }
            dc = L.row_sum(dc);
            if (L.row_lead()) atomicAdd(&dcum_s[i], dc);
        }
        zero(accB);
        mm_mma<false, false, float, bf16t, 2, MU, MH>(accB, Ua, S1, k.l);  /* [j][n] += dCB[i][j] C[i][n] */
        sync_plain();  /* h0_n, C_n read */
        load_tile_bf<MH, N4>(S0, Gc + n0, Nn, P, nc);
        load_tile_bf<MH, N4>(S1, Bm + n0, W, k.l, nc);
        sync_plain();  /* G_n (S0), B_n (S1) */
        if constexpr (LM) mm_mma_l<true, false, float, bf16t, MU, MH>(accC, Ua, S1, k.l);
        else mm_mma<true, false, float, bf16t, 2, MU, MH>(accC, Ua, S1, k.l);  /* [i][n] += dCB[i][j] B[j][n] */
        if (dxbc && !d.no_bc_atomics) {
            auto at = [&](int i, int nn) { return &dxbc[(r0 + i) * W + d.E + (size_t)(d.G + k.g) * Nn + n0 + nn]; };
            if constexpr (N4) atomic_add_tile2(accC, k.l, nc, v2, at);
            else atomic_add_tile<2>(accC, k.l, nc, at);
        }
        /* (V 8: through mm_mma_l (x's rows as 8-byte pairs) ptxas spilled 44 B at 80 registers, 16 B here) */
        mm_mma<true, false, float, bf16t, 2, MX, MH>(accB, Xs, S0, P, sx_s);  /* [j][n] += etail_j dt_j x[j][p] G[p][n] */
        if (dxbc && !d.no_bc_atomics) {
            auto at = [&](int j, int nn) { return &dxbc[(r0 + j) * W + d.E + (size_t)k.g * Nn + n0 + nn]; };
            if constexpr (N4) atomic_add_tile2(accB, k.l, nc, v2, at);
            else atomic_add_tile<2>(accB, k.l, nc, at);
        }
        if constexpr (LM) mm_mma_l<true, true, bf16t, bf16t, MH, MH>(bg, S1, S0, nc);
        else mm_mma<true, true, bf16t, bf16t, 2, MH, MH>(bg, S1, S0, nc);  /* [j][p] += B[j][n] G[p][n] */
        sync_plain();  /* G_n, B_n read: the pair takes h0_{n+1}, C_{n+1} */
    }

    /* dx, second part, q, and the end: as the mma kernel */
#pragma unroll
    for (int a = 0; a < 4; a++) {
        int j = L.row(a);
        float q = 0.f, sc = etail_s[j] * dt_s[j];
        if constexpr (N4) {
#pragma unroll
            for (int bb = 0; bb < 2; bb++) {
                int p = L.col(2 * bb);
                float *o = dxbc + (row0 + j) * d.W + (size_t)k.h * P + p;
                float2 x2 = *(const float2 *)&Xs[LM ? uix(a, bb) : j * LD + p];
                q += x2.x * bg[a][2 * bb];
                q += x2.y * bg[a][2 * bb + 1];
                if (dxbc && j < k.l) {
                    if (v2) {
                        if (p < P) atomic_add2(o, sc * bg[a][2 * bb], sc * bg[a][2 * bb + 1]);
                    } else {
                        if (p < P) atomicAdd(o, sc * bg[a][2 * bb]);
                        if (p + 1 < P) atomicAdd(o + 1, sc * bg[a][2 * bb + 1]);
                    }
                }
            }
        } else {
#pragma unroll
            for (int b = 0; b < 4; b++) {
                int p = L.col(b);
                q += Xs[j * LD + p] * bg[a][b];
                if (dxbc && j < k.l && p < P) atomicAdd(&dxbc[(row0 + j) * d.W + (size_t)k.h * P + p], sc * bg[a][b]);
            }
        }
        q = L.row_sum(q);
        if (L.row_lead()) atomicAdd(&q_s[j], q);
    }
    __syncthreads();  /* q_s and dcum_s complete (the mma kernel's block_sum(gh) here published them) */
    chunk_bwd_finish(d, k, row0, [&](int kk) {
        float dla = dtot + dseg_s[kk];
        for (int i = kk; i < k.l; i++) dla += dcum_s[i];
        return dla;
    }, u_s, dt_s, la_s, etail_s, ddtw_s, q_s, red, dDp, ddt_raw, ddt_bias, dA_log, dD);
}

/* acc[a][b] += sum_{k<K} A(row(a), k) Bm(k, col(b)) in Lay<2>, as mm_mma on bf16 tiles of row length LDH
 * (A(r, k) = A[r][k] (A_RK) or A[k][r]; Bm(k, c) = Bm[c][k] (B_CK) or Bm[k][c]), but with the fragments loaded by
 * ldmatrix and the products as bf16 m16n8k16 (ssd-fwd3): per k-step of 16 the warp's 32 x 16 strip takes two
 * ldsm_x4 for A (its two 16-row tiles; .trans where A is [k][r]), one for B (two 8-column tiles x two k halves;
 * .trans where B is [k][c]) and 4 mma_bf16: ~10 instructions where mm_mma issues ~90 for two k-steps of 8
 * (12 scalar LDS, 24 conversions and 4 TF32 mmas each). The same products of the same bf16 values with fp32
 * accumulation (a bf16 value is exact in TF32 too); only the mma's internal order of addition can differ.
 * K is rounded up to 16: the tiles must hold zeros (not garbage) up to that column/row, as ld_tile4 / st_tile4
 * leave them for K <= TS. Row addresses are 16-byte aligned (LDH 72 = 144 B, offsets multiples of 8
 * elements) and each 8-row phase hits 8 distinct 16-byte bank groups (144 / 16 = 9, odd). No barrier. */
template <bool A_RK, bool B_CK>
__device__ __forceinline__ void mm_ldsm(float acc[4][4], const bf16t *A, const bf16t *Bm, int K) {
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31, li = l & 7, i = l >> 3;
    const int rb = 32 * (w >> 2), cb = 16 * (w & 3);
    /* the lane's row address in its matrix i: A's register i is (rows + 8 (i & 1), k + 8 (i >> 1)), B's
     * 2 ni + h is (k + 8 h, columns + 8 ni) with i = 2 ni + h */
    const bf16t *pa = A_RK ? A + (rb + li + 8 * (i & 1)) * LDH + 8 * (i >> 1) : A + (li + 8 * (i >> 1)) * LDH + rb + 8 * (i & 1);
    const bf16t *pb = B_CK ? Bm + (cb + li + 8 * (i >> 1)) * LDH + 8 * (i & 1) : Bm + (li + 8 * (i & 1)) * LDH + cb + 8 * (i >> 1);
#pragma unroll 2
    for (int k0 = 0; k0 < K; k0 += 16) {
        bfrag fa[2][4], fb[4];
#pragma unroll
        for (int mi = 0; mi < 2; mi++) {
            if constexpr (A_RK) ldsm_x4(fa[mi], pa + 16 * mi * LDH + k0);
            else ldsm_x4_t(fa[mi], pa + k0 * LDH + 16 * mi);
        }
        if constexpr (B_CK) ldsm_x4(fb, pb + k0);
        else ldsm_x4_t(fb, pb + k0 * LDH);
#pragma unroll
        for (int mi = 0; mi < 2; mi++)
#pragma unroll
            for (int ni = 0; ni < 2; ni++)
                mma_bf16(acc[2 * mi][2 * ni], acc[2 * mi][2 * ni + 1], acc[2 * mi + 1][2 * ni],
                         acc[2 * mi + 1][2 * ni + 1], fa[mi], fb + 2 * ni);
    }
}

/* ---- forward: the chunk's outputs for P <= 64, N <= 128 at the bf16 precision (branch ssdfwd2) ----
 * The same y as ssd_chunk_scan_kernel: y_i = ecum_i (C_i . h0) + sum_j W_ij x_j + D x_i, W = (C B^T) o M o dt.
 * That kernel waits five times a block (C B^T; C_0 and h0_0; C_1 and h0_1; x; each load -> barrier ->
 * product) with its tiles in fp32 (4 tiles incl. wmma's scratch, 3 blocks/SM) and two block barriers a
 * product (WL 0). Here every operand is read once, up front, in three rounds of 8 float4 loads a thread
 * (C_0 C_1; h0_0 h0_1; x and C B^T), each round stored at once as bf16 (to nearest even, as the bf16
 * precision's products round their operands) into tiles of LDH = 72 elements a row, so that the six
 * tiles (W, x, C x 2, h0 x 2) are 55,296 B and 3 blocks fit an SM (80 registers); the products run in
 * the mma fragment layout (Lay<2>, mm_mma: accumulators in registers, no scratch, no barrier inside).
 * LDH 72 makes every fragment read conflict-free (bank 4 row + col / 2: the [row][k] reads at lanes
 * (g, t) and the [k][col] reads at (t, g) hit 16 distinct words, two lanes a word).
 * W is built from C B^T in the registers that loaded it: thread (r, c..c+3) walks la down from row r
 * as the CPU does (M_rj = exp(la_r + la_{r-1} + ... + la_{j+1}), summed in that order; rows are the
 * thread's 4 independent chains, <= 63 adds each), so M is never a tile and no thread scans a row alone.
 * D x uses fp32 x (read again at the end, from L2), y goes out as float2 (VEC) in the C fragment layout.
 * VEC: W, E, P, N multiples of 4 and the arrays 16-byte aligned (ssd.cu), 16-byte loads; else scalar.
 * Only where the products may round to bf16 (ssd.cu): TF32's 10-bit operands at the tf32 precision
 * keep ssd_chunk_scan_kernel. FLOWHN_SSD_FWD_KERNEL=old runs that kernel at bf16 too (A/B). */
constexpr size_t SCAN_BF_SMEM = 6 * TS * LDH * sizeof(bf16t);

/* the thread's 4 float4 of a TS x TS tile: (r, c..c+3), r = (tid >> 4) + 16 q, c = 4 (tid & 15); zero outside
 * rows x cols (cols may be <= 0: all zero) */
template <bool VEC>
__device__ __forceinline__ void ld_tile4(float4 v[4], const float *src, size_t ld, int rows, int cols) {
    const int r0 = threadIdx.x >> 4, c = 4 * (threadIdx.x & 15);
#pragma unroll
    for (int q = 0; q < 4; q++) {
        const int r = r0 + 16 * q;
        v[q] = make_float4(0.f, 0.f, 0.f, 0.f);
        if constexpr (VEC) {
            if (r < rows && c < cols) v[q] = *(const float4 *)(src + (size_t)r * ld + c);
        } else if (r < rows) {
            const float *p = src + (size_t)r * ld + c;
            if (c < cols) v[q].x = p[0];
            if (c + 1 < cols) v[q].y = p[1];
            if (c + 2 < cols) v[q].z = p[2];
            if (c + 3 < cols) v[q].w = p[3];
        }
    }
}
__device__ __forceinline__ void st_tile4(bf16t *dst, const float4 v[4]) {
    const int r0 = threadIdx.x >> 4, c = 4 * (threadIdx.x & 15);
#pragma unroll
    for (int q = 0; q < 4; q++) st_bf4(dst + (r0 + 16 * q) * LDH + c, v[q]);
}
/* an N <= 2 TS wide operand (B, C or a state) as two TS x TS tiles: columns [0, TS) into v[0..3], [TS, N)
 * into v[4..7]; stored as two tiles TS * LDH apart */
template <bool VEC>
__device__ __forceinline__ void ld_ntile8(float4 v[8], const float *src, size_t ld, int rows, int N) {
    ld_tile4<VEC>(v, src, ld, rows, min(TS, N));
    ld_tile4<VEC>(v + 4, src + TS, ld, rows, N - TS);
}
__device__ __forceinline__ void st_ntile8(bf16t *dst, const float4 v[8]) {
    st_tile4(dst, v);
    st_tile4(dst + TS * LDH, v + 4);
}

/* V 2: as ssd-fwd2 left it (FLOWHN_SSD_FWD3=0); V 3 (ssd-fwd3, the default): the products through mm_ldsm
 * (ldmatrix + bf16 m16n8k16), the W walk and the ecum scan unrolled by 4 (the same additions in the same
 * order, so the same bits; the LDS leave the chain), and 4 blocks per SM (launch bounds 4: 64 registers;
 * shared memory 4 x 57 KB fits) so that a third more blocks cover the three load rounds. */
template <bool VEC, int V = 2>
__global__ void __launch_bounds__(NT, V >= 3 ? 4 : 3) ssd_chunk_scan_bf_kernel(float *y, const float *states, const float *xbc,
                                                              const float *dt_raw, const float *dt_bias,
                                                              const float *A_log, const float *D,
                                                              const float *cbuf, SsdDims d) {
    extern __shared__ __align__(128) float smem[];
    bf16t *Ws = (bf16t *)smem, *Xs = Ws + TS * LDH, *Cs = Xs + TS * LDH, *Hs = Cs + 2 * TS * LDH;
    __shared__ float dt_s[TS], la_s[TS], ecum_s[TS];
    const Chunk k = chunk_of(d, A_log);
    const int tid = threadIdx.x;
    const size_t row0 = (size_t)k.b * d.n + k.t0;
    float u = 0.f;  /* dt_raw + bias, loaded first (the decays wait for it) */
    if (tid < k.l) u = dt_raw[(row0 + tid) * d.nh + k.h] + dt_bias[k.h];
    {
        const float *Cm = xbc + row0 * d.W + d.E + (size_t)(d.G + k.g) * d.N;
        const float *h0 = states + (((size_t)k.b * (d.nch + 1) + k.c) * d.nh + k.h) * (size_t)d.P * d.N;
        float4 v[8];
        ld_ntile8<VEC>(v, Cm, d.W, k.l, d.N);
        st_ntile8(Cs, v);
        ld_ntile8<VEC>(v, h0, d.N, d.P, d.N);
        st_ntile8(Hs, v);
    }
    float4 cb[4];  /* C B^T (ssd_cb_kernel: zero past l), kept in registers until the decays are known */
    {
        float4 v[4];
        ld_tile4<VEC>(v, xbc + row0 * d.W + (size_t)k.h * d.P, d.W, k.l, d.P);
        ld_tile4<true>(cb, cbuf + (((size_t)k.b * d.nch + k.c) * d.G + k.g) * (TS * TS), TS, TS, TS);
        st_tile4(Xs, v);
    }
    if (tid < TS) {
        float dt = 0.f, la = 0.f;
        if (tid < k.l) {
            dt = softplusf_(u);
            la = -dt * k.Ae;
        }
        dt_s[tid] = dt;
        la_s[tid] = la;
        ecum_s[tid] = 0.f;
    }
    __syncthreads();
    if (tid == 64) {  /* the running sum from the chunk's start (the CPU's order, as chunk_decays) */
        float s = 0.f;
        if constexpr (V >= 3) {
#pragma unroll 4
            for (int i = 0; i < k.l; i++) {
                s += la_s[i];
                ecum_s[i] = expf(s);
            }
        } else {
            for (int i = 0; i < k.l; i++) {
                s += la_s[i];
                ecum_s[i] = expf(s);
            }
        }
    }
    {  /* W = C B^T o M o dt, the thread's (r, c..c+3) of each q: M_rj summed walking j down from r */
        const int r0 = tid >> 4, c = 4 * (tid & 15);
        float4 w[4];
#pragma unroll
        for (int q = 0; q < 4; q++) {
            const int r = r0 + 16 * q;
            float m[4] = {0.f, 0.f, 0.f, 0.f};
            if (r < k.l && c <= r) {
                float s = 0.f;
                int j = r - 1;
                if constexpr (V >= 3) {
#pragma unroll 4
                    for (; j >= c + 4; j--) s += la_s[j + 1];
                } else {
                    for (; j >= c + 4; j--) s += la_s[j + 1];
                }
#pragma unroll
                for (int e = 3; e >= 0; e--) {
                    if (c + e < r) {
                        s += la_s[c + e + 1];
                        m[e] = expf(s);
                    } else if (c + e == r) {
                        m[e] = 1.f;
                    }
                }
            }
            w[q] = make_float4(cb[q].x * m[0] * dt_s[c], cb[q].y * m[1] * dt_s[c + 1], cb[q].z * m[2] * dt_s[c + 2],
                               cb[q].w * m[3] * dt_s[c + 3]);
        }
        st_tile4(Ws, w);
    }
    __syncthreads();  /* every tile and ecum */
    float acc[4][4];
    zero(acc);
    if constexpr (V >= 3) {
        mm_ldsm<true, true>(acc, Cs, Hs, min(TS, d.N));  /* [i][p] += C_i[n] h0[p][n] */
        if (d.N > TS) mm_ldsm<true, true>(acc, Cs + TS * LDH, Hs + TS * LDH, d.N - TS);
    } else {
        mm_mma<true, true, bf16t, bf16t, 2, LDH, LDH>(acc, Cs, Hs, min(TS, d.N));  /* [i][p] += C_i[n] h0[p][n] */
        if (d.N > TS) mm_mma<true, true, bf16t, bf16t, 2, LDH, LDH>(acc, Cs + TS * LDH, Hs + TS * LDH, d.N - TS);
    }
    const Lay<2> L;
#pragma unroll
    for (int a = 0; a < 4; a++)
#pragma unroll
        for (int b = 0; b < 4; b++) acc[a][b] *= ecum_s[L.row(a)];
    if constexpr (V >= 3) mm_ldsm<true, false>(acc, Ws, Xs, k.l);  /* [i][p] += W[i][j] x[j][p] */
    else mm_mma<true, false, bf16t, bf16t, 2, LDH, LDH>(acc, Ws, Xs, k.l);
    const float Dh = D[k.h];
    const float *X = xbc + row0 * d.W + (size_t)k.h * d.P;
    float *Y = y + row0 * d.E + (size_t)k.h * d.P;
#pragma unroll
    for (int a = 0; a < 4; a++) {
        const int i = L.row(a);
        if (i >= k.l) continue;
#pragma unroll
        for (int bb = 0; bb < 2; bb++) {
            const int p = L.col(2 * bb);  /* even; p + 1 = L.col(2 bb + 1) */
            if constexpr (VEC) {
                if (p < d.P) {  /* P a multiple of 4: p + 1 < P too */
                    const float2 xv = *(const float2 *)(X + (size_t)i * d.W + p);
                    *(float2 *)(Y + (size_t)i * d.E + p) =
                        make_float2(acc[a][2 * bb] + Dh * xv.x, acc[a][2 * bb + 1] + Dh * xv.y);
                }
            } else {
                if (p < d.P) Y[(size_t)i * d.E + p] = acc[a][2 * bb] + Dh * X[(size_t)i * d.W + p];
                if (p + 1 < d.P) Y[(size_t)i * d.E + p + 1] = acc[a][2 * bb + 1] + Dh * X[(size_t)i * d.W + p + 1];
            }
        }
    }
}

/* ---- forward: the chunk's own state for P <= 64, N <= 128 at the bf16 precision (branch ssdfwd2) ----
 * The same S_c = sum_j (etail_j dt_j x_j) B_j^T into states[c+1] and a_c into achunk as
 * ssd_chunk_state_kernel<true>, which waits three times a block (x with B_0; B_1; each load -> barrier ->
 * wmma product with two block barriers through its scratch tile) and scales x in shared memory in a pass
 * of its own. Here x, B_0 and B_1 are loaded in one round (12 float4 a thread) before the decays
 * (chunk_decays: the same scans, the same values), B stored as bf16 at once, x scaled by etail dt in the
 * registers that loaded it and then stored as bf16 (x * s rounded once, as the bf16 products round their
 * operands); one barrier, then the two 64 x 64 products in the mma fragment layout and float2 stores
 * straight from the accumulators (8 consecutive floats a quad row). 3 bf16 tiles, 27,648 B; 4 blocks per SM
 * (ptxas: 64 registers, 0 spills at launch bounds 4; 72 at 3). */
constexpr size_t STATE_BF_SMEM = 3 * TS * LDH * sizeof(bf16t);
/* V 2: as ssd-fwd2 left it (FLOWHN_SSD_FWD3=0); V 3 (ssd-fwd3, the default): the two products through mm_ldsm
 * (both operands [j][..]: ldmatrix .trans) */
template <bool VEC, int V = 2>
__global__ void __launch_bounds__(NT, 4) ssd_chunk_state_bf_kernel(float *states, float *achunk, const float *xbc,
                                                               const float *dt_raw, const float *dt_bias,
                                                               const float *A_log, SsdDims d) {
    extern __shared__ __align__(128) float smem[];
    bf16t *Xs = (bf16t *)smem, *Bs = Xs + TS * LDH;  /* Bs: N columns 0..63, then 64..127 */
    __shared__ float u_s[TS], dt_s[TS], la_s[TS], ecum_s[TS], etail_s[TS], etot;
    const Chunk k = chunk_of(d, A_log);
    const size_t row0 = (size_t)k.b * d.n + k.t0;
    float4 xv[4], v[8];
    {
        const float *Bm = xbc + row0 * d.W + d.E + (size_t)k.g * d.N;
        ld_tile4<VEC>(xv, xbc + row0 * d.W + (size_t)k.h * d.P, d.W, k.l, d.P);
        ld_ntile8<VEC>(v, Bm, d.W, k.l, d.N);
    }
    chunk_decays(d, k, dt_raw, dt_bias, u_s, dt_s, la_s, ecum_s, etail_s, &etot, nullptr);
    st_ntile8(Bs, v);
    {
        const int r0 = threadIdx.x >> 4;
#pragma unroll
        for (int q = 0; q < 4; q++) {
            const float s = etail_s[r0 + 16 * q] * dt_s[r0 + 16 * q];  /* chunk_state's sc_s (0 past l) */
            xv[q] = make_float4(xv[q].x * s, xv[q].y * s, xv[q].z * s, xv[q].w * s);
        }
        st_tile4(Xs, xv);
    }
    if (threadIdx.x == 0) achunk[((size_t)k.b * d.nh + k.h) * d.nch + k.c] = etot;
    __syncthreads();
    float *o = states + (((size_t)k.b * (d.nch + 1) + k.c + 1) * d.nh + k.h) * (size_t)d.P * d.N;
    const Lay<2> L;
#pragma unroll 1
    for (int n0 = 0; n0 < d.N; n0 += TS) {
        float acc[4][4];
        zero(acc);
        if constexpr (V >= 3) mm_ldsm<false, false>(acc, Xs, Bs + (n0 / TS) * TS * LDH, k.l);  /* [p][n] */
        else mm_mma<false, false, bf16t, bf16t, 2, LDH, LDH>(acc, Xs, Bs + (n0 / TS) * TS * LDH, k.l);
#pragma unroll
        for (int a = 0; a < 4; a++) {
            const int p = L.row(a);
            if (p >= d.P) continue;
#pragma unroll
            for (int bb = 0; bb < 2; bb++) {
                const int nn = n0 + L.col(2 * bb);  /* even; nn + 1 = n0 + L.col(2 bb + 1) */
                if constexpr (VEC) {
                    if (nn < d.N)  /* N a multiple of 4: nn + 1 < N too */
                        *(float2 *)(o + (size_t)p * d.N + nn) = make_float2(acc[a][2 * bb], acc[a][2 * bb + 1]);
                } else {
                    if (nn < d.N) o[(size_t)p * d.N + nn] = acc[a][2 * bb];
                    if (nn + 1 < d.N) o[(size_t)p * d.N + nn + 1] = acc[a][2 * bb + 1];
                }
            }
        }
    }
}

/* ---- backward: own terms and the state pass chained, for P <= 64, N <= 128 at the bf16 precision (ssd-sbwd) ----
 * The same dstates[c] = own_c + a_c dstates[c+1] into gbuf[b, c-1] as ssd_chunk_state_bwd_chain_kernel (the same
 * tickets, flags, zeroing of gbuf[b, nch-1] and early exit of chunk 0), with ssd_chunk_state_bf_kernel's
 * treatment of the product own_c = sum_i (ecum_i dy_i) C_i^T: dy, C_0, C_1 loaded in one round (12 float4 a
 * thread) before the decays, C stored as bf16 at once, dy scaled by ecum in the registers that loaded it and
 * stored as bf16, one barrier, the two 64 x 64 [p][n] products in the mma fragment layout. What the old kernel
 * did after that, and this one does not: own_c stored raw into gbuf, then (after the flag) re-read, combined and
 * stored again (32 KB written twice and read once a block), each product through a scratch tile with two
 * barriers, the combine in two rounds of 16 scalar ld.cg. Here own_c stays in the accumulators (32 floats a
 * thread) across the wait, G_c is read as float2 in the same fragment layout (16 independent ld.cg a thread, all
 * issued before any store), and dstates[c] is stored once as float2 (the old pass's expression, own + a_c G).
 * 3 bf16 tiles, 27,648 B. VEC: 16-byte loads and 8-byte G accesses (E, W, P, N multiples of 4, arrays aligned).
 * MINB: the launch bounds' blocks per SM: 4 (ssd.cu's default; ptxas: 64 registers, 64 bytes of spill loads,
 * 64-120 of stores: the 32 accumulators and 32 G values held together) or 3 (FLOWHN_SSD_SBWD_BLOCKS=3: 78-80
 * registers, no spill, 396 slots instead of 528), an A/B for the GPU. */
template <bool VEC, int MINB>
__global__ void __launch_bounds__(NT, MINB) ssd_chunk_state_bwd_chain_bf_kernel(float *g, int *sync, const float *dy,
                                                                          const float *xbc, const float *dt_raw,
                                                                          const float *dt_bias, const float *A_log,
                                                                          SsdDims d) {
    extern __shared__ __align__(128) float smem[];
    bf16t *Us = (bf16t *)smem, *Cs = Us + TS * LDH;  /* Cs: N columns 0..63, then 64..127 */
    __shared__ float u_s[TS], dt_s[TS], la_s[TS], ecum_s[TS], etail_s[TS], etot;
    __shared__ int ticket_s;
    if (threadIdx.x == 0) ticket_s = atomicAdd(sync, 1);
    __syncthreads();
    const int t = ticket_s, nbh = d.nh * d.B;
    const size_t PN = (size_t)d.P * d.N;
    Chunk k = chain_chunk_of(t, d, A_log);
    const int c = k.c;
    float *gin = g + (((size_t)k.b * d.nch + c) * d.nh + k.h) * PN;  /* G_c, from chunk c+1's block */
    if (c == d.nch - 1)  /* G_{nch-1} = dstates[nch] = 0 */
        for (size_t e = threadIdx.x; e < PN; e += NT) gin[e] = 0.f;
    if (c == 0) return;  /* own_0 only feeds dstates[0], which nothing reads; nobody waits on chunk 0 */
    const size_t row0 = (size_t)k.b * d.n + k.t0;
    float4 uv[4], v[8];
    {
        const float *Cm = xbc + row0 * d.W + d.E + (size_t)(d.G + k.g) * d.N;
        ld_tile4<VEC>(uv, dy + row0 * d.E + (size_t)k.h * d.P, d.E, k.l, d.P);
        ld_ntile8<VEC>(v, Cm, d.W, k.l, d.N);
    }
    chunk_decays(d, k, dt_raw, dt_bias, u_s, dt_s, la_s, ecum_s, etail_s, &etot, nullptr);
    st_ntile8(Cs, v);
    {
        const int r0 = threadIdx.x >> 4;
#pragma unroll
        for (int q = 0; q < 4; q++) {
            const float s = ecum_s[r0 + 16 * q];  /* the old kernel's sc_s (0 past l) */
            uv[q] = make_float4(uv[q].x * s, uv[q].y * s, uv[q].z * s, uv[q].w * s);
        }
        st_tile4(Us, uv);
    }
    __syncthreads();
    float acc[2][4][4];  /* own_c, [p][n] for n in [0, 64) and [64, 128) */
    zero(acc[0]);
    zero(acc[1]);
    mm_mma<false, false, bf16t, bf16t, 2, LDH, LDH>(acc[0], Us, Cs, k.l);
    if (d.N > TS) mm_mma<false, false, bf16t, bf16t, 2, LDH, LDH>(acc[1], Us, Cs + TS * LDH, k.l);
    /* the chain (the old kernel's): wait for chunk c+1's flag; the slots again from the ticket */
    const int t2 = ticket_s;
    const bool last = t2 < nbh;
    int *flag = sync + 1;
    if (!last && threadIdx.x == 0) {
        while (*(volatile int *)&flag[t2 - nbh] == 0) {
        }
        __threadfence();
    }
    __syncthreads();
    const float ac = etot;
    {
        const int c1 = d.nch - 1 - t2 / nbh, bh = t2 % nbh;
        gin = g + (((size_t)(bh / d.nh) * d.nch + c1) * d.nh + bh % d.nh) * PN;
    }
    float *o = gin - (size_t)d.nh * PN;  /* gbuf[b, c-1]: dstates[c] */
    const Lay<2> L;
    float2 gv[2][4][2];  /* G_c at the accumulators' elements, every load issued before any store */
#pragma unroll
    for (int h = 0; h < 2; h++)
#pragma unroll
        for (int a = 0; a < 4; a++)
#pragma unroll
            for (int bb = 0; bb < 2; bb++) {
                const int p = L.row(a), nn = TS * h + L.col(2 * bb);
                float2 x = make_float2(0.f, 0.f);
                if (!last && p < d.P) {
                    /* through L2 (ld.cg): another block wrote it during this kernel */
                    if constexpr (VEC) {
                        if (nn < d.N) x = __ldcg((const float2 *)(gin + (size_t)p * d.N + nn));
                    } else {
                        if (nn < d.N) x.x = __ldcg(gin + (size_t)p * d.N + nn);
                        if (nn + 1 < d.N) x.y = __ldcg(gin + (size_t)p * d.N + nn + 1);
                    }
                }
                gv[h][a][bb] = x;
            }
#pragma unroll
    for (int h = 0; h < 2; h++)
#pragma unroll
        for (int a = 0; a < 4; a++)
#pragma unroll
            for (int bb = 0; bb < 2; bb++) {
                const int p = L.row(a), nn = TS * h + L.col(2 * bb);
                if (p >= d.P) continue;
                const float x0 = acc[h][a][2 * bb] + ac * gv[h][a][bb].x, x1 = acc[h][a][2 * bb + 1] + ac * gv[h][a][bb].y;
                if constexpr (VEC) {
                    if (nn < d.N) *(float2 *)(o + (size_t)p * d.N + nn) = make_float2(x0, x1);
                } else {
                    if (nn < d.N) o[(size_t)p * d.N + nn] = x0;
                    if (nn + 1 < d.N) o[(size_t)p * d.N + nn + 1] = x1;
                }
            }
    __threadfence();  /* dstates[c] visible device-wide before the flag */
    __syncthreads();  /* every thread's fence done */
    if (threadIdx.x == 0) *(volatile int *)&flag[t2] = 1;
}

/* ---- backward: own terms and the state pass with no chain between blocks (ssd-sbwd-lb, FLOWHN_SSD_SBWD=walk) ----
 * The recurrence dstates[c] = own_c + a_c dstates[c+1] is element-wise in (p, n): an element's chain never reads
 * another element. So one block owns (b, h, a TS-wide N tile: blockIdx (n tile, h, b)) and walks the chunks from the
 * last to the first, carrying G = dstates[c+1] at its accumulators' elements (16 floats a thread, the mma fragment
 * layout) in registers: no tickets, flags, fences, polls or G reads, and no block ever waits on another (no deadlock
 * question in any launch order). Each step is ssd_chunk_state_bwd_chain_bf_kernel's own term on the N tile (the same
 * bf16 tiles: C as loaded, dy scaled by ecum; the same decays as chunk_decays, in the CPU's order) and its combine
 * own + a_c G, so the same floats, stored once into gbuf[b, c-1]; gbuf[b, nch-1] = dstates[nch] = 0 is stored first,
 * chunk 0 is never computed (dstates[0] is never read). The decay scan's serial part is only the adds (one thread,
 * as chunk_decays' order); each thread takes expf of the sums it scales by (the same floats as chunk_decays' ecum),
 * so the per-chunk scan is ~64 dependent adds instead of 64 dependent add + expf rounds. The next chunk's C tile and dt are loaded as soon as the
 * current ones are in shared memory, its dy as soon as the current dy is (registers, one chunk ahead), so the loads'
 * latency runs under the decay scan, the product and the stores. 2 bf16 tiles, 18,432 B; 3 blocks per SM (the grid
 * B nh ceil(N / TS) is 384 blocks at the gpt2small layer: one wave of 396 slots). VEC: 16-byte loads and 8-byte
 * stores (E, W, P, N multiples of 4, arrays aligned), as the chained bf kernel. Perf-notes ssd-sbwd-lb. */
constexpr size_t STATE_WALK_SMEM = 2 * TS * LDH * sizeof(bf16t);
template <bool VEC>
__global__ void __launch_bounds__(NT, 3) ssd_chunk_state_bwd_walk_bf_kernel(float *g, const float *dy, const float *xbc,
                                                                        const float *dt_raw, const float *dt_bias,
                                                                        const float *A_log, SsdDims d) {
    extern __shared__ __align__(128) float smem[];
    bf16t *Us = (bf16t *)smem, *Cs = Us + TS * LDH;
    __shared__ float la_s[TS], ecum_s[TS], etot_s;  /* ecum_s: the running sums of la (their expf is ecum) */
    const int tid = threadIdx.x, n0 = blockIdx.x * TS, h = blockIdx.y, b = blockIdx.z;
    const int grp = h / (d.nh / d.G);
    const float Ae = expf(A_log[h]), bias = dt_bias[h];
    const size_t PN = (size_t)d.P * d.N;
    const Lay<2> L;
    /* gbuf[b, c]: G_c = dstates[c + 1], this block's columns [n0, n0 + TS) */
    auto slot = [&](int c) { return g + (((size_t)b * d.nch + c) * d.nh + h) * PN + n0; };
    auto store = [&](float *o, const float v[4][4]) {
#pragma unroll
        for (int a = 0; a < 4; a++) {
            const int p = L.row(a);
            if (p >= d.P) continue;
#pragma unroll
            for (int bb = 0; bb < 2; bb++) {
                const int nn = L.col(2 * bb);  /* even; nn + 1 = L.col(2 bb + 1) */
                if constexpr (VEC) {
                    if (n0 + nn < d.N) *(float2 *)(o + (size_t)p * d.N + nn) = make_float2(v[a][2 * bb], v[a][2 * bb + 1]);
                } else {
                    if (n0 + nn < d.N) o[(size_t)p * d.N + nn] = v[a][2 * bb];
                    if (n0 + nn + 1 < d.N) o[(size_t)p * d.N + nn + 1] = v[a][2 * bb + 1];
                }
            }
        }
    };
    float gc[4][4];  /* G: dstates[c + 1] at this thread's elements */
    zero(gc);
    store(slot(d.nch - 1), gc);  /* dstates[nch] = 0 */
    if (d.nch == 1) return;
    float4 uv[4], v[4];
    float u = 0.f;
    auto rows = [&](int c) { return min(d.L, d.n - c * d.L); };
    auto row0_of = [&](int c) { return (size_t)b * d.n + (size_t)c * d.L; };
    auto load_c = [&](int c) {  /* C's N tile and dt_raw + bias of chunk c */
        const size_t r0 = row0_of(c);
        const int l = rows(c);
        ld_tile4<VEC>(v, xbc + r0 * d.W + d.E + (size_t)(d.G + grp) * d.N + n0, d.W, l, d.N - n0);
        u = tid < l ? dt_raw[(r0 + tid) * d.nh + h] + bias : 0.f;
    };
    auto load_u = [&](int c) { ld_tile4<VEC>(uv, dy + row0_of(c) * d.E + (size_t)h * d.P, d.E, rows(c), d.P); };
    load_c(d.nch - 1);
    load_u(d.nch - 1);
#pragma unroll 1
    for (int c = d.nch - 1; c >= 1; c--) {
        const int l = rows(c);
        if (tid < TS) {  /* chunk_decays' la (0 past l) */
            float la = 0.f;
            if (tid < l) la = -softplusf_(u) * Ae;
            la_s[tid] = la;
        }
        st_tile4(Cs, v);
        if (c > 1) load_c(c - 1);  /* v and u are free: the next chunk's C and dt in flight from here */
        __syncthreads();
        if (tid == 64) {  /* the running sum from the chunk's start (the CPU's order, as chunk_decays); only the
                           * adds are serial here, the exponentials are taken by the threads that use them */
            float s = 0.f;
#pragma unroll 8
            for (int i = 0; i < l; i++) { s += la_s[i]; ecum_s[i] = s; }
            etot_s = expf(s);
        }
        __syncthreads();
        {
            const int r0 = tid >> 4;
#pragma unroll
            for (int q = 0; q < 4; q++) {
                const int r = r0 + 16 * q;
                const float s = r < l ? expf(ecum_s[r]) : 0.f;  /* chunk_decays' ecum_r: expf of the same sum */
                uv[q] = make_float4(uv[q].x * s, uv[q].y * s, uv[q].z * s, uv[q].w * s);
            }
            st_tile4(Us, uv);
        }
        const float ac = etot_s;
        if (c > 1) load_u(c - 1);  /* uv is free: the next chunk's dy in flight from here */
        __syncthreads();
        float acc[4][4];  /* own_c on the N tile */
        zero(acc);
        mm_mma<false, false, bf16t, bf16t, 2, LDH, LDH>(acc, Us, Cs, l);
#pragma unroll
        for (int a = 0; a < 4; a++)
#pragma unroll
            for (int j = 0; j < 4; j++) gc[a][j] = acc[a][j] + ac * gc[a][j];  /* the chained kernels' expression */
        store(slot(c - 1), gc);
        __syncthreads();  /* the tiles, la_s, ecum_s and etot_s are rewritten by the next step */
    }
}

/* ---- forward: chunk_state and the state pass in one walk, for P <= 64, N <= 128 at bf16 (ssd-fwd-walk,
 * FLOWHN_SSD_FWD_WALK=1) ----
 * states[c+1] = S_c + a_c states[c] is element-wise in (p, n), as the backward's recurrence: one block owns (b, h, a
 * TS-wide N tile: blockIdx (n tile, h, b)) and walks the chunks from the first, carrying the prefix state at its
 * accumulators' elements (16 floats a thread) in registers. The local states S_c never reach memory (today's
 * chunk_state wrote them, 100 MB at gpt2small, and the pass read them back before overwriting them in place); only
 * the prefix states are stored, states[b, 0] = 0 included, which is all chunk_scan and the backward read. achunk is
 * not written (only the pass read it; the backward computes its own). Each step is ssd_chunk_state_bf_kernel<., 3>'s
 * product on the N tile (B's N tile as loaded, x scaled by etail dt in the registers that loaded it, both bf16,
 * mm_ldsm) and the pass's expression S + a_c carry, so the same floats as the two kernels. The decays as
 * chunk_decays computes them (dt, la; ecum_{l-1} summed from the chunk's start, etail summed from its end, the CPU's
 * orders), but only the adds are serial (two threads, the two sums at once); the threads that scale take expf of
 * the sums they need, as the backward walk. The next chunk's B tile and dt are loaded as soon as the current ones
 * are in shared memory, its x as soon as the current x is: one chunk ahead, under the scans, the product and the
 * stores. 2 bf16 tiles, 18,432 B; 3 blocks per SM (384 blocks at the gpt2small layer: one wave of 396). VEC: 16-byte
 * loads and 8-byte stores (W, E, P, N multiples of 4, arrays aligned). Perf-notes ssd-fwd-walk. */
template <bool VEC>
__global__ void __launch_bounds__(NT, 3) ssd_chunk_state_fwd_walk_bf_kernel(float *states, const float *xbc,
                                                                        const float *dt_raw, const float *dt_bias,
                                                                        const float *A_log, SsdDims d) {
    extern __shared__ __align__(128) float smem[];
    bf16t *Xs = (bf16t *)smem, *Bs = Xs + TS * LDH;
    /* la_s, dt_s: chunk_decays' la and dt (0 past l); etl_s: the sums from the chunk's end (their expf is etail) */
    __shared__ float la_s[TS], dt_s[TS], etl_s[TS], etot_s;
    const int tid = threadIdx.x, n0 = blockIdx.x * TS, h = blockIdx.y, b = blockIdx.z;
    const int grp = h / (d.nh / d.G);
    const float Ae = expf(A_log[h]), bias = dt_bias[h];
    const size_t PN = (size_t)d.P * d.N;
    const Lay<2> L;
    /* states[b, c]: the prefix state before chunk c, this block's columns [n0, n0 + TS) */
    auto slot = [&](int c) { return states + (((size_t)b * (d.nch + 1) + c) * d.nh + h) * PN + n0; };
    auto store = [&](float *o, const float v[4][4]) {
#pragma unroll
        for (int a = 0; a < 4; a++) {
            const int p = L.row(a);
            if (p >= d.P) continue;
#pragma unroll
            for (int bb = 0; bb < 2; bb++) {
                const int nn = L.col(2 * bb);  /* even; nn + 1 = L.col(2 bb + 1) */
                if constexpr (VEC) {
                    if (n0 + nn < d.N) *(float2 *)(o + (size_t)p * d.N + nn) = make_float2(v[a][2 * bb], v[a][2 * bb + 1]);
                } else {
                    if (n0 + nn < d.N) o[(size_t)p * d.N + nn] = v[a][2 * bb];
                    if (n0 + nn + 1 < d.N) o[(size_t)p * d.N + nn + 1] = v[a][2 * bb + 1];
                }
            }
        }
    };
    float sc[4][4];  /* states[c] at this thread's elements */
    zero(sc);
    store(slot(0), sc);  /* states[b, 0] = 0, as the pass stores it */
    float4 xv[4], v[4];
    float u = 0.f;
    auto rows = [&](int c) { return min(d.L, d.n - c * d.L); };
    auto row0_of = [&](int c) { return (size_t)b * d.n + (size_t)c * d.L; };
    auto load_b = [&](int c) {  /* B's N tile and dt_raw + bias of chunk c */
        const size_t r0 = row0_of(c);
        const int l = rows(c);
        ld_tile4<VEC>(v, xbc + r0 * d.W + d.E + (size_t)grp * d.N + n0, d.W, l, d.N - n0);
        u = tid < l ? dt_raw[(r0 + tid) * d.nh + h] + bias : 0.f;
    };
    auto load_x = [&](int c) { ld_tile4<VEC>(xv, xbc + row0_of(c) * d.W + (size_t)h * d.P, d.W, rows(c), d.P); };
    load_b(0);
    load_x(0);
#pragma unroll 1
    for (int c = 0; c < d.nch; c++) {
        const int l = rows(c);
        if (tid < TS) {  /* chunk_decays' dt and la (0 past l) */
            float dt = 0.f, la = 0.f;
            if (tid < l) {
                dt = softplusf_(u);
                la = -dt * Ae;
            }
            dt_s[tid] = dt;
            la_s[tid] = la;
        }
        st_tile4(Bs, v);
        if (c + 1 < d.nch) load_b(c + 1);  /* v and u are free: the next chunk's B and dt in flight from here */
        __syncthreads();
        if (tid == 64) {  /* a_c: the running sum from the chunk's start (chunk_decays' etot, the CPU's order) */
            float s = 0.f;
#pragma unroll 8
            for (int i = 0; i < l; i++) s += la_s[i];
            etot_s = expf(s);
        } else if (tid == 96) {  /* etail's sums, from the end walking down (chunk_decays' order); etail_{l-1} = 1 */
            float s = 0.f;
#pragma unroll 8
            for (int j = l - 2; j >= 0; j--) { s += la_s[j + 1]; etl_s[j] = s; }
        }
        __syncthreads();
        {
            const int r0 = tid >> 4;
#pragma unroll
            for (int q = 0; q < 4; q++) {
                const int r = r0 + 16 * q;
                /* chunk_state_bf's scale etail_r dt_r (0 past l), etail_r the expf of chunk_decays' sum */
                const float s = r < l ? (r == l - 1 ? 1.f : expf(etl_s[r])) * dt_s[r] : 0.f;
                xv[q] = make_float4(xv[q].x * s, xv[q].y * s, xv[q].z * s, xv[q].w * s);
            }
            st_tile4(Xs, xv);
        }
        const float ac = etot_s;
        if (c + 1 < d.nch) load_x(c + 1);  /* xv is free: the next chunk's x in flight from here */
        __syncthreads();
        float acc[4][4];  /* S_c on the N tile, [p][n] */
        zero(acc);
        mm_ldsm<false, false>(acc, Xs, Bs, l);
#pragma unroll
        for (int a = 0; a < 4; a++)
#pragma unroll
            for (int j = 0; j < 4; j++) sc[a][j] = acc[a][j] + ac * sc[a][j];  /* the pass's v + a_c carry */
        store(slot(c + 1), sc);
        __syncthreads();  /* the tiles, la_s, dt_s, etl_s and etot_s are rewritten by the next step */
    }
}
