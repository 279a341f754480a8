#!/bin/sh
# tools/ssd_emu/run.sh - build the CPU emulation of the SSD kernels and run it on
# test_ssd's shapes (both builds, both copy timings, both acc modes); the backward's state pass
# both ways (the chained kernel's G must equal the two kernels' bit for bit). Needs the CPU
# library (make) and g++; takes minutes on two cores (every block is 256 threads).
# Usage: tools/ssd_emu/run.sh [--big]   (--big adds the 135M layer at T 1024, B 1)
# The p64 backward runs in the tensor-core build as its bf16 variant (ssd_chunk_bwd_p64_bf_kernel<8>, ssd.cu's
# default at the bf16 precision (ssd-ldsm: ldmatrix fragment loads), or <9> where W, P or N is odd, as ssd.cu picks;
# its bf16 tiles exact here unless EMU_TILE=bf16), with EMU_CBWD=bf4 ssd-cbwd4's <4> / <5>, EMU_CBWD=bf3 as
# ssd-cbwd3 left it (<3>), EMU_CBWD=bf5 <5> and EMU_CBWD=bf9 <9> forced, EMU_CBWD=mma in
# the mma.sync fragment layout (host mma.sync in the PTX ISA's fragment layout, gen.py), EMU_CBWD=wl in
# the warp-local one and EMU_CBWD=old in its first one; the exact build runs the warp-local layout (as ssd.cu).
# Every emu_tc run with P <= 64, N <= 128 also runs the forward walk (ssd_chunk_state_fwd_walk_bf_kernel, ssd-fwd-walk)
# and requires its states and chunk_scan V 3's y on them equal to chunk_state V 3 + the state pass's bit for bit.
# The tensor-core build is also run once with the operands rounded to TF32 (EMU_ROUND=tf32) at the
# bf16 mode's bound 1e-2 (test_ssd_tc's), as the GPU rounds them, and the bf16 variant with its tiles
# rounded to bf16 too (EMU_TILE=bf16), as the GPU does at the bf16 precision.
set -e
cd "$(dirname "$0")/../.."
make -s build/libflowhn.a
out=build/ssd_emu
mkdir -p $out
python3 tools/ssd_emu/gen.py src/ops/cuda/ssd_kernels.cuh $out/kern_host.h
python3 tools/ssd_emu/gen.py --tc src/ops/cuda/ssd_kernels.cuh $out/kern_tc.h
g++ -O2 -std=c++17 -pthread -w -I$out tools/ssd_emu/emu.cpp build/libflowhn.a -lm -fopenmp -o $out/emu
g++ -O2 -std=c++17 -pthread -w -I$out -DEMU_TC tools/ssd_emu/emu.cpp build/libflowhn.a -lm -fopenmp -o $out/emu_tc
export OMP_NUM_THREADS=1
fail=0
for s in "1 1 1 1 1 1 1" "2 19 4 3 2 5 4" "2 70 4 16 1 40 16" "1 64 2 8 2 64 64" "2 130 8 64 2 136 64" \
         "1 333 4 64 1 128 64" "2 97 4 64 2 200 48" "1 101 6 64 3 64 64" "1 77 3 36 3 72 32" "1 99 6 20 2 150 50" "2 300 6 24 3 40 64" \
         "3 257 5 64 1 100 32"; do
    $out/emu $s 1 1 1 || fail=1; $out/emu $s 1 1 0 || fail=1
    $out/emu_tc $s 1 1 1 || fail=1; $out/emu_tc $s 1 0 0 || fail=1
    EMU_CBWD=old $out/emu_tc $s 1 1 1 || fail=1  # the p64 kernel's first layout (FLOWHN_SSD_CBWD=old)
    EMU_CBWD=wl $out/emu_tc $s 1 0 1 || fail=1  # the warp-local layout (FLOWHN_SSD_CBWD=wl)
    EMU_CBWD=mma $out/emu_tc $s 1 1 0 || fail=1  # the mma fragment layout (FLOWHN_SSD_CBWD=mma)
    EMU_CBWD=bf3 $out/emu_tc $s 1 1 1 || fail=1  # the bf16 variant as ssd-cbwd3 left it (FLOWHN_SSD_CBWD=bf3)
    EMU_CBWD=bf4 $out/emu_tc $s 1 0 1 || fail=1  # ssd-cbwd4's V 4 / 5 (FLOWHN_SSD_CBWD=bf4)
done
EMU_CBWD=bf5 $out/emu_tc 2 130 8 64 2 136 64 1 1 1 || fail=1  # ssd-cbwd4's scalar-global variant at even dims
EMU_CBWD=bf9 $out/emu_tc 2 130 8 64 2 136 64 1 1 1 || fail=1  # ssd-ldsm's scalar-global variant at even dims
EMU_ROUND=tf32 EMU_TOL=1e-2 $out/emu_tc 2 97 4 64 2 200 48 1 1 1 || fail=1
EMU_ROUND=tf32 EMU_TILE=bf16 EMU_TOL=1e-2 $out/emu_tc 2 97 4 64 2 200 48 1 1 1 || fail=1
EMU_ROUND=tf32 EMU_TILE=bf16 EMU_TOL=1e-2 $out/emu_tc 1 333 4 64 1 128 64 1 0 0 || fail=1
EMU_ROUND=tf32 EMU_TILE=bf16 EMU_TOL=1e-2 EMU_CBWD=bf3 $out/emu_tc 1 333 4 64 1 128 64 1 0 0 || fail=1
EMU_ROUND=tf32 EMU_TILE=bf16 EMU_TOL=1e-2 EMU_CBWD=bf4 $out/emu_tc 1 333 4 64 1 128 64 1 0 0 || fail=1
$out/emu 1 200 4 80 2 150 48 0 1 0 || fail=1
$out/emu_tc 1 200 4 80 2 150 48 0 1 1 || fail=1
$out/emu_tc 1 200 4 80 2 150 48 0 0 0 || fail=1
# the chained state pass before the general kernel (P 80: two P tiles in the chain step, odd nh), and one chunk
$out/emu 2 300 7 80 1 72 64 0 1 0 || fail=1
$out/emu_tc 2 300 7 80 1 72 64 0 1 1 || fail=1
$out/emu_tc 2 300 7 80 1 72 64 0 0 0 || fail=1
# ssd-fwd2's chunk_scan (ssd_chunk_scan_bf_kernel; every run of emu_tc with P <= 64, N <= 128 checks it, both
# variants where 16-byte loads apply): P 62 / N 126 (scalar loads, a ragged second N tile, a short last chunk),
# and its bf16-rounded tiles at the bf16 mode's bound
# ssd-fwd3's V 3 of both kernels (mm_ldsm: host ldmatrix and bf16 mma.m16n8k16 in the PTX ISA's fragment layout,
# gen.py; row addresses checked 16-byte aligned) runs first in every such emu_tc run ("fwd3 <VEC>" lines), then V 2
# ("fwd2"); EMU_FWD=2 runs V 2 only
$out/emu_tc 2 150 3 62 1 126 56 1 1 1 || fail=1
EMU_ROUND=tf32 EMU_TILE=bf16 EMU_TOL=1e-2 $out/emu_tc 2 150 3 62 1 126 56 1 0 1 || fail=1
# ssd-sbwd's chained state backward (ssd_chunk_state_bwd_chain_bf_kernel; every run of emu_tc with P <= 64, N <= 128
# checks its G against the old chained kernel's and feeds it to the chunk kernel): its bf16-rounded tiles at the bf16
# mode's bound, and the old kernel in the same setting (EMU_SBWD=old) for the error growth
EMU_ROUND=tf32 EMU_TILE=bf16 EMU_TOL=1e-2 $out/emu_tc 2 70 4 16 1 40 16 1 0 0 || fail=1
EMU_SBWD=old EMU_ROUND=tf32 EMU_TILE=bf16 EMU_TOL=1e-2 $out/emu_tc 2 70 4 16 1 40 16 1 0 0 || fail=1
# ssd-sbwd-lb's walk (ssd_chunk_state_bwd_walk_bf_kernel, FLOWHN_SSD_SBWD=walk; every run of emu_tc with P <= 64,
# N <= 128 runs it after the chained bf kernel, requires its G bit for bit and feeds it to the chunk kernel, as ssd.cu's
# default; EMU_SBWD=chain the chained bf kernel's G): exact and with the GPU's rounding
EMU_SBWD=walk $out/emu_tc 2 150 3 62 1 126 56 1 1 0 || fail=1
EMU_SBWD=walk EMU_ROUND=tf32 EMU_TILE=bf16 EMU_TOL=1e-2 $out/emu_tc 2 70 4 16 1 40 16 1 0 0 || fail=1
$out/emu_tc 2 40 3 64 1 128 64 1 1 0 || fail=1
$out/emu_tc 2 40 3 64 1 128 64 1 0 1 || fail=1
if [ "$1" = "--big" ]; then
    $out/emu_tc 1 1024 24 64 1 128 64 1 1 0 || fail=1
    EMU_CBWD=bf4 $out/emu_tc 1 1024 24 64 1 128 64 1 1 0 || fail=1

    EMU_SBWD=chain $out/emu_tc 1 1024 24 64 1 128 64 1 1 0 || fail=1
    EMU_CBWD=bf3 $out/emu_tc 1 1024 24 64 1 128 64 1 1 0 || fail=1
    EMU_CBWD=mma $out/emu_tc 1 1024 24 64 1 128 64 1 1 0 || fail=1
    EMU_CBWD=wl $out/emu_tc 1 1024 24 64 1 128 64 1 1 0 || fail=1
    EMU_CBWD=old $out/emu_tc 1 1024 24 64 1 128 64 1 1 0 || fail=1
fi
[ $fail = 0 ] && echo "ssd_emu: all passed" || { echo "ssd_emu: FAILED"; exit 1; }
