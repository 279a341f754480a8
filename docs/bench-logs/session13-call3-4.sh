#!/usr/bin/env bash
# session 13 calls 3 and 4 (two H200s of one host each, one job a GPU; x4 was not lent). Bundle = integ13c: main +
# attnorm16, resid16, vkeep (with call 2's test fix) + zeroruns (FLOWHN_ZERO_RUNS, FLOWHN_LAZY_HEAD).
# PHASE=A (call 3): GPU0 zeroruns' tests, test_cuda_model, graph tests both ways, zeroruns' A/B profiles and steps;
#                   GPU1 test_cuda (whole), PyTorch pairs llama-gpt2small, mamba2-gpt2small, flowhn-fac-135m, decode 1B.
# PHASE=B (call 4, the last of the budget; bundle + call 3's two test fixes): GPU0 the fixed tests, test_cuda_model
#                   for LLaMA, the PyTorch pair mamba2-135m, 350M rows. GPU1 the PyTorch pair flowhn-fac-135m, 1B rows,
#                   llama-135m, decode at 1B.
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
    echo "### profile $tag $c" >> $O/$d/rows.md; grep -E "^\| (classifier|zero|zero_runs|linear_bwd|linear_fwd|attention_rope_bwd|attention_rope_fwd|all ops)|step_ms" $O/$d/prof-$tag-$c.log | head -12 | cut -c1-160 >> $O/$d/rows.md; }
cmp() { local d=$1; shift
    [ $(left) -lt 60 ] && return
    FLOWHN_CUDA=$FB/flowhn-cuda timeout $(( $(left) - 5 )) tools/bench_compare.sh --out $O/$d/torch --configs "$*" > $O/$d/torch.log 2>&1
    echo "### compare $d" >> $O/$d/rows.md; cat $O/$d/torch/bench_compare.md >> $O/$d/rows.md 2>/dev/null
    grep -h "^BENCH\|^TORCHBENCH" $O/$d/torch/bench_compare.log | grep -oE '^[A-Z]+|config=[^ ]+|step_ms=[0-9.]+|tokens_per_s=[0-9.]+|compile_s=[0-9.]+' | paste -sd' ' | sed 's/ BENCH/\nBENCH/g; s/ TORCHBENCH/\nTORCHBENCH/g' >> $O/$d/rows.md; }
dec() { local d=$1 tag=$2 c=$3 b=$4; shift 4
    [ $(left) -lt 25 ] && return
    env "$@" timeout 60 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --decode --batch $b --prompt-len 64 --steps 128 --precision bf16 > $O/$d/dec-$tag-$c-$b.log 2>&1
    echo "| decode $c B$b | $tag | $(grep -oE 'graph=[0-9]|step_ms=[0-9.]+|tokens_per_s=[0-9.]+|bound_fraction=[0-9.]+|prefill_batched_tokens_per_s=[0-9.]+|bound_ms=[0-9.]+' $O/$d/dec-$tag-$c-$b.log | tr '\n' ' ') $(grep -m1 -iE 'error|fail' $O/$d/dec-$tag-$c-$b.log | cut -c1-150) |" >> $O/$d/rows.md; }
sweep() { local d=$1 tag=$2; shift 2
    [ $(left) -lt 40 ] && return
    timeout $(( $(left) - 5 )) tools/bench_all.sh --bin $FB/flowhn-cuda --out $O/$d/all-$tag "$@" > $O/$d/all-$tag.log 2>&1
    echo "### sweep $tag: $*" >> $O/$d/rows.md; cat $O/$d/all-$tag/bench_all.md >> $O/$d/rows.md 2>/dev/null
    grep -h "^BENCH" $O/$d/all-$tag/bench_all.log | grep -oE 'config=[^ ]+|B=[0-9]+|T=[0-9]+|step_ms=[0-9.]+|tokens_per_s=[0-9.]+|mfu_bf16=[0-9.]+|peak_alloc_gib=[0-9.]+' | paste -sd' ' | sed 's/ config=/\nconfig=/g' >> $O/$d/rows.md; }
if [ "${PHASE:-A}" = A ]; then
(
  export CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=16
  run_t g0 test_cuda_zero FLOWHN_TEST_ONLY=test_zero_runs,test_classifier,test_classifier_fp32 timeout 100 $FB/test_cuda
  grep -E "zero_runs:" $O/g0/test_cuda_zero.log | head -2 | cut -c1-220 >> $O/g0/rows.md
  run_t g0 test_cuda_model timeout 330 $FB/test_cuda_model
  grep -E "zero_runs|vkeep on vs off" $O/g0/test_cuda_model.log | head -8 | cut -c1-220 >> $O/g0/rows.md
  run_t g0 test_cuda_graph timeout 60 $FB/test_cuda_graph
  run_t g0 test_cuda_graph_streams FLOWHN_BRANCH_STREAMS=1 timeout 60 $FB/test_cuda_graph
  prof g0 new llama-gpt2small; prof g0 zr0 llama-gpt2small FLOWHN_ZERO_RUNS=0; prof g0 lh0 llama-gpt2small FLOWHN_LAZY_HEAD=0
  bench g0 new llama-gpt2small 8 1024; bench g0 zl0 llama-gpt2small 8 1024 FLOWHN_ZERO_RUNS=0 FLOWHN_LAZY_HEAD=0
) &
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=16
  run_t g1 test_cuda FLOWHN_TEST_REQUIRE_CUDNN=1 timeout 300 $FB/test_cuda
  cmp g1 configs/llama-gpt2small.json configs/mamba2-gpt2small.json configs/flowhn-fac-135m.json
  dec g1 new llama-1b 1; dec g1 new flowhn-fac-1b 1
) &
else
(
  export CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=16
  run_t g0 test_cuda_fix FLOWHN_TEST_ONLY=test_decode_fused,test_decode_fused_rc,test_zero_runs timeout 60 $FB/test_cuda
  run_t g0 test_cuda_model_llama FLOWHN_TEST_ARCH=llama timeout 120 $FB/test_cuda_model
  grep -E "zero_runs" $O/g0/test_cuda_model_llama.log | head -6 | cut -c1-200 >> $O/g0/rows.md
  cmp g0 configs/mamba2-135m.json
  bench g0 new llama-350m 8 1024; bench g0 new flowhn-fac-350m 8 1024
) &
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=16
  cmp g1 configs/flowhn-fac-135m.json
  bench g1 new flowhn-fac-1b 8 1024; bench g1 new llama-1b 8 1024; bench g1 new llama-135m 8 1024
  dec g1 new llama-1b 1; dec g1 new flowhn-fac-1b 1; dec g1 new llama-1b 64
) &
fi
wait
cd $O; { for g in 0 1; do echo "## GPU$g"; cat g$g/rows.md; done; } > report.md 2>/dev/null
for g in 0 1; do cp g$g/torch/bench_compare.log cmp-g$g.log 2>/dev/null; done
tar czf logs.tgz g0 g1 2>/dev/null && rm -rf g0 g1; echo "total $((SECONDS-T0)) s" >> report.md; cat report.md
