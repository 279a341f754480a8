#!/usr/bin/env bash
# session 14 calls 1-2 (one H200; two GPUs were not lent). Bundle = int14: main 9fc58a1 + pending/rccases (5 patches).
# PHASE=A: test_cuda whole (cuDNN required; includes rccases' test_bf16_d16_rc), test_cuda_model whole (the two
#          unrun host-side refactors of session 13).
# PHASE=B: compute-sanitizer racecheck over every test_cuda case (quick, one per process, two lanes at once on
#          the one GPU), the kernels of sessions 10-13 first.
set -uo pipefail
T0=$SECONDS; O=$OUT; mkdir -p $O/g0
source .devcarry/bundle/env.sh
left() { echo $((${END:-575} - (SECONDS - T0))); }
run_t() { local d=$1 n=$2; shift 2; local s=$SECONDS; env "$@" > $O/$d/$n.log 2>&1; echo "| $n | rc $? | $(grep -a '^RESULT' $O/$d/$n.log | tail -1) | $((SECONDS-s)) s |" >> $O/$d/rows.md; grep -aE "^FAIL|check failed|ERROR SUMMARY|table is full" $O/$d/$n.log | head -8 | cut -c1-300 >> $O/$d/rows.md; }
race() { local lane=$1 list=$2; mkdir -p $O/g0/race-$lane
  OMP_NUM_THREADS=8 RACECHECK_CASES=$list RACECHECK_TIMEOUT=90 timeout $(( $(left) - 5 )) tools/gpu/racecheck_cases.sh $FB/test_cuda $O/g0/race-$lane > $O/g0/race-$lane.md 2>&1; }
export OMP_NUM_THREADS=16
if [ "${PHASE:-A}" = A ]; then
  run_t g0 test_cuda FLOWHN_TEST_REQUIRE_CUDNN=1 timeout 300 $FB/test_cuda
  echo "bf16_d16_rc lines: $(grep -ac 'bf16_d16_rc' $O/g0/test_cuda.log), ok: $(grep -a 'bf16_d16_rc' $O/g0/test_cuda.log | grep -ac ' ok')" >> $O/g0/rows.md
  [ $(left) -gt 200 ] && run_t g0 test_cuda_model timeout $(( $(left) - 5 )) $FB/test_cuda_model
else
  OMP_NUM_THREADS=8 race a test_bf16_d16_rc,test_rmsnorm,test_ssd_tc,test_zero_runs,test_gated_rmsnorm,test_gated_rmsnorm_bf16,test_bf16_dact,test_bf16_resid,test_inproj_d16,test_attention_strided,test_bf16_qkv,test_rope_cache,test_adamw_runs,test_elementwise,test_embedding,test_add_rmsnorm,test_linear,test_rope,test_rope_append,test_gather_scatter,test_xent,test_optimizer,test_bf16_shadow,test_bf16_keep,test_weights_copy_span,test_ssm_step,test_attention,test_linear_tune,test_linear_precision,test_classifier &
  OMP_NUM_THREADS=8 race b test_ssd,test_selective_scan,test_attention_cudnn,test_conv1d_silu,test_conv1d_silu_bf16,test_swiglu_packed,test_bf16_dnorm,test_bf16_dnorm_att,test_dzxd16,test_bf16_only_dqkv,test_bf16_att_o,test_classifier_rows,test_classifier_fp32,test_linear_gemv_rc,test_decode_fused_rc,test_adamw_copy_rc,test_rmsnorm_gather,test_bf16_only,test_bf16_gu,test_bf16_keep_verify,test_conv1d,test_attention_bf16,test_attention_rope,test_linear_gemv,test_decode_fused,test_adamw_copy &
  wait
fi
wait
cd $O; { for g in 0; do echo "## GPU$g"; cat g$g/rows.md; done; echo "### racecheck lanes"; cat g0/race-a.md g0/race-b.md; } > report.md 2>/dev/null
echo "racecheck rows: $(cat g0/race-*.md | grep -c '^| racecheck'), with 0 hazards: $(cat g0/race-*.md | grep -c '0 hazards displayed')" >> report.md
tar czf logs.tgz g0 2>/dev/null && rm -rf g0; echo "total $((SECONDS-T0)) s" >> report.md; cat report.md
