#!/usr/bin/env bash
# session 12 call 4 (two H200s). Bundle = integ12b after reverting sumsq and ssdtrans: main 8898eca + dzxd16,
# llamapass, scan1b.
# GPU0: test_cuda (whole, both passes), graph tests both ways, profiles for llamapass's pieces (FLOWHN_CLS_SMEM=0,
#       FLOWHN_SWIGLU_V8=0, FLOWHN_DW_FINISH=0).
# GPU1: PyTorch pairs (llama-gpt2small, mamba2-gpt2small, flowhn-fac-135m), then rows.
set -uo pipefail
T0=$SECONDS; O=$OUT; mkdir -p $O/g0 $O/g1
source .devcarry/bundle/env.sh
left() { echo $((${END:-470} - (SECONDS - T0))); }
run_t() { local d=$1 n=$2; shift 2; local s=$SECONDS; env "$@" > $O/$d/$n.log 2>&1; echo "| $n | rc $? | $(grep '^RESULT' $O/$d/$n.log | tail -1) | $((SECONDS-s)) s |" >> $O/$d/rows.md; grep -E "^FAIL|check failed|error|ERROR|table is full" $O/$d/$n.log | head -8 | cut -c1-300 >> $O/$d/rows.md; }
bench() { local d=$1 tag=$2 c=$3 b=$4 t=$5; shift 5
    [ $(left) -lt 35 ] && return
    env "$@" timeout 80 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --batch $b --seq-len $t --steps 6 --warmup 2 --precision bf16 > $O/$d/bench-$tag-$c-$b-$t.log 2>&1
    echo "| $c B$b T$t | $tag | $(grep -oE 'graph=[0-9]|step_ms=[0-9.]+|tokens_per_s=[0-9.]+|mfu_bf16=[0-9.]+|peak_alloc_gib=[0-9.]+' $O/$d/bench-$tag-$c-$b-$t.log | tr '\n' ' ') $(grep -m1 -iE 'error|fail' $O/$d/bench-$tag-$c-$b-$t.log | cut -c1-150) |" >> $O/$d/rows.md; }
prof() { local d=$1 tag=$2 c=$3; shift 3
    [ $(left) -lt 35 ] && return
    env "$@" timeout 60 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --batch 8 --seq-len 1024 --steps 5 --warmup 2 --precision bf16 --profile > $O/$d/prof-$tag-$c.log 2>&1
    echo "### profile $tag $c" >> $O/$d/rows.md; grep -E "^\| (classifier|swiglu_packed|rmsnorm_bwd|all ops)|step_ms" $O/$d/prof-$tag-$c.log | head -8 | cut -c1-160 >> $O/$d/rows.md; }
cmp() { local d=$1; shift
    [ $(left) -lt 60 ] && return
    FLOWHN_CUDA=$FB/flowhn-cuda timeout $(( $(left) - 5 )) tools/bench_compare.sh --out $O/$d/torch --configs "$*" > $O/$d/torch.log 2>&1
    echo "### compare $d" >> $O/$d/rows.md; cat $O/$d/torch/bench_compare.md >> $O/$d/rows.md 2>/dev/null
    grep -h "^BENCH\|^TORCHBENCH" $O/$d/torch/bench_compare.log | grep -oE '^[A-Z]+|config=[^ ]+|step_ms=[0-9.]+|tokens_per_s=[0-9.]+|compile_s=[0-9.]+' | paste -sd' ' | sed 's/ BENCH/\nBENCH/g; s/ TORCHBENCH/\nTORCHBENCH/g' >> $O/$d/rows.md; }
(
  export CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=16
  run_t g0 test_cuda FLOWHN_TEST_REQUIRE_CUDNN=1 timeout 320 $FB/test_cuda
  run_t g0 test_cuda_graph timeout 60 $FB/test_cuda_graph
  run_t g0 test_cuda_graph_streams FLOWHN_BRANCH_STREAMS=1 timeout 60 $FB/test_cuda_graph
  prof g0 new llama-gpt2small; prof g0 cls0 llama-gpt2small FLOWHN_CLS_SMEM=0
  prof g0 v80 llama-gpt2small FLOWHN_SWIGLU_V8=0; prof g0 dwf0 llama-gpt2small FLOWHN_DW_FINISH=0
) &
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=16
  cmp g1 configs/llama-gpt2small.json configs/mamba2-gpt2small.json configs/flowhn-fac-135m.json
  bench g1 new llama-135m 8 1024; bench g1 new mamba2-135m 8 1024; bench g1 new mamba1-135m 8 1024
  bench g1 new flowhn-fac-1b 8 1024; bench g1 new llama-1b 8 1024
) &
wait
cd $O; { echo "## GPU0"; cat g0/rows.md; echo "## GPU1"; cat g1/rows.md; } > report.md 2>/dev/null
cp g1/torch/bench_compare.log cmp-g1.log 2>/dev/null; cp g1/torch/*.png . 2>/dev/null
tar czf logs.tgz g0 g1 2>/dev/null && rm -rf g0 g1; echo "total $((SECONDS-T0)) s" >> report.md; cat report.md
