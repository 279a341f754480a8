#!/usr/bin/env bash
# session 11 call 1 (two H200s). Bundle = integ11a: main a75af79 + pending/bf16qkv (2 commits).
# GPU0: test_cuda (session 10's test fixes, the review refactors, bf16qkv), graph + decode tests, the bf16qkv A/B,
#       FlowHN/LLaMA at 135M/350M/1B in one run. GPU1: ncu kernel times (mamba2-gpt2small, llama-gpt2small), test_cuda_model.
set -uo pipefail
T0=$SECONDS; O=$OUT; mkdir -p $O/g0 $O/g1
source .devcarry/bundle/env.sh
left() { echo $((${END:-548} - (SECONDS - T0))); }
run_t() { local d=$1 n=$2; shift 2; local s=$SECONDS; env "$@" > $O/$d/$n.log 2>&1; echo "| $n | rc $? | $(grep '^RESULT' $O/$d/$n.log | tail -1) | $((SECONDS-s)) s |" >> $O/$d/rows.md; grep -E "^FAIL|check failed|error|ERROR" $O/$d/$n.log | head -8 >> $O/$d/rows.md; }
bench() { local d=$1 tag=$2 c=$3 b=$4 t=$5; shift 5
    [ $(left) -lt 30 ] && return
    env "$@" timeout 80 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --batch $b --seq-len $t --steps 6 --warmup 2 --precision bf16 > $O/$d/bench-$tag-$c-$b-$t.log 2>&1
    echo "| $c B$b T$t | $tag | $(grep -oE 'graph=[0-9]|step_ms=[0-9.]+|tokens_per_s=[0-9.]+|mfu_bf16=[0-9.]+|peak_alloc_gib=[0-9.]+' $O/$d/bench-$tag-$c-$b-$t.log | tr '\n' ' ') $(grep -m1 -iE 'error|fail' $O/$d/bench-$tag-$c-$b-$t.log | cut -c1-150) |" >> $O/$d/rows.md; }
ktimes() { local d=$1 c=$2; [ $(left) -lt 90 ] && return
    timeout 120 tools/gpu/kernel_times.sh --bin $FB/flowhn-cuda --out $O/$d/kt-$c configs/$c.json > $O/$d/kt-$c.txt 2>&1
    { echo "### kernel times $c"; head -45 $O/$d/kt-$c.txt; } >> $O/$d/rows.md; }
(
  export CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=16
  run_t g0 test_cuda FLOWHN_TEST_REQUIRE_CUDNN=1 timeout 260 $FB/test_cuda
  run_t g0 test_cuda_graph timeout 80 $FB/test_cuda_graph
  run_t g0 test_cuda_graph_streams FLOWHN_BRANCH_STREAMS=1 timeout 80 $FB/test_cuda_graph
  run_t g0 test_cuda_decode timeout 60 $FB/test_cuda_decode
  bench g0 new llama-gpt2small 8 1024; bench g0 qkv0 llama-gpt2small 8 1024 FLOWHN_BF16_QKV=0
  bench g0 new llama-135m 8 1024; bench g0 qkv0 llama-135m 8 1024 FLOWHN_BF16_QKV=0
  bench g0 new llama-gpt2small 8 1024
  for s in 135m 350m 1b; do bench g0 new llama-$s 8 1024; bench g0 new flowhn-fac-$s 8 1024; done
) &
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=16
  ktimes g1 mamba2-gpt2small
  ktimes g1 llama-gpt2small
  run_t g1 test_cuda_model timeout 300 $FB/test_cuda_model
) &
wait
cd $O; { echo "## GPU0"; cat g0/rows.md; echo "## GPU1"; cat g1/rows.md; } > report.md 2>/dev/null
grep -h "bf16 q|k|v\|test_bf16_qkv\|qkv" g0/test_cuda.log | head -12 | cut -c1-220 >> report.md
grep -h "q|k|v D" g1/test_cuda_model.log | head -12 | cut -c1-220 >> report.md
tar czf logs.tgz g0 g1 2>/dev/null && rm -rf g0 g1; echo "total $((SECONDS-T0)) s" >> report.md; cat report.md
