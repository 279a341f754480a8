#!/bin/sh
# tools/m2_emu/run.sh - build the CPU emulation of the conv1d and gated RMSNorm
# CUDA kernels (src/ops/cuda/conv1d_kernels.cuh, gated_rmsnorm_kernels.cuh) and
# compare them with the CPU ops on odd and model-like shapes. Needs the CPU
# library (make) and g++; a few seconds.
set -e
cd "$(dirname "$0")/../.."
make -s build/libflowhn.a
mkdir -p build/m2_emu
g++ -O2 -std=c++17 -pthread -w tools/m2_emu/emu.cpp build/libflowhn.a -lm -fopenmp -o build/m2_emu/emu
OMP_NUM_THREADS=1 build/m2_emu/emu
