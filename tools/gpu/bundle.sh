#!/usr/bin/env bash
# Packs the CUDA build for a GPU machine that has the CUDA runtime but not our CPU
# build's libraries (no OpenBLAS, no cJSON: the lent H100/H200 machines).
#
#   tools/gpu/bundle.sh [--out DIR]      (default .devcarry/bundle; run `make cuda` first)
#
# DIR/bin/*.xz   build/flowhn-cuda and the GPU test binaries, xz-compressed (~2 MB each)
# DIR/lib/       libcjson.so.1 and libgomp.so.1 from this machine, and libopenblas.so.0
#                built from tools/gpu/blas_shim.c: cblas_sgemm/dgemm with double accumulation,
#                enough for the CPU oracle inside the GPU tests (not for speed)
# DIR/env.sh     `source DIR/env.sh` there: unpacks bin/ into /tmp/flowhn-bin and sets
#                LD_LIBRARY_PATH (with PyTorch's cuDNN/NVRTC lib dirs, for the cuDNN attention);
#                then run $FB/flowhn-cuda, $FB/test_cuda, ...
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=.devcarry/bundle
[ "${1:-}" = "--out" ] && OUT="$2"
mkdir -p "$OUT/bin" "$OUT/lib"
for f in build/flowhn-cuda build/tests/test_cuda build/tests/test_cuda_model build/tests/test_cuda_decode \
         build/tests/test_cuda_graph; do
    [ -x "$f" ] || { echo "bundle: $f missing: run make cuda first" >&2; exit 2; }
    xz -T2 -c "$f" > "$OUT/bin/$(basename "$f").xz"
done
gcc -O3 -march=x86-64-v3 -fopenmp -shared -fPIC -Wl,-soname,libopenblas.so.0 -o "$OUT/lib/libopenblas.so.0" \
    tools/gpu/blas_shim.c
for l in libcjson.so.1 libgomp.so.1; do cp -L "$(ldconfig -p | awk -v l=$l '$1 == l {print $NF; exit}')" "$OUT/lib/"; done
cat > "$OUT/env.sh" <<'ENV'
# source me on the GPU machine, from the repository root
_b=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export FB=/tmp/flowhn-bin LD_LIBRARY_PATH=$_b/lib:${LD_LIBRARY_PATH:-}
# cuDNN (attention_cudnn.cu dlopens libcudnn.so.9) and the NVRTC its runtime-compiled engines use live in
# PyTorch's wheels there: their lib dirs on the path, where python3 has them
for _m in nvidia.cudnn nvidia.cuda_nvrtc nvidia.cu13; do
    _d=$(python3 -c "import $_m as m; print(list(m.__path__)[0])" 2>/dev/null) && [ -d "$_d/lib" ] &&
        export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$_d/lib
done
mkdir -p $FB
# unpack beside and rename: a second source while a binary runs must not write into it (Text file busy)
for f in $_b/bin/*.xz; do n=$FB/$(basename "$f" .xz); xz -dc "$f" > $n.$$; chmod +x $n.$$; mv -f $n.$$ $n; done
ENV
du -sh "$OUT"
