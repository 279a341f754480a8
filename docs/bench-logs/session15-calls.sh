#!/usr/bin/env bash
# session 15, device calls (bundle = main 9cf9cc9's test_cuda, test_cuda_decode, flowhn-cuda). PHASE=1 or 2.
# Two GPUs when lent (g0 on GPU 0, g1 on GPU 1), else both lanes share GPU 0.
# PHASE 3: r racecheck test_ssd_tc alone on GPU 0; g1 test_linear_tune alone (tuning on, off), under memcheck,
#          test_cuda whole, then llama-135m with FLOWHN_CLS_SMEM=big against the default, twice.
# PHASE 1: g0 test_cuda whole; beside it on GPU 0, r: racecheck of the ten test_cuda cases without a row (two at once);
#          g1 memcheck of the 27 test_cuda cases session 14 did not reach, three at once.
# PHASE 2: g0 memcheck of test_cuda_decode (every case), three at once;
#          r beside it on GPU 0: racecheck test_linear_precision alone; g1 memcheck of test_cuda's first 29 cases on
#          this binary, then racecheck of the eight test_cuda cases call 1 did not finish.
set -uo pipefail
source tools/gpu/call_lib.sh
END=${END:-555}
call_begin g0 r g1
NG=$(nvidia-smi -L | wc -l); G1=$(( NG > 1 ? 1 : 0 ))
nvidia-smi -L > "$O/gpus.txt"; echo "PHASE ${PHASE:-1}, $NG GPU(s)" >> "$O/gpus.txt"
SC=tools/gpu/sanitize_cases.sh
san() {  # LANE NAME TOOL BINARY LANES TIMEOUT [CASES]
    local d=$1 n=$2 tool=$3 bin=$4 lanes=$5 to=$6 cases=${7:-}
    [ "$(left)" -lt 40 ] && { echo "### $n: not started (call time spent)" >> "$O/$d/rows.md"; return; }
    echo "### $n ($tool, $lanes lanes, timeout $to, budget $(( $(left) - 12 )) s)" >> "$O/$d/rows.md"
    local s=$SECONDS
    SANITIZE_CASES=$cases SANITIZE_LANES=$lanes SANITIZE_TIMEOUT=$to SANITIZE_BUDGET=$(( $(left) - 12 )) \
        $SC "$tool" "$bin" "$O/$d/$n" >> "$O/$d/rows.md" 2>&1
    echo "$n: rc $?, $((SECONDS - s)) s" >> "$O/$d/rows.md"
}
REST=test_bf16_only,test_bf16_gu,test_bf16_dact,test_bf16_dnorm,test_bf16_dnorm_att,test_bf16_resid,test_bf16_d16_rc,test_ssm_step,test_conv1d,test_conv1d_silu,test_conv1d_silu_bf16,test_gated_rmsnorm,test_gated_rmsnorm_bf16,test_attention,test_attention_bf16,test_attention_rope,test_attention_cudnn,test_rope_cache,test_attention_strided,test_bf16_only_dqkv,test_bf16_qkv,test_bf16_att_o,test_inproj_d16,test_dzxd16,test_selective_scan,test_ssd,test_ssd_tc
FIRST=test_elementwise,test_swiglu_packed,test_embedding,test_zero_runs,test_rmsnorm,test_add_rmsnorm,test_linear,test_linear_precision,test_linear_tune,test_linear_gemv,test_linear_gemv_rc,test_decode_fused,test_decode_fused_rc,test_rope,test_rope_append,test_gather_scatter,test_rmsnorm_gather,test_xent,test_classifier,test_classifier_fp32,test_classifier_rows,test_optimizer,test_adamw_copy,test_weights_copy_span,test_adamw_runs,test_adamw_copy_rc,test_bf16_shadow,test_bf16_keep,test_bf16_keep_verify
RACE=test_ssd_tc,test_attention,test_attention_strided,test_bf16_qkv,test_inproj_d16,test_rope_cache,test_linear,test_linear_precision,test_classifier,test_classifier_fp32
if [ "${PHASE:-1}" = 1 ]; then
  ( export CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=6
    run_t g0 test_cuda FLOWHN_TEST_REQUIRE_CUDNN=1 timeout 450 "$FB/test_cuda" ) &
  ( export CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=4
    san r racecheck-ten racecheck "$FB/test_cuda" 2 480 "$RACE" ) &
  ( export CUDA_VISIBLE_DEVICES=$G1 OMP_NUM_THREADS=4
    san g1 memcheck-rest memcheck "$FB/test_cuda" 3 300 "$REST" ) &
elif [ "${PHASE}" = 2 ]; then
  # cuBLAS's own non-nvjet kernels (sm90_xmma_gemm_*, cutlass::*, gemmk1/gemv*, splitKreduce) left out of racecheck
  # too: call 1's test_linear_precision ran 480 s inside its tf32 products without finishing. No kernel of ours
  # has any of these substrings in its name (grep __global__ src/ops/cuda).
  export SANITIZE_EXCLUDE="nvjet cudnn_generated xmma cutlass gemm splitKreduce"
  ( export CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=4
    san g0 memcheck-decode memcheck "$FB/test_cuda_decode" 3 400 ) &
  ( export CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=4
    san r racecheck-precision racecheck "$FB/test_cuda" 1 540 test_linear_precision ) &
  ( export CUDA_VISIBLE_DEVICES=$G1 OMP_NUM_THREADS=4
    san g1 memcheck-first memcheck "$FB/test_cuda" 3 200 "$FIRST"
    san g1 racecheck-rest racecheck "$FB/test_cuda" 3 420 \
        test_classifier,test_classifier_fp32,test_attention,test_rope_cache,test_attention_strided,test_bf16_qkv,test_inproj_d16,test_ssd_tc ) &
elif [ "${PHASE}" = 3 ]; then
  # bundle: test_cuda rebuilt at main 35c89a1-equivalent (test_linear_tune's switch check), flowhn-cuda as before
  export SANITIZE_EXCLUDE="nvjet cudnn_generated xmma cutlass gemm splitKreduce"
  ( export CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=8
    san r racecheck-ssd-tc racecheck "$FB/test_cuda" 1 470 test_ssd_tc ) &
  ( export CUDA_VISIBLE_DEVICES=$G1 OMP_NUM_THREADS=8
    run_t g1 linear_tune_alone FLOWHN_TEST_ONLY=test_linear_tune timeout 120 "$FB/test_cuda"
    run_t g1 linear_tune_alone_off FLOWHN_LT_TUNE=0 FLOWHN_TEST_ONLY=test_linear_tune timeout 120 "$FB/test_cuda"
    san g1 memcheck-tune memcheck "$FB/test_cuda" 1 200 test_linear_tune
    run_t g1 test_cuda FLOWHN_TEST_REQUIRE_CUDNN=1 timeout 300 "$FB/test_cuda"
    [ "$(left)" -gt 100 ] && { bench g1 default llama-135m 8 1024; bench g1 clsbig llama-135m 8 1024 FLOWHN_CLS_SMEM=big
                               bench g1 default llama-135m 8 1024; bench g1 clsbig llama-135m 8 1024 FLOWHN_CLS_SMEM=big; } ) &
fi
wait
call_report g0 r g1
