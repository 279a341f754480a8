/* cuda_backend.cu - the CUDA op table and its sticky error state. */
#include "common.cuh"

static int cuda_failed;  /* set by the first failure, cleared by cuda_ops_check() */

void cuda_record_error(const char *what, const char *msg, const char *file, int line) {
    if (cuda_failed) return;  /* keep the first, most useful message */
    cuda_failed = 1;
    fh_error("CUDA failure at %s:%d in %s: %s", file, line, what, msg);
}

int cuda_ops_check(void) {
    CUDA_CALL(cudaDeviceSynchronize());
    int failed = cuda_failed;
    cuda_failed = 0;
    return failed ? -1 : 0;
}

/* cuda_ops_check without the device synchronization: for callers that must not
 * wait for queued work (nccl_dist.cu reduce_async) */
int cuda_ops_failed(void) {
    int failed = cuda_failed;
    cuda_failed = 0;
    return failed ? -1 : 0;
}

const Ops cuda_ops = {
    .name = "cuda-f32",
    .alloc = cuda_alloc,
    .release = cuda_release,
    .zero = cuda_zero,
    .zero_runs = cuda_zero_runs,
    .to_host = cuda_to_host,
    .from_host = cuda_from_host,
    .add = cuda_add,
    .accumulate = cuda_accumulate,
    .embedding_fwd = cuda_embedding_fwd,
    .embedding_bwd = cuda_embedding_bwd,
    .rmsnorm_fwd = cuda_rmsnorm_fwd,
    .rmsnorm_bwd = cuda_rmsnorm_bwd,
    .add_rmsnorm_fwd = cuda_add_rmsnorm_fwd,
    .linear_fwd = cuda_linear_fwd,
    .linear_bwd = cuda_linear_bwd,
    .swiglu_fwd = cuda_swiglu_fwd,
    .swiglu_bwd = cuda_swiglu_bwd,
    .swiglu_packed_fwd = cuda_swiglu_packed_fwd,
    .swiglu_packed_bwd = cuda_swiglu_packed_bwd,
    .silu_fwd = cuda_silu_fwd,
    .silu_bwd = cuda_silu_bwd,
    .rope_fwd = cuda_rope_fwd,
    .rope_bwd = cuda_rope_bwd,
    .attention_fwd = cuda_attention_fwd,
    .attention_bwd = cuda_attention_bwd,
    .conv1d_fwd = cuda_conv1d_fwd,
    .conv1d_bwd = cuda_conv1d_bwd,
    .conv1d_silu_fwd = cuda_conv1d_silu_fwd,
    .conv1d_silu_bwd = cuda_conv1d_silu_bwd,
    .selective_scan_fwd = cuda_selective_scan_fwd,
    .selective_scan_bwd = cuda_selective_scan_bwd,
    .ssd_fwd = cuda_ssd_fwd,
    .ssd_bwd = cuda_ssd_bwd,
    .gated_rmsnorm_fwd = cuda_gated_rmsnorm_fwd,
    .gated_rmsnorm_bwd = cuda_gated_rmsnorm_bwd,
    .gather_fwd = cuda_gather_fwd,
    .gather_bwd = cuda_gather_bwd,
    .scatter_fwd = cuda_scatter_fwd,
    .scatter_bwd = cuda_scatter_bwd,
    .rmsnorm_gather_fwd = cuda_rmsnorm_gather_fwd,
    .rmsnorm_gather_bwd = cuda_rmsnorm_gather_bwd,
    .xent_fwd = cuda_xent_fwd,
    .xent_bwd = cuda_xent_bwd,
    .classifier = cuda_classifier,
    .selective_scan_step = cuda_selective_scan_step,
    .ssd_step = cuda_ssd_step,
    .adamw = cuda_adamw,
    .sum_squares = cuda_sum_squares,
    .set_branch = cuda_set_branch,
    .copy_rows = cuda_copy_rows,
    .conv1d_step = cuda_conv1d_step,
    .attention_decode = cuda_attention_decode,
    .freeze_weights = cuda_freeze_weights,
    .copy_rows_at = cuda_copy_rows_at,
    .attention_decode_at = cuda_attention_decode_at,
    .sum_into = cuda_sum_into,
    .step_scale = cuda_step_scale,
    .adamw_step = cuda_adamw_step,
    .adamw_runs = cuda_adamw_runs,
    .graph_begin = cuda_graph_begin,
    .graph_end = cuda_graph_end,
    .graph_launch = cuda_graph_launch,
    .graph_free = cuda_graph_free,
    .train_weights = cuda_train_weights,
    .keep_bf16 = cuda_keep_bf16,
    .linear3_fwd = cuda_linear3_fwd,
    .linear_res_fwd = cuda_linear_res_fwd,
    .swiglu_linear_fwd = cuda_swiglu_linear_fwd,
    .rope_append_at = cuda_rope_append_at,
    .attention_rope_fwd = cuda_attention_rope_fwd,
    .attention_rope_bwd = cuda_attention_rope_bwd,
    .bf16_only = cuda_bf16_only,
    .pack_bf16 = cuda_pack_bf16,
};
