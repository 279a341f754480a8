#!/usr/bin/env bash
# session 12 call 1 (two H200s). Bundle = integ12: main 3746ebe + session 11's pending inproj-d16, attn-v16,
# ssd-fwd-walk, grad-zero-elim (all four first run here).
# GPU0: test_cuda (whole), graph tests both ways, LLaMA A/Bs (FLOWHN_CUDNN_DV=0, FLOWHN_ROPE_CACHE=0,
#       FLOWHN_ZERO_GRAD=1), flowhn-fac-1b A/B (FLOWHN_ZERO_GRAD=1) and B 16.
# GPU1: test_cuda_model, Mamba-2 A/Bs (FLOWHN_INPROJ_D16=0, FLOWHN_SSD_FWD_WALK=0), profiles mamba2-gpt2small,
#       flowhn-fac-1b.
set -uo pipefail
T0=$SECONDS; O=$OUT; mkdir -p $O/g0 $O/g1
source .devcarry/bundle/env.sh
left() { echo $((${END:-520} - (SECONDS - T0))); }
run_t() { local d=$1 n=$2; shift 2; local s=$SECONDS; env "$@" > $O/$d/$n.log 2>&1; echo "| $n | rc $? | $(grep '^RESULT' $O/$d/$n.log | tail -1) | $((SECONDS-s)) s |" >> $O/$d/rows.md; grep -E "^FAIL|check failed|error|ERROR" $O/$d/$n.log | head -8 | cut -c1-300 >> $O/$d/rows.md; }
bench() { local d=$1 tag=$2 c=$3 b=$4 t=$5; shift 5
    [ $(left) -lt 30 ] && return
    env "$@" timeout 80 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --batch $b --seq-len $t --steps 6 --warmup 2 --precision bf16 > $O/$d/bench-$tag-$c-$b-$t.log 2>&1
    echo "| $c B$b T$t | $tag | $(grep -oE 'graph=[0-9]|step_ms=[0-9.]+|tokens_per_s=[0-9.]+|mfu_bf16=[0-9.]+|peak_alloc_gib=[0-9.]+' $O/$d/bench-$tag-$c-$b-$t.log | tr '\n' ' ') $(grep -m1 -iE 'error|fail' $O/$d/bench-$tag-$c-$b-$t.log | cut -c1-150) |" >> $O/$d/rows.md; }
prof() { local d=$1 tag=$2 c=$3; shift 3
    [ $(left) -lt 40 ] && return
    env "$@" timeout 80 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --batch 8 --seq-len 1024 --steps 5 --warmup 2 --precision bf16 --profile > $O/$d/prof-$tag-$c.log 2>&1; }
(
  export CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=16
  run_t g0 test_cuda FLOWHN_TEST_REQUIRE_CUDNN=1 timeout 250 $FB/test_cuda
  run_t g0 test_cuda_graph timeout 70 $FB/test_cuda_graph
  run_t g0 test_cuda_graph_streams FLOWHN_BRANCH_STREAMS=1 timeout 70 $FB/test_cuda_graph
  bench g0 new llama-gpt2small 8 1024; bench g0 dv0 llama-gpt2small 8 1024 FLOWHN_CUDNN_DV=0
  bench g0 rope0 llama-gpt2small 8 1024 FLOWHN_ROPE_CACHE=0; bench g0 zero1 llama-gpt2small 8 1024 FLOWHN_ZERO_GRAD=1
  bench g0 new flowhn-fac-1b 8 1024; bench g0 zero1 flowhn-fac-1b 8 1024 FLOWHN_ZERO_GRAD=1
  bench g0 new llama-gpt2small 8 1024
  bench g0 new flowhn-fac-1b 16 1024
) &
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=16
  run_t g1 test_cuda_model timeout 300 $FB/test_cuda_model
  bench g1 new mamba2-gpt2small 8 1024; bench g1 d160 mamba2-gpt2small 8 1024 FLOWHN_INPROJ_D16=0
  bench g1 walk0 mamba2-gpt2small 8 1024 FLOWHN_SSD_FWD_WALK=0
  bench g1 new mamba2-135m 8 1024; bench g1 d160 mamba2-135m 8 1024 FLOWHN_INPROJ_D16=0
  bench g1 walk0 mamba2-135m 8 1024 FLOWHN_SSD_FWD_WALK=0
  prof g1 new flowhn-fac-1b
  bench g1 new mamba2-gpt2small 8 1024
  prof g1 new mamba2-gpt2small
) &
wait
cd $O; { echo "## GPU0"; cat g0/rows.md; echo "## GPU1"; cat g1/rows.md; } > report.md 2>/dev/null
for f in g*/prof-*.log; do echo "### $f"; grep -E "^\| " $f | head -32; done >> report.md 2>/dev/null
grep -hE "dV straight|declined|rope_cache|overwrite|walk|inproj_d16|pack" g0/test_cuda.log | head -30 | cut -c1-220 >> report.md
grep -hE "d16|INPROJ|ZERO_GRAD|zero|dV|rope" g1/test_cuda_model.log | head -16 | cut -c1-220 >> report.md
tar czf logs.tgz g0 g1 2>/dev/null && rm -rf g0 g1; echo "total $((SECONDS-T0)) s" >> report.md; cat report.md
