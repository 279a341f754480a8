#!/usr/bin/env bash
# session 12 call 3 (two H200s). Bundle = integ12b: main 8898eca (calls 1-2 merged) + dzxd16, llamapass, ssdtrans,
# scan1b, sumsq (all first run here).
# GPU0: test_cuda (whole), graph tests both ways, LLaMA A/Bs (FLOWHN_CLS_SMEM=0, FLOWHN_DW_FINISH=0,
#       FLOWHN_SWIGLU_V8=0; llama-135m FLOWHN_CLS_SMEM=big), mamba1-135m A/B (FLOWHN_SCAN1_BWD=pair), racecheck of the
#       changed kernels' cases.
# GPU1: test_cuda_model, Mamba-2 A/Bs (FLOWHN_DZXD_FP32=1, FLOWHN_SSD_CBWD=bf8), flowhn-fac-1b A/Bs
#       (FLOWHN_SCAN1_BWD=pair, FLOWHN_SUMSQ_OVERLAP=0).
set -uo pipefail
T0=$SECONDS; O=$OUT; mkdir -p $O/g0 $O/g1
source .devcarry/bundle/env.sh
left() { echo $((${END:-500} - (SECONDS - T0))); }
run_t() { local d=$1 n=$2; shift 2; local s=$SECONDS; env "$@" > $O/$d/$n.log 2>&1; echo "| $n | rc $? | $(grep '^RESULT' $O/$d/$n.log | tail -1) | $((SECONDS-s)) s |" >> $O/$d/rows.md; grep -E "^FAIL|check failed|error|ERROR|table is full" $O/$d/$n.log | head -8 | cut -c1-300 >> $O/$d/rows.md; }
bench() { local d=$1 tag=$2 c=$3 b=$4 t=$5; shift 5
    [ $(left) -lt 30 ] && return
    env "$@" timeout 80 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --batch $b --seq-len $t --steps 6 --warmup 2 --precision bf16 > $O/$d/bench-$tag-$c-$b-$t.log 2>&1
    echo "| $c B$b T$t | $tag | $(grep -oE 'graph=[0-9]|step_ms=[0-9.]+|tokens_per_s=[0-9.]+|mfu_bf16=[0-9.]+|peak_alloc_gib=[0-9.]+' $O/$d/bench-$tag-$c-$b-$t.log | tr '\n' ' ') $(grep -m1 -iE 'error|fail' $O/$d/bench-$tag-$c-$b-$t.log | cut -c1-150) |" >> $O/$d/rows.md; }
(
  export CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=16
  run_t g0 test_cuda FLOWHN_TEST_REQUIRE_CUDNN=1 timeout 250 $FB/test_cuda
  bench g0 new llama-gpt2small 8 1024; bench g0 cls0 llama-gpt2small 8 1024 FLOWHN_CLS_SMEM=0
  bench g0 dwf0 llama-gpt2small 8 1024 FLOWHN_DW_FINISH=0; bench g0 v80 llama-gpt2small 8 1024 FLOWHN_SWIGLU_V8=0
  bench g0 new llama-gpt2small 8 1024
  bench g0 new llama-135m 8 1024; bench g0 big llama-135m 8 1024 FLOWHN_CLS_SMEM=big
  bench g0 new mamba1-135m 8 1024; bench g0 pair mamba1-135m 8 1024 FLOWHN_SCAN1_BWD=pair
  [ $(left) -gt 80 ] && run_t g0 test_cuda_graph timeout 40 $FB/test_cuda_graph
  [ $(left) -gt 50 ] && run_t g0 test_cuda_graph_streams FLOWHN_BRANCH_STREAMS=1 timeout 40 $FB/test_cuda_graph
  [ $(left) -gt 40 ] && FLOWHN_TEST_QUICK=1 RACECHECK_TIMEOUT=40 RACECHECK_CASES=test_selective_scan,test_classifier_rows,test_rmsnorm,test_inproj_d16 timeout $(( $(left) - 8 )) tools/gpu/racecheck_cases.sh $FB/test_cuda $O/g0/race > $O/g0/race.log 2>&1
) &
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=16
  run_t g1 test_cuda_model timeout 300 $FB/test_cuda_model
  bench g1 new mamba2-gpt2small 8 1024; bench g1 dzxd1 mamba2-gpt2small 8 1024 FLOWHN_DZXD_FP32=1
  bench g1 bf8 mamba2-gpt2small 8 1024 FLOWHN_SSD_CBWD=bf8
  bench g1 new flowhn-fac-1b 8 1024; bench g1 pair flowhn-fac-1b 8 1024 FLOWHN_SCAN1_BWD=pair
  bench g1 sumsq0 flowhn-fac-1b 8 1024 FLOWHN_SUMSQ_OVERLAP=0
  bench g1 new mamba2-135m 8 1024; bench g1 dzxd1 mamba2-135m 8 1024 FLOWHN_DZXD_FP32=1
  bench g1 bf8 mamba2-135m 8 1024 FLOWHN_SSD_CBWD=bf8
  bench g1 new mamba2-gpt2small 8 1024
) &
wait
cd $O; { echo "## GPU0"; cat g0/rows.md; echo "### racecheck"; tail -12 g0/race.log; echo "## GPU1"; cat g1/rows.md; } > report.md 2>/dev/null
grep -hE "ssd-bf8|=bf8 vs|selective_scan-pair|smem 0/1/2|v8 bitwise|dwf0|dzxd16" g0/test_cuda.log | head -24 | cut -c1-200 >> report.md
grep -hE "dzxd|classifier staging|sum of squares|sumsq|overlap" g1/test_cuda_model.log | head -20 | cut -c1-220 >> report.md
tar czf logs.tgz g0 g1 2>/dev/null && rm -rf g0 g1; echo "total $((SECONDS-T0)) s" >> report.md; cat report.md
