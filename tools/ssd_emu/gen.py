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
a = s.index("/* The same product on tensor cores")
b = s.index("template <bool A_RK, bool B_CK>\n__device__ __forceinline__ void mm(")
s = s[:a] + s[b:]
mm = "    if constexpr (TC) mm_tc<A_RK, B_CK>(acc, A, Bm, K, Sx);\n    else mm_fma<A_RK, B_CK>(acc, A, Bm, K);"
wait = '    if constexpr (TC) asm volatile("cp.async.wait_all;\\n" ::);\n'
cp16z = r'__device__ __forceinline__ void cp16z\(float \*dst, const float \*src, bool valid\) \{.*?\n\}'
if tc:
    s = s.replace(mm, "    (void)Sx; mm_fma<A_RK, B_CK>(acc, A, Bm, K); if constexpr (TC) { __syncthreads(); __syncthreads(); }")
    s = s.replace(wait, '    if constexpr (TC) cp_wait_all();\n')
    s = re.sub(cp16z, 'inline void cp16z(float *dst, const float *src, bool valid) { cp_issue(dst, src, valid); }', s,
               flags=re.S)
else:
    s = s.replace(mm, "    (void)Sx; mm_fma<A_RK, B_CK>(acc, A, Bm, K);")
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
