#!/usr/bin/env bash
# session 9 call 3 (two H200s). Bundle = s9int2: main + adamw-mt (FLOWHN_ADAMW=old), xent-1pass (FLOWHN_XENT=old),
# split-fuse (FLOWHN_SPLIT_FUSE=0), scan1-bwd2 (FLOWHN_SCAN1_BWD=low), ssd-cbwd4 (FLOWHN_SSD_CBWD=bf3).
# GPU0: every GPU test on the new defaults. GPU1: each change against its switch, same binary; graph test with
# branch streams; racecheck of the new row kernels.
set -uo pipefail
T0=$SECONDS; O=$OUT; mkdir -p $O/g0 $O/g1
source .devcarry/bundle/env.sh
left() { echo $((${END:-548} - (SECONDS - T0))); }
run_t() { local d=$1 n=$2; shift 2; local s=$SECONDS; env "$@" > $O/$d/$n.log 2>&1; echo "| $n | rc $? | $(grep '^RESULT' $O/$d/$n.log | tail -1) | $((SECONDS-s)) s |" >> $O/$d/rows.md; grep -E "^FAIL|check failed|error" $O/$d/$n.log | head -8 >> $O/$d/rows.md; }
bench() { local d=$1 tag=$2 c=$3 b=$4 t=$5; shift 5
    [ $(left) -lt 30 ] && return
    env "$@" timeout 80 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --batch $b --seq-len $t --steps 6 --warmup 2 --precision bf16 > $O/$d/bench-$tag-$c-$b-$t.log 2>&1
    echo "| $c B$b T$t | $tag | $(grep -oE 'graph=[0-9]|step_ms=[0-9.]+|tokens_per_s=[0-9.]+|mfu_bf16=[0-9.]+|peak_alloc_gib=[0-9.]+' $O/$d/bench-$tag-$c-$b-$t.log | tr '\n' ' ') $(grep -m1 -iE 'error|fail' $O/$d/bench-$tag-$c-$b-$t.log | cut -c1-150) |" >> $O/$d/rows.md; }
(
  export CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=16
  run_t g0 test_cuda timeout 300 $FB/test_cuda
  run_t g0 test_cuda_model timeout $(( $(left) - 3 )) $FB/test_cuda_model
) &
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=16
  run_t g1 test_cuda_graph timeout 50 $FB/test_cuda_graph
  run_t g1 test_cuda_decode timeout 45 $FB/test_cuda_decode
  run_t g1 test_cuda_graph_streams FLOWHN_BRANCH_STREAMS=1 timeout 50 $FB/test_cuda_graph
  bench g1 new llama-135m 8 1024; bench g1 adamw-old llama-135m 8 1024 FLOWHN_ADAMW=old; bench g1 xent-old llama-135m 8 1024 FLOWHN_XENT=old
  bench g1 new mamba2-gpt2small 8 1024; bench g1 bf3 mamba2-gpt2small 8 1024 FLOWHN_SSD_CBWD=bf3
  bench g1 new mamba1-135m 8 1024; bench g1 low mamba1-135m 8 1024 FLOWHN_SCAN1_BWD=low
  bench g1 new flowhn-fac-1b 8 1024; bench g1 split0 flowhn-fac-1b 8 1024 FLOWHN_SPLIT_FUSE=0; bench g1 low flowhn-fac-1b 8 1024 FLOWHN_SCAN1_BWD=low
  bench g1 new llama-1b 8 1024; bench g1 adamw-old llama-1b 8 1024 FLOWHN_ADAMW=old
  bench g1 new llama-gpt2small 8 1024; bench g1 adamw-old llama-gpt2small 8 1024 FLOWHN_ADAMW=old; bench g1 xent-old llama-gpt2small 8 1024 FLOWHN_XENT=old
  bench g1 new flowhn-fac-135m 8 1024; bench g1 split0 flowhn-fac-135m 8 1024 FLOWHN_SPLIT_FUSE=0
  [ $(left) -gt 60 ] && run_t g1 racecheck_rows FLOWHN_TEST_ONLY=test_classifier_rows,test_rmsnorm_gather timeout $(( $(left) - 10 )) compute-sanitizer --tool racecheck --error-exitcode 9 $FB/test_cuda
) &
wait
cd $O; { echo "## GPU0"; cat g0/rows.md; echo "## GPU1"; cat g1/rows.md; } > report.md 2>/dev/null
tar czf logs.tgz g0 g1 2>/dev/null && rm -rf g0 g1; echo "total $((SECONDS-T0)) s" >> report.md; cat report.md
