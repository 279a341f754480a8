#!/usr/bin/env bash
# NOT RUN: session 11 had 234 device-seconds left, too few to start a machine; kept as the check for pending/inproj-d16.
# session 11 call 4 (two H200s, short: ~260 device-seconds were left). Bundle = integ11d: main cd58901 + inproj-d16
# (the producers of Mamba-2's in_proj gradient write their bf16 windows into one packed copy; FLOWHN_INPROJ_D16=0 off).
# GPU0: the changed kernels' tests in test_cuda, test_cuda_model's Mamba-2 cases, test_cuda_graph. GPU1: the A/B.
set -uo pipefail
T0=$SECONDS; O=$OUT; mkdir -p $O/g0 $O/g1
source .devcarry/bundle/env.sh
left() { echo $((${END:-180} - (SECONDS - T0))); }
run_t() { local d=$1 n=$2; shift 2; local s=$SECONDS; env "$@" > $O/$d/$n.log 2>&1; echo "| $n | rc $? | $(grep '^RESULT' $O/$d/$n.log | tail -1) | $((SECONDS-s)) s |" >> $O/$d/rows.md; grep -E "^FAIL|check failed|error|ERROR" $O/$d/$n.log | head -8 >> $O/$d/rows.md; }
bench() { local d=$1 tag=$2 c=$3 b=$4 t=$5; shift 5
    [ $(left) -lt 30 ] && return
    env "$@" timeout 60 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --batch $b --seq-len $t --steps 6 --warmup 2 --precision bf16 > $O/$d/bench-$tag-$c-$b-$t.log 2>&1
    echo "| $c B$b T$t | $tag | $(grep -oE 'graph=[0-9]|step_ms=[0-9.]+|tokens_per_s=[0-9.]+|mfu_bf16=[0-9.]+|peak_alloc_gib=[0-9.]+' $O/$d/bench-$tag-$c-$b-$t.log | tr '\n' ' ') $(grep -m1 -iE 'error|fail' $O/$d/bench-$tag-$c-$b-$t.log | cut -c1-150) |" >> $O/$d/rows.md; }
(
  export CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=16
  run_t g0 test_cuda_sub FLOWHN_TEST_ONLY=test_inproj_d16,test_conv1d,test_conv1d_silu,test_conv1d_silu_bf16,test_gated_rmsnorm,test_gated_rmsnorm_bf16 timeout 60 $FB/test_cuda
  run_t g0 test_cuda_model_m2 FLOWHN_TEST_ARCH=mamba2 timeout 80 $FB/test_cuda_model
  run_t g0 test_cuda_graph timeout 50 $FB/test_cuda_graph
) &
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=16
  bench g1 new mamba2-gpt2small 8 1024; bench g1 d160 mamba2-gpt2small 8 1024 FLOWHN_INPROJ_D16=0
  bench g1 new mamba2-135m 8 1024; bench g1 d160 mamba2-135m 8 1024 FLOWHN_INPROJ_D16=0
  bench g1 new mamba2-gpt2small 8 1024
) &
wait
cd $O; { echo "## GPU0"; cat g0/rows.md; echo "## GPU1"; cat g1/rows.md; } > report.md 2>/dev/null
grep -hE "inproj_d16|in_proj d16" g0/*.log | head -12 | cut -c1-220 >> report.md
tar czf logs.tgz g0 g1 2>/dev/null && rm -rf g0 g1; echo "total $((SECONDS-T0)) s" >> report.md; cat report.md
