#!/usr/bin/env bash
# session 11 call 2 (two H200s). Bundle = integ11b: main 3cfcc56 (bf16qkv merged) + fuse-inproj + attn-o16 + ssd-ldsm + conv-bwd.
# GPU0: test_cuda, graph + decode tests, the LLaMA A/Bs (FLOWHN_BF16_ATT_O=0; FLOWHN_BF16_ATT_DO=0), PyTorch pair mamba2-gpt2small.
# GPU1: test_cuda_model, the Mamba-2 A/Bs (FLOWHN_FUSE_INPROJ=0; FLOWHN_SSD_CBWD=bf4), mamba2 profile.
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
  run_t g0 test_cuda FLOWHN_TEST_REQUIRE_CUDNN=1 timeout 260 $FB/test_cuda
  run_t g0 test_cuda_graph timeout 80 $FB/test_cuda_graph
  run_t g0 test_cuda_graph_streams FLOWHN_BRANCH_STREAMS=1 timeout 80 $FB/test_cuda_graph
  run_t g0 test_cuda_decode timeout 60 $FB/test_cuda_decode
  bench g0 new llama-gpt2small 8 1024; bench g0 atto0 llama-gpt2small 8 1024 FLOWHN_BF16_ATT_O=0
  bench g0 attdo0 llama-gpt2small 8 1024 FLOWHN_BF16_ATT_DO=0; bench g0 new llama-gpt2small 8 1024
  bench g0 new mamba1-135m 8 1024; bench g0 ring0 mamba1-135m 8 1024 FLOWHN_CONV_RING=0
  cmp g0 configs/mamba2-gpt2small.json
) &
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=16
  run_t g1 test_cuda_model timeout 300 $FB/test_cuda_model
  bench g1 new mamba2-gpt2small 8 1024; bench g1 inproj0 mamba2-gpt2small 8 1024 FLOWHN_FUSE_INPROJ=0
  bench g1 bf4 mamba2-gpt2small 8 1024 FLOWHN_SSD_CBWD=bf4; bench g1 ring0 mamba2-gpt2small 8 1024 FLOWHN_CONV_RING=0
  bench g1 new mamba2-135m 8 1024; bench g1 inproj0 mamba2-135m 8 1024 FLOWHN_FUSE_INPROJ=0
  bench g1 bf4 mamba2-135m 8 1024 FLOWHN_SSD_CBWD=bf4
  prof g1 new mamba2-gpt2small
  bench g1 new mamba2-gpt2small 8 1024
) &
wait
cd $O; { echo "## GPU0"; cat g0/rows.md; echo "## GPU1"; cat g1/rows.md; } > report.md 2>/dev/null
for f in g*/prof-*.log; do echo "### $f"; grep -E "^\| *(linear|ssd|conv|gated|classifier|adamw|copy|all ops)" $f | head -30; done >> report.md 2>/dev/null
grep -hE "strided|att_o|bf16_att|ssd-bf |ring" g0/test_cuda.log | head -30 | cut -c1-200 >> report.md
grep -hE "FUSE_INPROJ|inproj|ATT_DO|att O|dO" g1/test_cuda_model.log | head -14 | cut -c1-200 >> report.md
cp g0/torch/bench_compare.log cmp-g0.log 2>/dev/null
tar czf logs.tgz g0 g1 2>/dev/null && rm -rf g0 g1; echo "total $((SECONDS-T0)) s" >> report.md; cat report.md
