#!/bin/sh
# tools/scan1_emu/run.sh - build the CPU emulation of the register-resident
# Mamba-1 scan kernels (src/ops/cuda/selective_scan_reg.cuh) and compare them
# with the CPU op on odd and model-like shapes. Needs the CPU library (make)
# and g++; ~15 minutes on a loaded 2-core machine (SCAN1_EMU_BWD=4 runs only
# the dense pair backward's lines, 3 the session-10 pair one; an argument prints only the segment model).
set -e
cd "$(dirname "$0")/../.."
make -s build/libflowhn.a
mkdir -p build/scan1_emu
g++ -O2 -std=c++17 -pthread -w tools/scan1_emu/emu.cpp build/libflowhn.a -lm -fopenmp -o build/scan1_emu/emu
OMP_NUM_THREADS=1 build/scan1_emu/emu "$@"
