# turn ssd_kernels.cuh into host C++ for the thread emulation (exact build only)
import re, sys
s = open(sys.argv[1]).read()
a = s.index("/* The same product on tensor cores")
b = s.index("template <bool A_RK, bool B_CK>\n__device__ __forceinline__ void mm(")
s = s[:a] + s[b:]
s = s.replace("    if constexpr (TC) mm_tc<A_RK, B_CK>(acc, A, Bm, K, Sx);\n    else mm_fma<A_RK, B_CK>(acc, A, Bm, K);",
              "    (void)Sx; mm_fma<A_RK, B_CK>(acc, A, Bm, K);")
s = s.replace('    if constexpr (TC) asm volatile("cp.async.wait_all;\\n" ::);\n', '')
s = re.sub(r'__device__ __forceinline__ void cp16z\(float \*dst, const float \*src, bool valid\) \{.*?\n\}',
           'inline void cp16z(float *dst, const float *src, bool valid) { for (int q = 0; q < 4; q++) dst[q] = valid ? src[q] : 0.f; }', s, flags=re.S)
s = re.sub(r'__device__ __forceinline__ size_t opaque\(size_t v\) \{.*?\n\}', 'inline size_t opaque(size_t v) { return v; }', s, flags=re.S)
s = s.replace("extern __shared__ __align__(128) float smem[];", "float *smem = g_smem;")
s = s.replace("__shared__", "static")
s = re.sub(r'__launch_bounds__\([^)]*\)', '', s)
s = s.replace("__global__", "").replace("__device__", "").replace("__forceinline__", "inline")
assert "asm" not in s, [l for l in s.split("\n") if "asm" in l]
open(sys.argv[2], "w").write(s)
