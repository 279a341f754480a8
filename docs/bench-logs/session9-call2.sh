#!/usr/bin/env bash
# session 9 call 2 (two H200s). Bundle = main ff59f34 (cls-bf16 merged). flowhn against its PyTorch reference
# (torch.compile, SDPA, chunked scans), every architecture, the same run: 6 configs a GPU. GPU1 first: attention
# cost at hd 24 (cuDNN / ours at HD 32) vs hd 32 and 64 (llama-135m with 24 / 12 heads).
set -uo pipefail
T0=$SECONDS; O=$OUT; mkdir -p $O/g0 $O/g1
source .devcarry/bundle/env.sh
left() { echo $((${END:-548} - (SECONDS - T0))); }
prof() { local d=$1 tag=$2 cfg=$3 n=$4; shift 4; [ $(left) -lt 40 ] && return
    env "$@" timeout 60 $FB/flowhn-cuda bench --config $cfg --device cuda --batch 8 --seq-len 1024 --steps 5 --warmup 2 --precision bf16 --profile > $O/$d/prof-$tag.log 2>&1
    echo "### profile $tag ($cfg $*)" >> $O/$d/rows.md; grep -E "^\| (op|attention|all ops)|^BENCH|step_ms" $O/$d/prof-$tag.log | head -$n | cut -c1-200 >> $O/$d/rows.md; }
cmp() { local d=$1; shift
    FLOWHN_CUDA=$FB/flowhn-cuda timeout $(( $(left) - 5 )) tools/bench_compare.sh --out $O/$d/torch --configs "$*" > $O/$d/torch.log 2>&1
    echo "### compare $d" >> $O/$d/rows.md; cat $O/$d/torch/bench_compare.md >> $O/$d/rows.md 2>/dev/null
    grep -h "^BENCH\|^TORCHBENCH" $O/$d/torch/bench_compare.log | grep -oE '^[A-Z]+|config=[^ ]+|graph=[0-9]|step_ms=[0-9.]+|tokens_per_s=[0-9.]+|compile_s=[0-9.]+' | paste -sd' ' | sed 's/ BENCH/\nBENCH/g; s/ TORCHBENCH/\nTORCHBENCH/g' >> $O/$d/rows.md; }
(
  export CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=16
  cmp g0 configs/llama-gpt2small.json configs/llama-135m.json configs/mamba2-135m.json configs/mamba1-135m.json configs/hymba-135m.json configs/jamba-135m.json
) &
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=16
  sed 's/"num_attention_heads": 32/"num_attention_heads": 24/' configs/llama-135m.json > /tmp/llama-135m-hd32.json
  sed 's/"num_attention_heads": 32/"num_attention_heads": 12/; s/"num_key_value_heads": 8/"num_key_value_heads": 4/' configs/llama-135m.json > /tmp/llama-135m-hd64.json
  prof g1 hd24-cudnn configs/llama-135m.json 8
  prof g1 hd24-ours configs/llama-135m.json 8 FLOWHN_ATTN_CUDNN=0
  prof g1 hd32-cudnn /tmp/llama-135m-hd32.json 8
  prof g1 hd64-cudnn /tmp/llama-135m-hd64.json 8
  cmp g1 configs/mamba2-gpt2small.json configs/flowhn-fac-135m.json configs/flowhn-fa-135m.json configs/flowhn-ae-135m.json configs/flowhn-nosplit-135m.json configs/shm-135m.json
) &
wait
cd $O; { echo "## GPU0"; cat g0/rows.md; echo "## GPU1"; cat g1/rows.md; } > report.md 2>/dev/null
cp g0/torch/bench_compare.log cmp-g0.log 2>/dev/null; cp g1/torch/bench_compare.log cmp-g1.log 2>/dev/null
tar czf logs.tgz g0 g1 2>/dev/null && rm -rf g0 g1; echo "total $((SECONDS-T0)) s" >> report.md; cat report.md
