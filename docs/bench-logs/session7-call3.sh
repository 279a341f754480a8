#!/usr/bin/env bash
# session 7 call 3 (two H200s). Bundle = int10: main (lt-tune, rope-attn, ssd-bwd, ssd-cbwd merged; test conditioning)
# + attn-pipe with RoPE ported (int9) + decode-pdl. GPU0: tests, old-switch tests, decode A/B, racecheck of the new
# attention. GPU1: attention A/B + profile, every architecture at 135M, PyTorch ratios.
set -uo pipefail
T0=$SECONDS; O=$OUT; mkdir -p $O/g0 $O/g1
source .devcarry/bundle/env.sh
left() { echo $((${END:-540} - (SECONDS - T0))); }
run_t() { local d=$1 n=$2; shift 2; local s=$SECONDS; env "$@" > $O/$d/$n.log 2>&1; echo "| $n | rc $? | $(grep '^RESULT' $O/$d/$n.log | tail -1) | $((SECONDS-s)) s |" >> $O/$d/rows.md; grep -E "^FAIL|check failed" $O/$d/$n.log | head -8 >> $O/$d/rows.md; }
bench() { local d=$1 tag=$2 c=$3 b=$4; shift 4
    [ $(left) -lt 30 ] && return
    env "$@" timeout 80 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --batch $b --seq-len 1024 --steps 6 --warmup 2 --precision bf16 > $O/$d/bench-$tag-$c-$b.log 2>&1
    echo "| $c B$b | $tag | $(grep -oE 'graph=[0-9]|step_ms=[0-9.]+|tokens_per_s=[0-9.]+|mfu_bf16=[0-9.]+|peak_alloc_gib=[0-9.]+' $O/$d/bench-$tag-$c-$b.log | tr '\n' ' ') $(grep -m1 -iE 'error|fail' $O/$d/bench-$tag-$c-$b.log | cut -c1-150) |" >> $O/$d/rows.md; }
dec() { local d=$1 tag=$2 c=$3 b=$4; shift 4; [ $(left) -lt 25 ] && return
    env "$@" timeout 60 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --decode --batch $b --prompt-len 64 --steps 128 --precision bf16 > $O/$d/dec-$tag-$c-$b.log 2>&1
    echo "| decode $c B$b | $tag | $(grep -oE 'step_ms=[0-9.]+ tokens_per_s=[0-9.]+|bound_fraction=[0-9.]+' $O/$d/dec-$tag-$c-$b.log | tr '\n' ' ') $(grep -m1 -iE 'error|fail' $O/$d/dec-$tag-$c-$b.log | cut -c1-150) |" >> $O/$d/rows.md; }
prof() { local d=$1 tag=$2 c=$3 n=$4; shift 4; [ $(left) -lt 40 ] && return
    env "$@" timeout 90 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --batch 8 --seq-len 1024 --steps 5 --warmup 2 --precision bf16 --profile > $O/$d/prof-$tag-$c.log 2>&1
    echo "### profile $c $tag" >> $O/$d/rows.md; grep -E "^\| " $O/$d/prof-$tag-$c.log | head -$n >> $O/$d/rows.md; }
(
  export CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=16
  run_t g0 test_cuda timeout 200 $FB/test_cuda
  run_t g0 test_cuda_old FLOWHN_ATTN_KERNEL=old FLOWHN_SSD_BWD=old FLOWHN_SSD_CBWD=old FLOWHN_TEST_ONLY=test_attention,test_attention_bf16,test_attention_rope,test_ssd,test_ssd_tc,test_gated_rmsnorm,test_rmsnorm,test_decode_fused timeout 120 $FB/test_cuda
  run_t g0 test_cuda_model timeout 220 $FB/test_cuda_model
  run_t g0 test_cuda_graph timeout 100 $FB/test_cuda_graph
  run_t g0 test_cuda_decode timeout 100 $FB/test_cuda_decode
  run_t g0 test_cuda_decode_pdl0 FLOWHN_PDL=0 timeout 100 $FB/test_cuda_decode
  for c in llama-135m flowhn-fac-135m mamba2-135m llama-1b mamba2-1b; do dec g0 pdl $c 1; dec g0 pdl0 $c 1 FLOWHN_PDL=0; done
  [ $(left) -gt 60 ] && RACECHECK_CASES=test_attention_bf16,test_attention_rope RACECHECK_TIMEOUT=$(( ($(left) - 20) / 2 )) \
     timeout $(( $(left) - 10 )) tools/gpu/racecheck_cases.sh $FB/test_cuda $O/g0/race >> $O/g0/rows.md 2>&1
) &
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=16
  bench g1 all llama-gpt2small 8; bench g1 attnold llama-gpt2small 8 FLOWHN_ATTN_KERNEL=old
  bench g1 all llama-1b 8; bench g1 all flowhn-fac-1b 8; bench g1 all mamba2-gpt2small 8
  prof g1 all llama-gpt2small 14
  timeout 170 tools/bench_all.sh --bin $FB/flowhn-cuda --out $O/g1/b135 --sizes 135m > $O/g1/b135.log 2>&1
  cat $O/g1/b135/bench_all.md >> $O/g1/rows.md 2>/dev/null
  mkdir -p $O/g1/torch
  [ $(left) -gt 80 ] && FLOWHN_CUDA=$FB/flowhn-cuda timeout $(( $(left) - 10 )) tools/bench_compare.sh --out $O/g1/torch --configs \
    "configs/llama-gpt2small.json configs/mamba2-gpt2small.json configs/llama-135m.json configs/mamba2-135m.json" > $O/g1/torch.log 2>&1
  grep -h "^BENCH\|^TORCHBENCH" $O/g1/torch.log | grep -oE '^[A-Z]+|config=[^ ]+|graph=[0-9]|step_ms=[0-9.]+' | paste -sd' ' | sed 's/ BENCH/\nBENCH/g; s/ TORCHBENCH/\nTORCHBENCH/g' >> $O/g1/rows.md
) &
wait
cd $O; { echo "## GPU0"; cat g0/rows.md; echo "## GPU1"; cat g1/rows.md; } > report.md 2>/dev/null
tar czf logs.tgz g0 g1 && rm -rf g0 g1; echo "total $((SECONDS-T0)) s" >> report.md; cat report.md
