#!/usr/bin/env bash
# session 9 call 4 (two H200s). Bundle = final main c269b59 (call 3's bundle without xent-1pass). GPU0: test_cuda on
# it, then jamba-135m against PyTorch. GPU1: shm-135m against PyTorch, then the FlowHN / LLaMA ratio rows at 350M
# and 1B in one run (B 8, T 1024).
set -uo pipefail
T0=$SECONDS; O=$OUT; mkdir -p $O/g0 $O/g1
source .devcarry/bundle/env.sh
left() { echo $((${END:-318} - (SECONDS - T0))); }
run_t() { local d=$1 n=$2; shift 2; local s=$SECONDS; env "$@" > $O/$d/$n.log 2>&1; echo "| $n | rc $? | $(grep '^RESULT' $O/$d/$n.log | tail -1) | $((SECONDS-s)) s |" >> $O/$d/rows.md; grep -E "^FAIL|check failed" $O/$d/$n.log | head -8 >> $O/$d/rows.md; }
bench() { local d=$1 tag=$2 c=$3 b=$4 t=$5; shift 5
    [ $(left) -lt 45 ] && return
    env "$@" timeout 60 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --batch $b --seq-len $t --steps 5 --warmup 2 --precision bf16 > $O/$d/bench-$tag-$c-$b-$t.log 2>&1
    echo "| $c B$b T$t | $tag | $(grep -oE 'graph=[0-9]|step_ms=[0-9.]+|tokens_per_s=[0-9.]+|mfu_bf16=[0-9.]+|peak_alloc_gib=[0-9.]+' $O/$d/bench-$tag-$c-$b-$t.log | tr '\n' ' ') $(grep -m1 -iE 'error|fail' $O/$d/bench-$tag-$c-$b-$t.log | cut -c1-150) |" >> $O/$d/rows.md; }
cmp() { local d=$1; shift
    FLOWHN_CUDA=$FB/flowhn-cuda timeout $(( $(left) - 5 )) tools/bench_compare.sh --out $O/$d/torch --steps 8 --warmup 2 --configs "$*" > $O/$d/torch.log 2>&1
    grep -h "^BENCH\|^TORCHBENCH" $O/$d/torch/bench_compare.log | grep -oE '^[A-Z]+|config=[^ ]+|graph=[0-9]|step_ms=[0-9.]+|tokens_per_s=[0-9.]+|compile_s=[0-9.]+' | paste -sd' ' | sed 's/ BENCH/\nBENCH/g; s/ TORCHBENCH/\nTORCHBENCH/g' >> $O/$d/rows.md
    cp $O/$d/torch/bench_compare.log $O/cmp-$d.log; }
(
  export CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=16
  run_t g0 test_cuda timeout 170 $FB/test_cuda
  cmp g0 configs/jamba-135m.json
) &
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=16
  cmp g1 configs/shm-135m.json
  for c in llama-350m flowhn-fac-350m flowhn-nosplit-350m llama-1b flowhn-fac-1b flowhn-nosplit-1b; do bench g1 main $c 8 1024; done
) &
wait
cd $O; { echo "## GPU0"; cat g0/rows.md; echo "## GPU1"; cat g1/rows.md; } > report.md 2>/dev/null
tar czf logs.tgz g0 g1 2>/dev/null && rm -rf g0 g1; echo "total $((SECONDS-T0)) s" >> report.md; cat report.md
