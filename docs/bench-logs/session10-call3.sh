#!/usr/bin/env bash
# session 10 call 3 (two H200s). Bundle = integ10b: main (bf16out, ssdfwd2 merged; test_cuda_model's atomics-aware
# A/B) + bf16io (dqkv bf16-only: FLOWHN_CUDNN_CONV=old / FLOWHN_BF16_ONLY=0; gate|up bf16 D: FLOWHN_BF16_GU=0)
# + scan1ilp (Mamba-1 scan backward over lane pairs; FLOWHN_SCAN1_BWD=v2 the previous default, =pair12 at 12 warps/SM). GPU0: test_cuda_model, the Mamba-1 A/B, racecheck of the scan. GPU1: test_cuda, graph/decode,
# the LLaMA A/B and profile, PyTorch llama-gpt2small.
set -uo pipefail
T0=$SECONDS; O=$OUT; mkdir -p $O/g0 $O/g1
source .devcarry/bundle/env.sh
left() { echo $((${END:-548} - (SECONDS - T0))); }
run_t() { local d=$1 n=$2; shift 2; local s=$SECONDS; env "$@" > $O/$d/$n.log 2>&1; echo "| $n | rc $? | $(grep '^RESULT' $O/$d/$n.log | tail -1) | $((SECONDS-s)) s |" >> $O/$d/rows.md; grep -E "^FAIL|check failed|error|ERROR" $O/$d/$n.log | head -8 >> $O/$d/rows.md; }
cmp() { local d=$1; shift
    [ $(left) -lt 60 ] && return
    FLOWHN_CUDA=$FB/flowhn-cuda timeout $(( $(left) - 5 )) tools/bench_compare.sh --out $O/$d/torch --configs "$*" > $O/$d/torch.log 2>&1
    echo "### compare $d" >> $O/$d/rows.md; cat $O/$d/torch/bench_compare.md >> $O/$d/rows.md 2>/dev/null; }
bench() { local d=$1 tag=$2 c=$3 b=$4 t=$5; shift 5
    [ $(left) -lt 30 ] && return
    env "$@" timeout 80 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --batch $b --seq-len $t --steps 6 --warmup 2 --precision bf16 > $O/$d/bench-$tag-$c-$b-$t.log 2>&1
    echo "| $c B$b T$t | $tag | $(grep -oE 'graph=[0-9]|step_ms=[0-9.]+|tokens_per_s=[0-9.]+|mfu_bf16=[0-9.]+|peak_alloc_gib=[0-9.]+' $O/$d/bench-$tag-$c-$b-$t.log | tr '\n' ' ') $(grep -m1 -iE 'error|fail' $O/$d/bench-$tag-$c-$b-$t.log | cut -c1-150) |" >> $O/$d/rows.md; }
prof() { local d=$1 tag=$2 c=$3; shift 3
    [ $(left) -lt 40 ] && return
    env "$@" timeout 80 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --batch 8 --seq-len 1024 --steps 5 --warmup 2 --precision bf16 --profile > $O/$d/prof-$tag-$c.log 2>&1; }
(
  export CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=16
  run_t g0 test_cuda_model timeout 470 $FB/test_cuda_model
  bench g0 new mamba1-135m 8 1024; bench g0 v2 mamba1-135m 8 1024 FLOWHN_SCAN1_BWD=v2; bench g0 pair12 mamba1-135m 8 1024 FLOWHN_SCAN1_BWD=pair12
  bench g0 new flowhn-fac-1b 8 1024; bench g0 v2 flowhn-fac-1b 8 1024 FLOWHN_SCAN1_BWD=v2
  [ $(left) -gt 40 ] && run_t g0 racecheck_scan FLOWHN_TEST_QUICK=1 FLOWHN_TEST_ONLY=test_selective_scan timeout $(( $(left) - 5 )) compute-sanitizer --tool racecheck --error-exitcode 9 $FB/test_cuda
) &
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=16
  run_t g1 test_cuda timeout 300 $FB/test_cuda
  run_t g1 test_cuda_graph timeout 60 $FB/test_cuda_graph
  run_t g1 test_cuda_graph_streams FLOWHN_BRANCH_STREAMS=1 timeout 60 $FB/test_cuda_graph
  run_t g1 test_cuda_decode timeout 50 $FB/test_cuda_decode
  bench g1 new llama-gpt2small 8 1024; bench g1 gu0 llama-gpt2small 8 1024 FLOWHN_BF16_GU=0; bench g1 only0 llama-gpt2small 8 1024 FLOWHN_BF16_ONLY=0
  bench g1 new llama-135m 8 1024; bench g1 gu0 llama-135m 8 1024 FLOWHN_BF16_GU=0
  prof g1 new llama-gpt2small
  cmp g1 configs/llama-gpt2small.json
) &
wait
cd $O; { echo "## GPU0"; cat g0/rows.md; echo "## GPU1"; cat g1/rows.md; } > report.md 2>/dev/null
for f in g*/prof-*.log; do echo "### $f"; grep -E "^\| *(linear|attention|swiglu|rmsnorm|add_rmsnorm|classifier|adamw|selective|all ops)" $f | head -30; done >> report.md 2>/dev/null
grep -h "bf16-only off vs off\|bf16-only on vs off\|gate|up D on vs off" g0/test_cuda_model.log | head -60 | cut -c1-160 >> report.md
cp g0/torch/bench_compare.log cmp-g0.log 2>/dev/null; cp g1/torch/bench_compare.log cmp-g1.log 2>/dev/null
tar czf logs.tgz g0 g1 2>/dev/null && rm -rf g0 g1; echo "total $((SECONDS-T0)) s" >> report.md; cat report.md
