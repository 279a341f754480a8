#!/usr/bin/env bash
# session 13 call 2 (two H200s). Bundle = integ13b: main 06dcb29 (llamad16, gradvec) + attnorm16, resid16, vkeep.
# GPU0: the new tests (test_cuda subset), test_cuda_model (whole), graph tests both ways, then test_cuda whole.
# GPU1: op profiles llama-gpt2small as is / FLOWHN_BF16_DNORM_ATT=0 / FLOWHN_BF16_RESID=0 / FLOWHN_CUDNN_VKEEP=0 /
#       all three off, step rows, llama-135m; PyTorch pairs llama-gpt2small, llama-135m, then jamba-135m, shm-135m.
set -uo pipefail
T0=$SECONDS; O=$OUT; mkdir -p $O/g0 $O/g1
source .devcarry/bundle/env.sh
left() { echo $((${END:-480} - (SECONDS - T0))); }
run_t() { local d=$1 n=$2; shift 2; local s=$SECONDS; env "$@" > $O/$d/$n.log 2>&1; echo "| $n | rc $? | $(grep '^RESULT' $O/$d/$n.log | tail -1) | $((SECONDS-s)) s |" >> $O/$d/rows.md; grep -E "^FAIL|check failed|error|ERROR|table is full" $O/$d/$n.log | head -8 | cut -c1-300 >> $O/$d/rows.md; }
bench() { local d=$1 tag=$2 c=$3 b=$4 t=$5; shift 5
    [ $(left) -lt 35 ] && return
    env "$@" timeout 80 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --batch $b --seq-len $t --steps 6 --warmup 2 --precision bf16 > $O/$d/bench-$tag-$c-$b-$t.log 2>&1
    echo "| $c B$b T$t | $tag | $(grep -oE 'graph=[0-9]|step_ms=[0-9.]+|tokens_per_s=[0-9.]+|mfu_bf16=[0-9.]+|peak_alloc_gib=[0-9.]+' $O/$d/bench-$tag-$c-$b-$t.log | tr '\n' ' ') $(grep -m1 -iE 'error|fail' $O/$d/bench-$tag-$c-$b-$t.log | cut -c1-150) |" >> $O/$d/rows.md; }
prof() { local d=$1 tag=$2 c=$3; shift 3
    [ $(left) -lt 35 ] && return
    env "$@" timeout 60 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --batch 8 --seq-len 1024 --steps 5 --warmup 2 --precision bf16 --profile > $O/$d/prof-$tag-$c.log 2>&1
    echo "### profile $tag $c" >> $O/$d/rows.md; grep -E "^\| (classifier|swiglu_packed|rmsnorm_bwd|add_rmsnorm_fwd|linear_bwd|linear_fwd|attention_rope_bwd|attention_rope_fwd|zero|all ops)|step_ms" $O/$d/prof-$tag-$c.log | head -12 | cut -c1-160 >> $O/$d/rows.md; }
cmp() { local d=$1; shift
    [ $(left) -lt 60 ] && return
    FLOWHN_CUDA=$FB/flowhn-cuda timeout $(( $(left) - 5 )) tools/bench_compare.sh --out $O/$d/torch --configs "$*" > $O/$d/torch.log 2>&1
    echo "### compare $d" >> $O/$d/rows.md; cat $O/$d/torch/bench_compare.md >> $O/$d/rows.md 2>/dev/null
    grep -h "^BENCH\|^TORCHBENCH" $O/$d/torch/bench_compare.log | grep -oE '^[A-Z]+|config=[^ ]+|step_ms=[0-9.]+|tokens_per_s=[0-9.]+|compile_s=[0-9.]+' | paste -sd' ' | sed 's/ BENCH/\nBENCH/g; s/ TORCHBENCH/\nTORCHBENCH/g' >> $O/$d/rows.md; }
(
  export CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=16
  run_t g0 test_cuda_new FLOWHN_TEST_REQUIRE_CUDNN=1 FLOWHN_TEST_ONLY=test_bf16_dnorm,test_bf16_dnorm_att,test_rmsnorm,test_bf16_resid,test_bf16_gu,test_bf16_qkv,test_bf16_only_dqkv,test_attention_cudnn,test_rope_cache timeout 200 $FB/test_cuda
  grep -E "bf16_dnorm|bf16_resid|vkeep|bitwise|declined" $O/g0/test_cuda_new.log | head -40 | cut -c1-220 >> $O/g0/rows.md
  run_t g0 test_cuda_model timeout 360 $FB/test_cuda_model
  grep -E "attention norm d out|bf16 resid|vkeep" $O/g0/test_cuda_model.log | head -30 | cut -c1-220 >> $O/g0/rows.md
  run_t g0 test_cuda_graph timeout 60 $FB/test_cuda_graph
  run_t g0 test_cuda_graph_streams FLOWHN_BRANCH_STREAMS=1 timeout 60 $FB/test_cuda_graph
  [ $(left) -gt 120 ] && run_t g0 test_cuda_all FLOWHN_TEST_REQUIRE_CUDNN=1 timeout $(( $(left) - 10 )) $FB/test_cuda
) &
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=16
  prof g1 new llama-gpt2small; prof g1 att0 llama-gpt2small FLOWHN_BF16_DNORM_ATT=0; prof g1 resid0 llama-gpt2small FLOWHN_BF16_RESID=0
  prof g1 vkeep0 llama-gpt2small FLOWHN_CUDNN_VKEEP=0; prof g1 off3 llama-gpt2small FLOWHN_BF16_DNORM_ATT=0 FLOWHN_BF16_RESID=0 FLOWHN_CUDNN_VKEEP=0
  bench g1 new llama-gpt2small 8 1024; bench g1 off3 llama-gpt2small 8 1024 FLOWHN_BF16_DNORM_ATT=0 FLOWHN_BF16_RESID=0 FLOWHN_CUDNN_VKEEP=0
  bench g1 new2 llama-gpt2small 8 1024
  prof g1 new llama-135m; prof g1 vkeep0 llama-135m FLOWHN_CUDNN_VKEEP=0; prof g1 off3 llama-135m FLOWHN_BF16_DNORM_ATT=0 FLOWHN_BF16_RESID=0 FLOWHN_CUDNN_VKEEP=0
  cmp g1 configs/llama-gpt2small.json configs/llama-135m.json configs/jamba-135m.json configs/shm-135m.json
) &
wait
cd $O; { echo "## GPU0"; cat g0/rows.md; echo "## GPU1"; cat g1/rows.md; } > report.md 2>/dev/null
cp g1/torch/bench_compare.log cmp-g1.log 2>/dev/null; cp g1/prof-new-llama-gpt2small.log . 2>/dev/null
tar czf logs.tgz g0 g1 2>/dev/null && rm -rf g0 g1; echo "total $((SECONDS-T0)) s" >> report.md; cat report.md
