#!/usr/bin/env bash
# session 10 call 1 (two H200s). Bundle = integ10: main 91e4271 + pending fuse-proj (FLOWHN_FUSE_PROJ=0 the old
# path) + pending ssd-cbwd5 (FLOWHN_SSD_CBWD=bf4 the old V4). GPU0: every GPU test on the new defaults.
# GPU1: graph/decode tests, each change against its switch, flowhn-fac-1b at B16, memcheck of the new cases.
set -uo pipefail
T0=$SECONDS; O=$OUT; mkdir -p $O/g0 $O/g1
source .devcarry/bundle/env.sh
left() { echo $((${END:-548} - (SECONDS - T0))); }
run_t() { local d=$1 n=$2; shift 2; local s=$SECONDS; env "$@" > $O/$d/$n.log 2>&1; echo "| $n | rc $? | $(grep '^RESULT' $O/$d/$n.log | tail -1) | $((SECONDS-s)) s |" >> $O/$d/rows.md; grep -E "^FAIL|check failed|error|ERROR" $O/$d/$n.log | head -8 >> $O/$d/rows.md; }
bench() { local d=$1 tag=$2 c=$3 b=$4 t=$5; shift 5
    [ $(left) -lt 30 ] && return
    env "$@" timeout 80 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --batch $b --seq-len $t --steps 6 --warmup 2 --precision bf16 > $O/$d/bench-$tag-$c-$b-$t.log 2>&1
    echo "| $c B$b T$t | $tag | $(grep -oE 'graph=[0-9]|step_ms=[0-9.]+|tokens_per_s=[0-9.]+|mfu_bf16=[0-9.]+|peak_alloc_gib=[0-9.]+' $O/$d/bench-$tag-$c-$b-$t.log | tr '\n' ' ') $(grep -m1 -iE 'error|fail' $O/$d/bench-$tag-$c-$b-$t.log | cut -c1-150) |" >> $O/$d/rows.md; }
prof() { local d=$1 tag=$2 c=$3; shift 3
    [ $(left) -lt 40 ] && return
    env "$@" timeout 80 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --batch 8 --seq-len 1024 --steps 5 --warmup 2 --precision bf16 --profile > $O/$d/prof-$tag-$c.log 2>&1; }
(
  export CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=16
  run_t g0 test_cuda timeout 300 $FB/test_cuda
  run_t g0 test_cuda_model timeout $(( $(left) - 3 )) $FB/test_cuda_model
) &
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=16
  run_t g1 test_cuda_graph timeout 50 $FB/test_cuda_graph
  run_t g1 test_cuda_decode timeout 45 $FB/test_cuda_decode
  run_t g1 test_cuda_graph_streams FLOWHN_BRANCH_STREAMS=1 timeout 50 $FB/test_cuda_graph
  bench g1 new llama-gpt2small 8 1024; bench g1 fp0 llama-gpt2small 8 1024 FLOWHN_FUSE_PROJ=0
  bench g1 new llama-135m 8 1024; bench g1 fp0 llama-135m 8 1024 FLOWHN_FUSE_PROJ=0
  bench g1 new mamba2-gpt2small 8 1024; bench g1 bf4 mamba2-gpt2small 8 1024 FLOWHN_SSD_CBWD=bf4
  bench g1 new flowhn-fac-135m 8 1024; bench g1 fp0 flowhn-fac-135m 8 1024 FLOWHN_FUSE_PROJ=0
  bench g1 new mamba2-135m 8 1024; bench g1 bf4 mamba2-135m 8 1024 FLOWHN_SSD_CBWD=bf4
  bench g1 new flowhn-fac-1b 16 1024
  bench g1 new llama-1b 8 1024; bench g1 fp0 llama-1b 8 1024 FLOWHN_FUSE_PROJ=0
  prof g1 new llama-gpt2small; prof g1 fp0 llama-gpt2small FLOWHN_FUSE_PROJ=0
  [ $(left) -gt 60 ] && run_t g1 memcheck_new FLOWHN_TEST_ONLY=test_attention_strided,test_swiglu_packed,test_weights_copy_span timeout $(( $(left) - 10 )) compute-sanitizer --tool memcheck --error-exitcode 9 $FB/test_cuda
) &
wait
cd $O; { echo "## GPU0"; cat g0/rows.md; echo "## GPU1"; cat g1/rows.md; } > report.md 2>/dev/null
for f in g1/prof-*.log; do echo "### $f"; grep -E "^\| *(linear|attention|swiglu|rmsnorm|add_rmsnorm|classifier|adamw|rope|total)" $f | head -30; done >> report.md 2>/dev/null
tar czf logs.tgz g0 g1 2>/dev/null && rm -rf g0 g1; echo "total $((SECONDS-T0)) s" >> report.md; cat report.md
