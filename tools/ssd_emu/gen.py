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
