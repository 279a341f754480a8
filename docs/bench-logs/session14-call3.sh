#!/usr/bin/env bash
# session 14 call 3 (one H200). Bundle = int14 + the test_attention_cudnn dq fix (test_cuda rebuilt; racecheck_cases.sh
# with RACECHECK_EXCLUDE, default "nvjet cudnn_generated"). Three lanes at once on the one GPU:
# T: the fixed case alone, test_cuda_graph both ways, test_cuda_decode, memcheck of test_cuda (quick).
# R1: racecheck of the attention cases with cuDNN's sdpa kernels excluded, test_ssd alone, test_cuda_decode's own cases.
# R2: racecheck of the cases that timed out at 90 s in call 2 (test_linear*, test_classifier*), memcheck of test_cuda_decode.
set -uo pipefail
T0=$SECONDS; O=$OUT; mkdir -p $O/t $O/r1 $O/r2
source .devcarry/bundle/env.sh
RC=.devcarry/racecheck_cases.sh
left() { echo $((${END:-540} - (SECONDS - T0))); }
run_t() { local d=$1 n=$2; shift 2; local s=$SECONDS; env "$@" > $O/$d/$n.log 2>&1; echo "| $n | rc $? | $(grep -a '^RESULT' $O/$d/$n.log | tail -1) | $((SECONDS-s)) s |" >> $O/$d/rows.md; grep -aE "^FAIL|check failed|ERROR SUMMARY|table is full|Internal Sanitizer" $O/$d/$n.log | head -8 | cut -c1-300 >> $O/$d/rows.md; }
# does this compute-sanitizer take two --kernel-name-exclude filters?
FLOWHN_TEST_ONLY=test_elementwise FLOWHN_TEST_QUICK=1 timeout 60 compute-sanitizer --tool racecheck --kernel-name-exclude kns=nvjet --kernel-name-exclude kns=cudnn_generated --error-exitcode 1 $FB/test_cuda > $O/probe.log 2>&1
prc=$?; echo "probe two excludes: rc $prc, $(grep -a '^RESULT' $O/probe.log)" > $O/probe.md
if [ $prc = 0 ]; then X1="nvjet cudnn_generated"; X2="nvjet cudnn_generated"; else X1=cudnn_generated; X2=nvjet; echo "fallback: one exclude a lane" >> $O/probe.md; fi
(
  export OMP_NUM_THREADS=8
  run_t t test_attention_cudnn FLOWHN_TEST_ONLY=test_attention_cudnn FLOWHN_TEST_REQUIRE_CUDNN=1 timeout 120 $FB/test_cuda
  grep -a "cudnn" $O/t/test_attention_cudnn.log | grep -ac " ok" >> $O/t/rows.md
  run_t t test_cuda_graph timeout 150 $FB/test_cuda_graph
  run_t t test_cuda_graph_streams FLOWHN_BRANCH_STREAMS=1 timeout 150 $FB/test_cuda_graph
  run_t t test_cuda_decode timeout 200 $FB/test_cuda_decode
  [ $(left) -gt 90 ] && run_t t memcheck FLOWHN_TEST_QUICK=1 timeout $(( $(left) - 10 )) compute-sanitizer --tool memcheck --error-exitcode 1 $FB/test_cuda
) &
(
  export OMP_NUM_THREADS=4
  RACECHECK_EXCLUDE="$X1" RACECHECK_CASES=test_attention_bf16,test_attention_rope,test_attention_cudnn RACECHECK_TIMEOUT=150 timeout $(( $(left) - 5 )) $RC $FB/test_cuda $O/r1/a >> $O/r1/rows.md 2>&1
  RACECHECK_EXCLUDE="$X1" RACECHECK_CASES=test_ssd RACECHECK_TIMEOUT=200 timeout $(( $(left) - 5 )) $RC $FB/test_cuda $O/r1/s >> $O/r1/rows.md 2>&1
  RACECHECK_EXCLUDE="$X1" RACECHECK_CASES=copy_rows,conv1d_step,attention_decode RACECHECK_TIMEOUT=150 timeout $(( $(left) - 5 )) $RC $FB/test_cuda_decode $O/r1/d >> $O/r1/rows.md 2>&1
) &
(
  export OMP_NUM_THREADS=4
  RACECHECK_EXCLUDE="$X2" RACECHECK_CASES=test_linear,test_classifier_fp32,test_linear_tune,test_linear_precision,test_classifier RACECHECK_TIMEOUT=150 timeout $(( $(left) - 100 )) $RC $FB/test_cuda $O/r2/l >> $O/r2/rows.md 2>&1
  [ $(left) -gt 60 ] && run_t r2 memcheck_decode timeout $(( $(left) - 5 )) compute-sanitizer --tool memcheck --error-exitcode 1 $FB/test_cuda_decode
) &
wait
cd $O; { cat probe.md; for d in t r1 r2; do echo "## $d"; cat $d/rows.md; done; } > report.md 2>/dev/null
tar czf logs.tgz t r1 r2 probe.log 2>/dev/null && rm -rf t r1 r2; echo "total $((SECONDS-T0)) s" >> report.md; cat report.md
