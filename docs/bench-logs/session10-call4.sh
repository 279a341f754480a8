#!/usr/bin/env bash
# session 10 call 4 (two H200s). Bundle = integ10b: call 3's (main + bf16io + scan1ilp) + the test fixes
# (test_bf16_only_dqkv's CPU dW; test_cuda_graph's bf16 gate|up D pass) + ssdsbwd (SSD state backward in bf16
# tiles; FLOWHN_SSD_SBWD=old). GPU0: test_cuda, graph tests, the Mamba-2 A/B. GPU1: test_cuda_model, PyTorch pairs.
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
  run_t g0 test_cuda timeout 260 $FB/test_cuda
  run_t g0 test_cuda_graph timeout 80 $FB/test_cuda_graph
  run_t g0 test_cuda_graph_streams FLOWHN_BRANCH_STREAMS=1 timeout 80 $FB/test_cuda_graph
  bench g0 new mamba2-gpt2small 8 1024; bench g0 sbwdold mamba2-gpt2small 8 1024 FLOWHN_SSD_SBWD=old
  bench g0 new mamba2-135m 8 1024; bench g0 sbwdold mamba2-135m 8 1024 FLOWHN_SSD_SBWD=old
  prof g0 new mamba2-gpt2small
) &
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=16
  run_t g1 test_cuda_model timeout 300 $FB/test_cuda_model
  cmp g1 configs/llama-135m.json configs/mamba2-gpt2small.json
) &
wait
cd $O; { echo "## GPU0"; cat g0/rows.md; echo "## GPU1"; cat g1/rows.md; } > report.md 2>/dev/null
for f in g*/prof-*.log; do echo "### $f"; grep -E "^\| *(linear|ssd|conv|gated|classifier|adamw|all ops)" $f | head -30; done >> report.md 2>/dev/null
grep -h "ssd-sbwd\|sbwd" g0/test_cuda.log | head -12 | cut -c1-200 >> report.md
cp g1/torch/bench_compare.log cmp-g1.log 2>/dev/null
tar czf logs.tgz g0 g1 2>/dev/null && rm -rf g0 g1; echo "total $((SECONDS-T0)) s" >> report.md; cat report.md
