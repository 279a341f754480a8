/* cmd_bench.c - `flowhn bench`: training speed of a config on a backend.
 *
 * Times N full training steps (zero grads, forward, backward, AdamW) after W
 * warm-up steps on random tokens, and reports tokens/s, the step time, the
 * model FLOPs per token (flops_train_per_token: training = 3 x forward,
 * attention counted over the keys each query really sees), the achieved
 * TFLOP/s, MFU against stated peaks and the memory used. On CUDA the timed
 * region is bracketed by CUDA events (the backend's timer), not host clocks
 * around asynchronous launches. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/error.h"
#include "../core/rng.h"
#include "../infer/generate.h"
#include "../model/flops.h"
#include "../model/memory.h"
#include "../model/model.h"
#include "../ops/backend.h"
#include "../ops/profile.h"
#include "../train/optimizer.h"
#include "../train/step.h"
#include "args.h"
#include "commands.h"

/* Peaks the MFU is stated against (NVIDIA H100 SXM datasheet, dense). The H200
 * has the same compute peaks. */
#define PEAK_BF16_TFLOPS 989.0
#define PEAK_FP32_TFLOPS 67.0

static void usage(void) {
    fprintf(stderr,
            "usage: flowhn bench --config FILE [options]\n"
            "  --config FILE       model config (configs/*.json)\n"
            "  --batch B           sequences per step (default 8)\n"
            "  --seq-len T         tokens per sequence (default: max_position_embeddings)\n"
            "  --steps N           timed training steps (default 10)\n"
            "  --warmup W          untimed steps first (default 2; the first allocates activations)\n"
            "  --device cpu|cuda   backend (default cpu; cuda needs the CUDA build, build/flowhn-cuda)\n"
            "  --seed S            parameter and token seed (default 1)\n"
            "  --unfused-head      head and loss as separate ops storing fp32 logits (default: fused classifier)\n"
            "  --profile           then as many steps again with every op timed between two marks on the device\n"
            "                      (CUDA events): a table of ms, share of the step and TFLOP/s per op kind\n"
            "                      (src/ops/profile.h); the timed steps then run op by op, without graphs.\n"
            "                      With --decode: the decode steps\n"
            "  --graph             CUDA: record the whole training step once as a CUDA graph and replay it (the\n"
            "                      default on CUDA; also FLOWHN_GRAPH=1)\n"
            "  --no-graph          CUDA: launch every op instead: training runs the original step (host reads of\n"
            "                      the loss and norm inside it); --decode launches every op instead of replaying\n"
            "                      the recorded decode step (replay is the default; FlowHN with a split: one\n"
            "                      recording per routing pattern); also FLOWHN_NO_GRAPH=1\n"
            "  --precision P       matrix products: fp32 (default), tf32 or bf16 (CUDA; bf16 = tensor cores on\n"
            "                      bf16-rounded operands, fp32 accumulation, fp32 master weights)\n"
            "  --decode            time generation instead: --prompt-len P tokens (default 128) fed token by\n"
            "                      token, then --steps decode steps (default 128) at --batch B (default 1), then\n"
            "                      the same prompt length prefilled in one batched pass (generator_prefill)\n");
}

/* The decode bound is stated against the memory bandwidth this run
 * measures with a streaming kernel: accumulate (b += a) over 64M reals, 3
 * bytes moved per byte of b (two read, one written), the best of 5 after one
 * warm-up. (A device-to-device cudaMemcpy2D measured only 1.66 TB/s on the
 * H200, a copy-engine figure, far below what kernels stream; bounding
 * against it would flatter the decode.) The datasheet peak is printed beside
 * it for the GPUs we know (H100 SXM HBM3 3.35 TB/s, H200 HBM3e 4.8 TB/s).
 * 0 if the measurement could not run. */
static double measured_bandwidth(const Backend *be, const Ops *o) {
    size_t n = (size_t)1 << 26, bytes = sizeof(real) * n;
    real *a = o->alloc(bytes), *b = o->alloc(bytes);
    double best = 0;
    if (a && b && !be->sync()) {
        o->zero(a, bytes);
        o->zero(b, bytes);
        for (int r = 0; r < 6; r++) {
            be->timer_start();
            o->accumulate(b, a, 1, n);
            double s = be->timer_stop();
            if (r > 0 && s > 0 && 3.0 * bytes / s > best) best = 3.0 * bytes / s;
        }
        if (be->sync()) best = 0;
    }
    if (a) o->release(a);
    if (b) o->release(b);
    return best;
}
static double datasheet_bandwidth(const char *device) {
    if (strstr(device, "H200")) return 4.8e12;
    if (strstr(device, "H100")) return 3.35e12;
    return 0;
}

/* --decode: generation speed. The prompt is fed through the generator token
 * by token (its timing is the token-by-token prefill's), then `steps` decode steps are timed
 * with the logits left on the device (a GPU sampler's case; tokens are random,
 * not sampled), then 16 more with the logits copied to the host each step (as
 * `flowhn generate` does); last, the same generator reset prefills a P-token
 * prompt in one batched pass (generator_prefill, what `flowhn generate` now
 * does with its prompt), timed after one warm-up. The bound: a decode step must read every weight
 * once, so at best it takes weight bytes / HBM bandwidth; at batch B that
 * step yields B tokens. Weight bytes: every parameter in fp32 (in bf16 under
 * --precision bf16, the generator's frozen copy), except that an
 * untied input embedding contributes only the B rows it reads, and FlowHN with
 * a split reads only the branch each layer routes the position to
 * (generator_step_params), averaged over the timed steps. */
static int bench_decode(const Backend *be, const char *cfg_path, const Config *c, int B, int P, int N, int seed,
                        int no_graph, int profile) {
    const int host_steps = 16;
    int W = P + N + host_steps;
    if (W > c->max_seq_len) {
        fprintf(stderr, "flowhn bench --decode: prompt %d + %d steps + %d exceed max_position_embeddings %d\n", P, N,
                host_steps, c->max_seq_len);
        return 2;
    }
    /* --profile: the decode steps timed again, op by op (no graphs), after the measurement */
    OpProfile *prof = profile ? op_profile_create(be) : NULL;
    if (profile && !prof) { fprintf(stderr, "flowhn bench --profile: %s\n", fh_last_error()); return 1; }
    Model m;
    if (model_create(&m, c, prof ? op_profile_ops(prof) : be->ops) || model_init_params(&m, (uint64_t)seed)) {
        fprintf(stderr, "flowhn bench: %s\n", fh_last_error());
        op_profile_free(prof);
        return 1;
    }
    m.plan_len = W;
    Generator *g = generator_create(&m, B);
    int graphs = g ? generator_set_graphs(g, !no_graph) : 0;
    int *tok = malloc(sizeof(int) * B), *prompt = malloc(sizeof(int) * (size_t)B * P);
    real *logits = malloc(sizeof(real) * (size_t)B * c->vocab_size);
    int rc = 1;
    if (!g || !tok || !prompt || !logits) { fprintf(stderr, "flowhn bench: %s\n", g ? "out of memory" : fh_last_error()); goto out; }
    Rng rng;
    rng_seed(&rng, (uint64_t)seed, 98);
    size_t V = c->vocab_size;
    double weight_elems = 0;   /* per timed step (positions P .. P+N-1), on average */
    for (int t = P; t < P + N; t++) weight_elems += (double)generator_step_params(g, t) / N;
    /* with bf16 products the generator's frozen weights are read as bf16 */
    int bf16 = !strcmp(be->matmul_precision(), "bf16");
    double weight_bytes = (bf16 ? 2.0 : (double)sizeof(real)) * weight_elems;
    printf("bench --decode: %s (%s), %zu parameters, batch %d, prompt %d, %d decode steps (window %d)\n", cfg_path,
           arch_name(c->arch), m.layout.total, B, P, N, W);
    printf("device: %s, backend %s, matmul precision %s, decode step %s\n", be->device(), m.ops->name,
           be->matmul_precision(), graphs ? "recorded once as a graph, then replayed" : "ops launched one by one");
    double secs[3];
    int counts[3] = {P, N, host_steps};
    for (int phase = 0; phase < 3; phase++) {
        if (be->sync()) goto fail;
        be->timer_start();
        for (int s = 0; s < counts[phase]; s++) {
            for (int b = 0; b < B; b++) tok[b] = (int)(rng_u32(&rng) % (uint32_t)V);
            if (generator_step(g, tok, phase == 2 ? logits : NULL)) goto fail;
        }
        secs[phase] = be->timer_stop();
        if (be->sync()) goto fail;
    }
    /* the batched prefill of a P-token prompt (generator_prefill) on the same
     * generator, reset: once to warm up (its scratch is allocated then), then timed */
    double pf_s = 0;
    for (int rep = 0; rep < 2; rep++) {
        for (int i = 0; i < B * P; i++) prompt[i] = (int)(rng_u32(&rng) % (uint32_t)V);
        generator_reset(g);
        if (be->sync()) goto fail;
        be->timer_start();
        if (generator_prefill(g, prompt, P, NULL)) goto fail;
        pf_s = be->timer_stop();
        if (be->sync()) goto fail;
    }
    double step_s = secs[1] / N, tok_s = B / step_s, host_step_s = secs[2] / host_steps;
    double bw = measured_bandwidth(be, m.ops), peak = datasheet_bandwidth(be->device());
    double bound_s = bw > 0 ? weight_bytes / bw : 0, frac = bound_s / step_s;
    printf("prefill:     %.3f ms per token step (%d steps, token by token through the generator) -> %.1f tokens/s\n",
           1e3 * secs[0] / P, P, (double)B * P / secs[0]);
    printf("             %.3f ms for the %d-token prompt batched (generator_prefill) -> %.1f tokens/s, %.1fx\n",
           1e3 * pf_s, P, (double)B * P / pf_s, secs[0] / pf_s);
    printf("decode step: %.3f ms -> %.1f tokens/s (batch %d; logits left on the device)\n", 1e3 * step_s, tok_s, B);
    printf("             %.3f ms -> %.1f tokens/s with the logits copied to the host each step\n",
           1e3 * host_step_s, B / host_step_s);
    printf("weights:     %.1f MB read per step (%s%s)\n", weight_bytes / 1e6, bf16 ? "bf16" : "fp32",
           generator_routes_to_attention(g, 0, P) >= 0 ? "; the branches the positions are routed to, on average"
                                                       : "");
    printf("bound:       %.3f ms per step at %.2f TB/s (streaming bandwidth measured now) = %.1f tokens/s; reached %.1f%%\n",
           1e3 * bound_s, bw / 1e12, bound_s > 0 ? B / bound_s : 0, 100 * frac);
    if (peak > 0)
        printf("             %.3f ms per step at %.2f TB/s (datasheet peak); reached %.1f%%\n", 1e3 * weight_bytes / peak,
               peak / 1e12, 100 * weight_bytes / peak / step_s);
    printf("DECODE config=%s device=%s graph=%d B=%d prompt=%d steps=%d step_ms=%.4f tokens_per_s=%.1f host_logits_tokens_per_s=%.1f "
           "prefill_steps_tokens_per_s=%.1f prefill_batched_tokens_per_s=%.1f weight_bytes=%.0f stream_bw_tb_s=%.3f bound_ms=%.4f bound_fraction=%.4f\n",
           cfg_path, be->name, graphs, B, P, N, 1e3 * step_s, tok_s, B / host_step_s, (double)B * P / secs[0], (double)B * P / pf_s, weight_bytes, bw / 1e12, 1e3 * bound_s,
           frac);
    if (prof) {   /* N more steps from the prompt's end, on a fresh prefill */
        generator_reset(g);
        if (generator_prefill(g, prompt, P, NULL) || be->sync()) goto fail;
        op_profile_enable(prof, 1);
        op_profile_reset(prof);
        for (int s = 0; s < N; s++) {
            for (int b = 0; b < B; b++) tok[b] = (int)(rng_u32(&rng) % (uint32_t)V);
            if (generator_step(g, tok, NULL) || be->sync() || op_profile_collect(prof)) goto fail;
        }
        op_profile_enable(prof, 0);
        printf("\n");
        op_profile_print(prof, stdout, 1e3 * step_s);
    }
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "flowhn bench --decode: %s\n", fh_last_error());
out:
    generator_free(g);
    free(tok);
    free(prompt);
    free(logits);
    model_free(&m);
    op_profile_free(prof);
    return rc;
}

static double gib(size_t b) { return b / 1073741824.0; }

/* --unfused-head: the head and loss as separate ops (fp32 logits stored), to
 * measure what the fused classifier saves */
static int unfused_head;

/* the whole step recorded as a graph and replayed (src/train/step.h), when used */
static TrainStep *graph_step;

/* one training step on a fixed batch; 0 or -1 with fh_last_error() */
static int train_step(Model *m, Optimizer *o, const int *tok, const int *tgt, int B, int T) {
    double gnorm, loss;
    if (graph_step) return train_step_run(graph_step, m, o, tok, tgt, B, T, &loss, &gnorm);
    model_zero_grad(m);
    if (unfused_head ? model_forward(m, tok, tgt, B, T) || model_backward(m)
                     : model_forward_backward(m, tok, tgt, B, T))
        return -1;
    return optimizer_step(o, m, 1.0, &gnorm);
}

int cmd_bench(int argc, char **argv) {
    const char *cfg_path = NULL, *device = "cpu", *precision = "fp32";
    int batch = 8, seq = 0, steps = 10, warmup = 2, seed = 1, decode = 0, prompt = 128, batch_set = 0, steps_set = 0;
    int graph = train_step_graph_env();   /* -1 no decode graph, 0 defaults, 1 training step replayed */
    int profile = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help")) { usage(); return 0; }
        if (!strcmp(a, "--unfused-head")) { unfused_head = 1; continue; }
        if (!strcmp(a, "--profile")) { profile = 1; continue; }
        if (!strcmp(a, "--decode")) { decode = 1; continue; }
        if (!strcmp(a, "--no-graph")) { graph = -1; continue; }
        if (!strcmp(a, "--graph")) { graph = 1; continue; }
        if (!(v = arg_value("bench", argc, argv, &i))) return 2;
        int bad = 0;
        if (!strcmp(a, "--config")) cfg_path = v;
        else if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--precision")) precision = v;
        else if (!strcmp(a, "--batch")) bad = arg_int("bench", a, v, 1, 1 << 20, &batch), batch_set = 1;
        else if (!strcmp(a, "--prompt-len")) bad = arg_int("bench", a, v, 1, 1 << 24, &prompt);
        else if (!strcmp(a, "--seq-len")) bad = arg_int("bench", a, v, 1, 1 << 24, &seq);
        else if (!strcmp(a, "--steps")) bad = arg_int("bench", a, v, 1, 1 << 20, &steps), steps_set = 1;
        else if (!strcmp(a, "--warmup")) bad = arg_int("bench", a, v, 0, 1 << 20, &warmup);
        else if (!strcmp(a, "--seed")) bad = arg_int("bench", a, v, 0, 2147483647, &seed);
        else { fprintf(stderr, "flowhn bench: unknown option '%s'\n", a); usage(); return 2; }
        if (bad) return 2;
    }
    if (!cfg_path) { usage(); return 2; }
    const Backend *be = backend_find(device);
    if (!be) { fprintf(stderr, "flowhn bench: --device %s: %s\n", device, fh_last_error()); return 2; }
    if (be->set_matmul_precision(precision)) { fprintf(stderr, "flowhn bench: %s\n", fh_last_error()); return 2; }
    Config c;
    if (config_load(&c, cfg_path)) { fprintf(stderr, "flowhn bench: %s\n", fh_last_error()); return 1; }
    if (decode) return bench_decode(be, cfg_path, &c, batch_set ? batch : 1, prompt, steps_set ? steps : 128, seed, graph < 0, profile);
    if (!seq) seq = c.max_seq_len;
    if (seq > c.max_seq_len) {
        fprintf(stderr, "flowhn bench: --seq-len %d exceeds the config's max_position_embeddings %d\n", seq,
                c.max_seq_len);
        return 2;
    }
    /* refused before anything is allocated when it cannot fit */
    MemoryEstimate mem;
    if (model_memory_estimate(&c, batch, seq, MEMORY_TRAIN, &mem)) {
        fprintf(stderr, "flowhn bench: %s\n", fh_last_error());
        return 1;
    }
    mem.total -= mem.host;   /* bench writes no checkpoints: no host copies of m and v */
    mem.host = 0;
    memory_add_backend(&mem, be);   /* the bf16 weight copy of CUDA training */
    if (memory_check(&mem, be)) { fprintf(stderr, "flowhn bench: %s\n", fh_last_error()); return 1; }

    /* random tokens; targets are the next token (the last position predicts nothing) */
    size_t BT = (size_t)batch * seq;
    int *tok = malloc(sizeof(int) * BT), *tgt = malloc(sizeof(int) * BT);
    if (!tok || !tgt) { fprintf(stderr, "flowhn bench: out of memory\n"); return 1; }
    Rng rng;
    rng_seed(&rng, (uint64_t)seed, 99);
    for (size_t i = 0; i < BT; i++) tok[i] = (int)(rng_u32(&rng) % (uint32_t)c.vocab_size);
    for (size_t i = 0; i < BT; i++) tgt[i] = (i % seq == (size_t)seq - 1) ? -1 : tok[i + 1];

    Model m;
    Optimizer opt;
    AdamWConfig oc;
    adamw_defaults(&oc);
    oc.total_steps = warmup + steps;
    int rc = 1;
    /* --profile: the model runs on the timed table (without graphs), marks off until the profiled steps */
    OpProfile *prof = profile ? op_profile_create(be) : NULL;
    if (profile && !prof) { fprintf(stderr, "flowhn bench --profile: %s\n", fh_last_error()); goto out_tokens; }
    if (model_create(&m, &c, prof ? op_profile_ops(prof) : be->ops)) {
        fprintf(stderr, "flowhn bench: %s\n", fh_last_error());
        goto out_prof;
    }
    if (model_init_params(&m, (uint64_t)seed) || model_measure_split(&m, seq, 2, stdout) ||
        optimizer_create(&opt, &m, &oc)) {
        fprintf(stderr, "flowhn bench: %s\n", fh_last_error());
        goto out_model;
    }
    TrainStep ts;
    /* the step recorded once and replayed is the default where the backend records graphs (CUDA):
     * tests/cuda/test_cuda_graph checks it against the original step */
    int train_graph = graph > 0 || (graph == 0 && m.ops->graph_begin != NULL);
    if (train_graph && !unfused_head && m.ops->graph_begin && train_step_supported(m.ops)) {
        if (train_step_init(&ts, &m, train_graph)) { fprintf(stderr, "flowhn bench: %s\n", fh_last_error()); goto out_opt; }
        graph_step = &ts;
    }
    printf("bench: %s (%s), %zu parameters (%.1fM), batch %d x seq %d = %zu tokens/step\n", cfg_path,
           arch_name(c.arch), m.layout.total, m.layout.total / 1e6, batch, seq, BT);
    printf("device: %s, backend %s, matmul precision %s, step %s\n", be->device(), m.ops->name,
           be->matmul_precision(), graph_step && graph_step->graphs ? "recorded once as a graph, then replayed"
           : graph_step ? "op by op, no host reads inside the step" : "op by op (model_forward_backward + optimizer_step)");
    char mem_line[512];
    memory_describe(&mem, mem_line, sizeof mem_line);
    printf("memory: estimated %s\n", mem_line);
    fflush(stdout);

    for (int s = 0; s < warmup; s++)
        if (train_step(&m, &opt, tok, tgt, batch, seq) || be->sync()) goto fail;
    double first_loss = m.loss;
    be->timer_start();
    for (int s = 0; s < steps; s++)
        if (train_step(&m, &opt, tok, tgt, batch, seq)) goto fail;
    double secs = be->timer_stop();
    if (be->sync()) goto fail;

    double step_ms = 1e3 * secs / steps, tok_s = BT * steps / secs;
    double flops_tok = flops_train_per_token(&c, seq), tflops = flops_tok * tok_s / 1e12;
    size_t live, peak, used, total;
    be->memory(&live, &peak, &used, &total);
    if (graph_step)
        printf("graph: %d recording(s), %d replays%s\n", graph_step->recordings, graph_step->replays,
               graph_step->graphs ? "" : " (recording failed: steps ran without graphs)");
    printf("loss: %.4f after warm-up, %.4f after the timed steps (random tokens)\n", warmup ? first_loss : m.loss,
           m.loss);
    printf("step time:   %.2f ms (mean of %d steps after %d warm-up; forward + backward + AdamW)\n", step_ms, steps,
           warmup);
    printf("throughput:  %.0f tokens/s\n", tok_s);
    printf("model FLOPs: %.4g per token (training = 3 x forward; attention over the keys really seen)\n", flops_tok);
    printf("achieved:    %.3f TFLOP/s\n", tflops);
    if (!strcmp(be->name, "cuda")) {
        printf("MFU:         %.2f%% of %.0f TFLOP/s (H100 SXM bf16 dense)\n", 100 * tflops / PEAK_BF16_TFLOPS,
               PEAK_BF16_TFLOPS);
        printf("             %.2f%% of %.0f TFLOP/s (H100 SXM fp32, no tensor cores)\n", 100 * tflops / PEAK_FP32_TFLOPS,
               PEAK_FP32_TFLOPS);
        printf("             (matmul precision %s; every other op computes in fp32)\n", be->matmul_precision());
        printf("memory:      %.2f GiB peak allocated by flowhn (weights, grads, AdamW state, activations, bf16 weight copy); "
               "device in use %.2f of %.2f GiB\n", gib(peak), gib(used), gib(total));
    } else {
        printf("MFU:         not stated for the CPU (the peaks are the GPU's)\n");
    }
    printf("BENCH config=%s device=%s precision=%s graph=%d B=%d T=%d params=%zu step_ms=%.3f tokens_per_s=%.1f flops_per_token=%.6g "
           "tflops=%.4f mfu_bf16=%.4f mfu_fp32=%.4f peak_alloc_gib=%.3f\n",
           cfg_path, be->name, be->matmul_precision(), graph_step ? graph_step->graphs : -1, batch, seq, m.layout.total, step_ms, tok_s, flops_tok, tflops,
           tflops / PEAK_BF16_TFLOPS, tflops / PEAK_FP32_TFLOPS, gib(peak));
    if (prof) {
        op_profile_enable(prof, 1);
        op_profile_reset(prof);
        for (int s = 0; s < steps; s++)
            if (train_step(&m, &opt, tok, tgt, batch, seq) || be->sync() || op_profile_collect(prof)) goto fail;
        op_profile_enable(prof, 0);
        printf("\n");
        op_profile_print(prof, stdout, step_ms);
    }
    rc = 0;
    goto out_opt;
fail:
    fprintf(stderr, "flowhn bench: %s\n", fh_last_error());
out_opt:
    if (graph_step) train_step_free(graph_step, &m);
    graph_step = NULL;
    optimizer_free(&opt, &m);
out_model:
    model_free(&m);
out_prof:
    op_profile_free(prof);
out_tokens:
    free(tok);
    free(tgt);
    return rc;
}
