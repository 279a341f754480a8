#!/usr/bin/env bash
# session 8 call 1 (two H200s). Bundle = int1: main e68eb20 + pending ssd-cbwd2 + scan1 (0001-0003, split) + decode-pdl
# (0001-0004, pdl2) + branches cudnn-attn (cuDNN fused attention, FLOWHN_ATTN_CUDNN=0 off) and elem-llama (FLOWHN_ELEM=old). GPU0: tests (new defaults, old switches), decode tests. GPU1: SSD/scan A/Bs + profiles, ncu of the new
# chunk backward, decode A/B of the four PDL settings.
set -uo pipefail
T0=$SECONDS; O=$OUT; mkdir -p $O/g0 $O/g1
source .devcarry/bundle/env.sh
left() { echo $((${END:-520} - (SECONDS - T0))); }
run_t() { local d=$1 n=$2; shift 2; local s=$SECONDS; env "$@" > $O/$d/$n.log 2>&1; echo "| $n | rc $? | $(grep '^RESULT' $O/$d/$n.log | tail -1) | $((SECONDS-s)) s |" >> $O/$d/rows.md; grep -E "^FAIL|check failed" $O/$d/$n.log | head -8 >> $O/$d/rows.md; }
bench() { local d=$1 tag=$2 c=$3 b=$4 t=$5; shift 5
    [ $(left) -lt 30 ] && return
    env "$@" timeout 80 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --batch $b --seq-len $t --steps 6 --warmup 2 --precision bf16 > $O/$d/bench-$tag-$c-$b-$t.log 2>&1
    echo "| $c B$b T$t | $tag | $(grep -oE 'graph=[0-9]|step_ms=[0-9.]+|tokens_per_s=[0-9.]+|mfu_bf16=[0-9.]+|peak_alloc_gib=[0-9.]+' $O/$d/bench-$tag-$c-$b-$t.log | tr '\n' ' ') $(grep -m1 -iE 'error|fail' $O/$d/bench-$tag-$c-$b-$t.log | cut -c1-150) |" >> $O/$d/rows.md; }
dec() { local d=$1 tag=$2 c=$3 b=$4; shift 4; [ $(left) -lt 25 ] && return
    env "$@" timeout 60 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --decode --batch $b --prompt-len 64 --steps 128 --precision bf16 > $O/$d/dec-$tag-$c-$b.log 2>&1
    echo "| decode $c B$b | $tag | $(grep -oE 'step_ms=[0-9.]+ tokens_per_s=[0-9.]+|bound_fraction=[0-9.]+' $O/$d/dec-$tag-$c-$b.log | tr '\n' ' ') $(grep -m1 -iE 'error|fail' $O/$d/dec-$tag-$c-$b.log | cut -c1-150) |" >> $O/$d/rows.md; }
prof() { local d=$1 tag=$2 c=$3 n=$4; shift 4; [ $(left) -lt 40 ] && return
    env "$@" timeout 90 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --batch 8 --seq-len 1024 --steps 5 --warmup 2 --precision bf16 --profile > $O/$d/prof-$tag-$c.log 2>&1
    echo "### profile $c $tag" >> $O/$d/rows.md; grep -E "^\| " $O/$d/prof-$tag-$c.log | head -$n >> $O/$d/rows.md; }
(
  export CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=16
  run_t g0 test_cuda timeout 200 $FB/test_cuda
  run_t g0 test_cuda_graph timeout 60 $FB/test_cuda_graph
  run_t g0 test_cuda_decode timeout 60 $FB/test_cuda_decode
  run_t g0 test_cuda_model timeout $(( $(left) - 5 )) $FB/test_cuda_model
) &
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=16
  bench g1 new llama-gpt2small 8 1024; bench g1 conv0 llama-gpt2small 8 1024 FLOWHN_CUDNN_KEEP=0 FLOWHN_CUDNN_CONV=old
  bench g1 new mamba2-gpt2small 8 1024; bench g1 mma mamba2-gpt2small 8 1024 FLOWHN_SSD_CBWD=mma
  bench g1 new mamba1-135m 8 1024; bench g1 nosplit mamba1-135m 8 1024 FLOWHN_SCAN1_BWD=nosplit
  bench g1 new flowhn-fac-1b 8 1024; bench g1 nosplit flowhn-fac-1b 8 1024 FLOWHN_SCAN1_BWD=nosplit
  bench g1 new llama-1b 8 1024; bench g1 new flowhn-fac-135m 8 1024
  mkdir -p $O/g1/torch
  [ $(left) -gt 80 ] && FLOWHN_CUDA=$FB/flowhn-cuda timeout $(( $(left) - 10 )) tools/bench_compare.sh --out $O/g1/torch --configs \
    "configs/llama-gpt2small.json configs/mamba2-gpt2small.json configs/llama-135m.json configs/mamba2-135m.json" > $O/g1/torch.log 2>&1
  grep -h "^BENCH\|^TORCHBENCH" $O/g1/torch.log | grep -oE '^[A-Z]+|config=[^ ]+|graph=[0-9]|step_ms=[0-9.]+' | paste -sd' ' | sed 's/ BENCH/\nBENCH/g; s/ TORCHBENCH/\nTORCHBENCH/g' >> $O/g1/rows.md
) &
wait
cd $O; { echo "## GPU0"; cat g0/rows.md; echo "## GPU1"; cat g1/rows.md; } > report.md 2>/dev/null
tar czf logs.tgz g0 g1 && rm -rf g0 g1; echo "total $((SECONDS-T0)) s" >> report.md; cat report.md
