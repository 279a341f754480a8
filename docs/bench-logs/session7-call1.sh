#!/usr/bin/env bash
# session 7 call 1 (two H200s). Bundle = int7: main 372a29a + pending/shadow-keep + pending/ssd-fwd.
# GPU0: tests (keeps and chained SSD forward on; SSD tests also with FLOWHN_SSD_FWD=old; graph also with branch
# streams), then A/B benches (FLOWHN_BF16_KEEP=0, FLOWHN_SSD_FWD=old). GPU1: ncu on attention, SSD backward and
# the Mamba-1 scan, then PyTorch ratios not re-run in session 6.
set -uo pipefail
T0=$SECONDS; O=$OUT; mkdir -p $O/g0 $O/g1
source .devcarry/bundle/env.sh
left() { echo $((${END:-540} - (SECONDS - T0))); }
run_t() { local d=$1 n=$2; shift 2; local s=$SECONDS; env "$@" > $O/$d/$n.log 2>&1; echo "| $n | rc $? | $(grep '^RESULT' $O/$d/$n.log | tail -1) | $((SECONDS-s)) s |" >> $O/$d/rows.md; grep -E "^FAIL|check failed" $O/$d/$n.log | head -8 >> $O/$d/rows.md; }
bench() { local d=$1 tag=$2 c=$3 b=$4; shift 4
    [ $(left) -lt 30 ] && return
    env "$@" timeout 80 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --batch $b --seq-len 1024 --steps 6 --warmup 2 --precision bf16 > $O/$d/bench-$tag-$c-$b.log 2>&1
    echo "| $c B$b | $tag | $(grep -oE 'graph=[0-9]|step_ms=[0-9.]+|tokens_per_s=[0-9.]+|mfu_bf16=[0-9.]+|peak_alloc_gib=[0-9.]+' $O/$d/bench-$tag-$c-$b.log | tr '\n' ' ') |" >> $O/$d/rows.md; }
prof() { local d=$1 tag=$2 c=$3; shift 3; [ $(left) -lt 40 ] && return
    env "$@" timeout 90 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --batch 8 --seq-len 1024 --steps 5 --warmup 2 --precision bf16 --profile > $O/$d/prof-$tag-$c.log 2>&1
    echo "### profile $c $tag" >> $O/$d/rows.md; grep -E "^\| (ssd|op|---|linear|attention|classifier|all)" $O/$d/prof-$tag-$c.log | head -12 >> $O/$d/rows.md; }
ncuk() { local n=$1 c=$2 re=$3 k=$4; [ $(left) -lt 120 ] && return; local s=$SECONDS
    timeout 200 tools/gpu/ncu_kernels.sh --bin $FB/flowhn-cuda --out $O/g1/ncu-$n configs/$c.json "$re" $k > $O/g1/ncu-$n.log 2>&1
    echo "### ncu $n rc $? $((SECONDS-s)) s" >> $O/g1/rows.md; tail -n +2 $O/g1/ncu-$n.log | grep -E "Duration|Throughput|Occupancy|Registers|Block Limit|^  [a-z_]" | head -40 >> $O/g1/rows.md; }
(
  export CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=16
  run_t g0 test_cuda timeout 150 $FB/test_cuda
  run_t g0 test_cuda_ssd_old FLOWHN_SSD_FWD=old FLOWHN_TEST_ONLY=ssd,ssd_tc timeout 60 $FB/test_cuda
  run_t g0 test_cuda_model timeout 200 $FB/test_cuda_model
  run_t g0 test_cuda_graph timeout 100 $FB/test_cuda_graph
  run_t g0 test_cuda_graph_streams FLOWHN_BRANCH_STREAMS=1 timeout 100 $FB/test_cuda_graph
  run_t g0 test_cuda_decode timeout 100 $FB/test_cuda_decode
  for c in llama-gpt2small llama-1b; do bench g0 keep $c 8; bench g0 nokeep $c 8 FLOWHN_BF16_KEEP=0; done
  bench g0 ssdfwd mamba2-gpt2small 8; bench g0 ssdold mamba2-gpt2small 8 FLOWHN_SSD_FWD=old
  prof g0 ssdfwd mamba2-gpt2small; prof g0 ssdold mamba2-gpt2small FLOWHN_SSD_FWD=old
  bench g0 keep flowhn-fac-1b 8; bench g0 keep flowhn-fac-135m 8
) &
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=16
  ncuk attn llama-gpt2small 'attention_tc_(fwd|bwd)_kernel' 13
  ncuk ssdb mamba2-gpt2small 'ssd_chunk_bwd_p64_kernel|ssd_state_pass_bwd' 2
  ncuk scan1 mamba1-135m 'scan_(fwd|bwd)_kernel' 10
  mkdir -p $O/g1/torch
  [ $(left) -gt 80 ] && FLOWHN_CUDA=$FB/flowhn-cuda timeout $(( $(left) - 10 )) tools/bench_compare.sh --out $O/g1/torch --configs \
    "configs/mamba2-135m.json configs/hymba-135m.json configs/jamba-135m.json configs/flowhn-fa-135m.json configs/mamba2-gpt2small.json" > $O/g1/torch.log 2>&1
  grep -h "^BENCH\|^TORCHBENCH" $O/g1/torch.log | grep -oE '^[A-Z]+|config=[^ ]+|graph=[0-9]|step_ms=[0-9.]+' | paste -sd' ' | sed 's/ BENCH/\nBENCH/g; s/ TORCHBENCH/\nTORCHBENCH/g' >> $O/g1/rows.md
) &
wait
cd $O; { echo "## GPU0"; cat g0/rows.md; echo "## GPU1"; cat g1/rows.md; } > report.md 2>/dev/null
tar czf logs.tgz g0 g1 && rm -rf g0 g1; echo "total $((SECONDS-T0)) s" >> report.md; cat report.md
