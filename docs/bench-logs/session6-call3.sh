#!/usr/bin/env bash
# session 6 call 3 (two H200s), main with the shadow-capacity fix, the test conditioning, the conv window helper
# (and ssd-dedup if merged). GPU0: tests, then the A/B benches and decode. GPU1: every architecture at 135M, then PyTorch.
set -uo pipefail
T0=$SECONDS; O=$OUT; mkdir -p $O/g0 $O/g1
source .devcarry/bundle/env.sh
left() { echo $((${END:-465} - (SECONDS - T0))); }
run_t() { local d=$1 n=$2; shift 2; local s=$SECONDS; env "$@" > $O/$d/$n.log 2>&1; echo "| $n | rc $? | $(grep '^RESULT' $O/$d/$n.log | tail -1) | $((SECONDS-s)) s |" >> $O/$d/rows.md; grep -E "^FAIL|check failed" $O/$d/$n.log | head -8 >> $O/$d/rows.md; }
bench() { local d=$1 tag=$2 c=$3 b=$4; shift 4
    [ $(left) -lt 30 ] && return
    env "$@" timeout 80 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --batch $b --seq-len 1024 --steps 6 --warmup 2 --precision bf16 > $O/$d/bench-$tag-$c-$b.log 2>&1
    echo "| $c B$b | $tag | $(grep -oE 'graph=[0-9]|step_ms=[0-9.]+|tokens_per_s=[0-9.]+|mfu_bf16=[0-9.]+|peak_alloc_gib=[0-9.]+' $O/$d/bench-$tag-$c-$b.log | tr '\n' ' ') |" >> $O/$d/rows.md; }
dec() { local d=$1 tag=$2 c=$3 b=$4; shift 4; [ $(left) -lt 25 ] && return
    env "$@" timeout 60 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --decode --batch $b --prompt-len 64 --steps 128 --precision bf16 > $O/$d/dec-$tag-$c-$b.log 2>&1
    echo "| decode $c B$b | $tag | $(grep -oE 'step_ms=[0-9.]+ tokens_per_s=[0-9.]+|bound_fraction=[0-9.]+' $O/$d/dec-$tag-$c-$b.log | tr '\n' ' ') |" >> $O/$d/rows.md; }
(
  export CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=16
  run_t g0 test_cuda timeout 150 $FB/test_cuda
  run_t g0 test_cuda_model timeout 200 $FB/test_cuda_model
  run_t g0 test_cuda_graph timeout 100 $FB/test_cuda_graph
  run_t g0 test_cuda_decode timeout 100 $FB/test_cuda_decode
  for c in llama-gpt2small llama-1b flowhn-fac-135m; do bench g0 shadow $c 8; bench g0 noshadow $c 8 FLOWHN_BF16_SHADOW=0; done
  bench g0 main mamba2-gpt2small 8; bench g0 main flowhn-fac-1b 8
  for c in mamba2-135m mamba2-1b flowhn-fac-135m llama-1b; do dec g0 main $c 1; done
  bench g0 main flowhn-fac-1b 32
) &
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=16
  sleep 2
  timeout 200 tools/bench_all.sh --bin $FB/flowhn-cuda --out $O/g1/b135 --sizes 135m > $O/g1/b135.log 2>&1
  cat $O/g1/b135/bench_all.md >> $O/g1/rows.md 2>/dev/null
  mkdir -p $O/g1/torch
  [ $(left) -gt 80 ] && FLOWHN_CUDA=$FB/flowhn-cuda timeout $(( $(left) - 10 )) tools/bench_compare.sh --out $O/g1/torch --configs \
    "configs/llama-gpt2small.json configs/llama-135m.json configs/flowhn-fac-135m.json configs/flowhn-nosplit-135m.json configs/mamba1-135m.json configs/hymba-135m.json configs/mamba2-135m.json" > $O/g1/torch.log 2>&1
  grep -h "^BENCH\|^TORCHBENCH" $O/g1/torch.log | grep -oE '^[A-Z]+|config=[^ ]+|graph=[0-9]|step_ms=[0-9.]+' | paste -sd' ' | sed 's/ BENCH/\nBENCH/g; s/ TORCHBENCH/\nTORCHBENCH/g' >> $O/g1/rows.md
) &
wait
cd $O; { echo "## GPU0"; cat g0/rows.md; echo "## GPU1"; cat g1/rows.md; } > report.md 2>/dev/null
tar czf logs.tgz g0 g1 && rm -rf g0 g1; echo "total $((SECONDS-T0)) s" >> report.md; cat report.md
