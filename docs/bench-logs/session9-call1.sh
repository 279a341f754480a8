#!/usr/bin/env bash
# session 9 call 1 (two H200s). Bundle = s9int: main 1579954 + pending cls-bf16 (FLOWHN_CLS_BF16=0 = old path).
# GPU0: test_cuda (400 s), graph, decode tests; cls-bf16 A/B. GPU1: test_cuda_model; kernel times of llama-135m;
# op profile of flowhn-fac-1b; ncu (with source stall sampling) of the SSD chunk backward and the Mamba-1 scan backward.
set -uo pipefail
T0=$SECONDS; O=$OUT; mkdir -p $O/g0 $O/g1
source .devcarry/bundle/env.sh
left() { echo $((${END:-545} - (SECONDS - T0))); }
run_t() { local d=$1 n=$2; shift 2; local s=$SECONDS; env "$@" > $O/$d/$n.log 2>&1; echo "| $n | rc $? | $(grep '^RESULT' $O/$d/$n.log | tail -1) | $((SECONDS-s)) s |" >> $O/$d/rows.md; grep -E "^FAIL|check failed" $O/$d/$n.log | head -8 >> $O/$d/rows.md; }
bench() { local d=$1 tag=$2 c=$3 b=$4 t=$5; shift 5
    [ $(left) -lt 30 ] && return
    env "$@" timeout 80 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --batch $b --seq-len $t --steps 6 --warmup 2 --precision bf16 > $O/$d/bench-$tag-$c-$b-$t.log 2>&1
    echo "| $c B$b T$t | $tag | $(grep -oE 'graph=[0-9]|step_ms=[0-9.]+|tokens_per_s=[0-9.]+|mfu_bf16=[0-9.]+|peak_alloc_gib=[0-9.]+' $O/$d/bench-$tag-$c-$b-$t.log | tr '\n' ' ') $(grep -m1 -iE 'error|fail' $O/$d/bench-$tag-$c-$b-$t.log | cut -c1-150) |" >> $O/$d/rows.md; }
prof() { local d=$1 tag=$2 c=$3 n=$4; shift 4; [ $(left) -lt 40 ] && return
    env "$@" timeout 90 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --batch 8 --seq-len 1024 --steps 5 --warmup 2 --precision bf16 --profile > $O/$d/prof-$tag-$c.log 2>&1
    echo "### profile $c $tag" >> $O/$d/rows.md; grep -E "^\| " $O/$d/prof-$tag-$c.log | head -$n >> $O/$d/rows.md; }
ktimes() { local d=$1 c=$2 n=$3; [ $(left) -lt 90 ] && return
    timeout 110 tools/gpu/kernel_times.sh --bin $FB/flowhn-cuda --out $O/kt-$c configs/$c.json > $O/kt-$c.txt 2>&1
    echo "### kernel times $c" >> $O/$d/rows.md; head -$n $O/kt-$c.txt >> $O/$d/rows.md; rm -f $O/kt-$c/kernels.csv; }
ncuk() { local d=$1 tag=$2 c=$3 re=$4; [ $(left) -lt 100 ] && return
    NCU_EXTRA="--section SourceCounters --section SchedulerStats --section InstructionStats" timeout 130 tools/gpu/ncu_kernels.sh --bin $FB/flowhn-cuda --out $O/ncu-$tag configs/$c.json "$re" 1 > $O/ncu-$tag.head 2>&1
    echo "### ncu $tag ($c, $re)" >> $O/$d/rows.md; head -40 $O/ncu-$tag.head >> $O/$d/rows.md
    cp $O/ncu-$tag/ncu.txt $O/ncu-$tag.txt 2>/dev/null; rm -rf $O/ncu-$tag; }
(
  export CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=16
  timeout 60 python3 .devcarry/mm_ceiling.py > $O/mm_ceiling.md 2>&1
  run_t g0 test_cuda timeout 420 $FB/test_cuda
  run_t g0 test_cuda_graph timeout 60 $FB/test_cuda_graph
  run_t g0 test_cuda_decode timeout 60 $FB/test_cuda_decode
  bench g0 cls16 llama-135m 8 1024; bench g0 cls32 llama-135m 8 1024 FLOWHN_CLS_BF16=0
  bench g0 cls16 llama-gpt2small 8 1024; bench g0 cls32 llama-gpt2small 8 1024 FLOWHN_CLS_BF16=0
  bench g0 cls16 llama-1b 8 1024; bench g0 cls32 llama-1b 8 1024 FLOWHN_CLS_BF16=0
) &
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=16
  run_t g1 test_cuda_model timeout 240 $FB/test_cuda_model
  ktimes g1 llama-135m 45
  prof g1 new flowhn-fac-1b 40
  ncuk g1 ssdcbwd mamba2-gpt2small 'ssd_chunk_bwd_p64_bf_kernel'
  ncuk g1 scanbwd mamba1-135m 'scan_bwd_reg_kernel'
) &
wait
cd $O; { echo "## GPU0"; cat g0/rows.md; echo "## GPU1"; cat g1/rows.md; } > report.md 2>/dev/null
tar czf logs.tgz g0 g1 kt-* 2>/dev/null && rm -rf g0 g1; echo "total $((SECONDS-T0)) s" >> report.md; cat report.md
