#!/usr/bin/env bash
# session 7 call 2 (two H200s). Bundle = int8: main (keeps merged, keep-verify, race-cover cases, rmsnorm check)
# + lt-tune + ssd-bwd (chained backward state pass) + ssd-cbwd (warp-local p64 chunk backward) + scan1 (register Mamba-1 scan) + rope-attn (RoPE inside attention).
# GPU0: tests (+ old-switch SSD tests), racecheck of the new cases. GPU1: A/B benches of each change, profiles, tune log.
set -uo pipefail
T0=$SECONDS; O=$OUT; mkdir -p $O/g0 $O/g1
source .devcarry/bundle/env.sh
left() { echo $((${END:-500} - (SECONDS - T0))); }
run_t() { local d=$1 n=$2; shift 2; local s=$SECONDS; env "$@" > $O/$d/$n.log 2>&1; echo "| $n | rc $? | $(grep '^RESULT' $O/$d/$n.log | tail -1) | $((SECONDS-s)) s |" >> $O/$d/rows.md; grep -E "^FAIL|check failed" $O/$d/$n.log | head -8 >> $O/$d/rows.md; }
bench() { local d=$1 tag=$2 c=$3 b=$4; shift 4
    [ $(left) -lt 30 ] && return
    env "$@" timeout 80 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --batch $b --seq-len 1024 --steps 6 --warmup 2 --precision bf16 > $O/$d/bench-$tag-$c-$b.log 2>&1
    echo "| $c B$b | $tag | $(grep -oE 'graph=[0-9]|step_ms=[0-9.]+|tokens_per_s=[0-9.]+|mfu_bf16=[0-9.]+|peak_alloc_gib=[0-9.]+' $O/$d/bench-$tag-$c-$b.log | tr '\n' ' ') $(grep -m1 -iE 'error|fail' $O/$d/bench-$tag-$c-$b.log | cut -c1-150) |" >> $O/$d/rows.md; }
prof() { local d=$1 tag=$2 c=$3 n=$4; shift 4; [ $(left) -lt 40 ] && return
    env "$@" timeout 90 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --batch 8 --seq-len 1024 --steps 5 --warmup 2 --precision bf16 --profile > $O/$d/prof-$tag-$c.log 2>&1
    echo "### profile $c $tag" >> $O/$d/rows.md; grep -E "^\| " $O/$d/prof-$tag-$c.log | head -$n >> $O/$d/rows.md; }
(
  export CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=16
  run_t g0 test_cuda timeout 200 $FB/test_cuda
  run_t g0 test_cuda_ssd_old FLOWHN_SSD_BWD=old FLOWHN_SSD_CBWD=old FLOWHN_TEST_ONLY=test_ssd,test_ssd_tc timeout 60 $FB/test_cuda
  run_t g0 test_cuda_model timeout 220 $FB/test_cuda_model
  run_t g0 test_cuda_graph timeout 100 $FB/test_cuda_graph
  run_t g0 test_cuda_graph_streams FLOWHN_BRANCH_STREAMS=1 timeout 100 $FB/test_cuda_graph
  run_t g0 test_cuda_decode timeout 100 $FB/test_cuda_decode
  [ $(left) -gt 60 ] && RACECHECK_CASES=test_linear_gemv_rc,test_decode_fused_rc,test_rope_append,test_classifier_rows,test_classifier_fp32,test_adamw_copy_rc RACECHECK_TIMEOUT=60 \
     timeout $(( $(left) - 20 )) tools/gpu/racecheck_cases.sh $FB/test_cuda $O/g0/race >> $O/g0/rows.md 2>&1
  [ $(left) -gt 60 ] && RACECHECK_CASES=attention_decode RACECHECK_TIMEOUT=$(( $(left) - 25 )) \
     timeout $(( $(left) - 15 )) tools/gpu/racecheck_cases.sh $FB/test_cuda_decode $O/g0/race-dec >> $O/g0/rows.md 2>&1
) &
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=16
  bench g1 all llama-gpt2small 8; bench g1 lt0 llama-gpt2small 8 FLOWHN_LT_TUNE=0; bench g1 rope0 llama-gpt2small 8 FLOWHN_ATTN_ROPE=0
  bench g1 all mamba1-135m 8; bench g1 scanold mamba1-135m 8 FLOWHN_SCAN1=old
  bench g1 all mamba2-gpt2small 8; bench g1 ssdbold mamba2-gpt2small 8 FLOWHN_SSD_BWD=old; bench g1 cbwdold mamba2-gpt2small 8 FLOWHN_SSD_CBWD=old
  bench g1 all llama-1b 8; bench g1 lt0 llama-1b 8 FLOWHN_LT_TUNE=0
  bench g1 all flowhn-fac-1b 8; bench g1 scanold flowhn-fac-1b 8 FLOWHN_SCAN1=old
  bench g1 all flowhn-fac-135m 8; bench g1 all llama-135m 8
  prof g1 all llama-gpt2small 22
  prof g1 all mamba2-gpt2small 12
  prof g1 all mamba1-135m 10
  [ $(left) -gt 40 ] && FLOWHN_LT_TUNE_LOG=1 timeout 60 $FB/flowhn-cuda bench --config configs/llama-gpt2small.json --device cuda --batch 8 --seq-len 1024 --steps 3 --warmup 1 --precision bf16 > $O/g1/ltlog.out 2> $O/g1/ltlog.err
  grep -E " m=|chose" $O/g1/ltlog.err | cut -c1-160 | head -40 >> $O/g1/rows.md
) &
wait
cd $O; { echo "## GPU0"; cat g0/rows.md; echo "## GPU1"; cat g1/rows.md; } > report.md 2>/dev/null
tar czf logs.tgz g0 g1 && rm -rf g0 g1; echo "total $((SECONDS-T0)) s" >> report.md; cat report.md
