#!/usr/bin/env bash
# session 12 call 2 (two H200s): diagnostics. Bundle = integ12 083a443 (call 1's four patches + cuDNN plan table 512).
# GPU0: the cuDNN tests that failed in call 1 (plan table full) + the new patches' op tests; test_cuda_model mamba2
#       with FLOWHN_LT_TUNE=0 and with FLOWHN_ZERO_GRAD=1.
# GPU1: test_cuda_model mamba2 as is (tuning log kept), FLOWHN_SSD_FWD_WALK=0, FLOWHN_INPROJ_D16=0.
set -uo pipefail
T0=$SECONDS; O=$OUT; mkdir -p $O/g0 $O/g1
source .devcarry/bundle/env.sh
run_t() { local d=$1 n=$2; shift 2; local s=$SECONDS; env "$@" > $O/$d/$n.log 2>&1; echo "| $n | rc $? | $(grep '^RESULT' $O/$d/$n.log | tail -1) | $((SECONDS-s)) s |" >> $O/$d/rows.md; grep -E "^FAIL|check failed|error|ERROR|table is full" $O/$d/$n.log | head -8 | cut -c1-300 >> $O/$d/rows.md; grep -E "mamba2-H256 .*(on vs off|off vs off)" $O/$d/$n.log | cut -c1-220 >> $O/$d/rows.md; }
(
  export CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=16
  run_t g0 test_cuda_cudnn FLOWHN_TEST_REQUIRE_CUDNN=1 FLOWHN_TEST_ONLY=test_attention_cudnn,test_bf16_only_dqkv,test_bf16_qkv,test_bf16_att_o,test_rope_cache,test_inproj_d16,test_ssd,test_ssd_tc timeout 150 $FB/test_cuda
  run_t g0 model_m2_tune0 FLOWHN_TEST_ARCH=mamba2 FLOWHN_LT_TUNE=0 timeout 100 $FB/test_cuda_model
  run_t g0 model_m2_zero1 FLOWHN_TEST_ARCH=mamba2 FLOWHN_ZERO_GRAD=1 timeout 100 $FB/test_cuda_model
) &
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=16
  run_t g1 model_m2 FLOWHN_TEST_ARCH=mamba2 FLOWHN_LT_TUNE_LOG=1 timeout 100 $FB/test_cuda_model
  run_t g1 model_m2_walk0 FLOWHN_TEST_ARCH=mamba2 FLOWHN_SSD_FWD_WALK=0 timeout 100 $FB/test_cuda_model
  run_t g1 model_m2_d160 FLOWHN_TEST_ARCH=mamba2 FLOWHN_INPROJ_D16=0 timeout 100 $FB/test_cuda_model
) &
wait
cd $O; { echo "## GPU0"; cat g0/rows.md; echo "## GPU1"; cat g1/rows.md; } > report.md 2>/dev/null
grep -c 'lt-tune' g1/model_m2.log >> report.md
tar czf logs.tgz g0 g1 2>/dev/null && rm -rf g0 g1; echo "total $((SECONDS-T0)) s" >> report.md; cat report.md
