/* test_cuda_graph.cu - the training step recorded as a CUDA graph and replayed
 * (src/train/step.c) against the same steps launched op by op.
 *
 * For llama, flowhn-fac (isolated and prefix), mamba1, mamba2 and hymba at
 * H 256, 4 layers, B 4, T 256, in fp32 and bf16 matmuls, three runs from the
 * same initialisation over STEPS steps, each step on a new batch:
 *   ref    model_forward_backward + optimizer_step (the trainer's path without graphs),
 *   eager  the recordable step (train_step_run) launched op by op,
 *   graph  the same, recorded at step 2 and replayed after;
 * and halfway, an evaluation forward (model_forward: unfused head, which
 * grows matmul scratch) between two steps, so the replay must notice freed
 * scratch and record again. Each step's loss and gradient norm must agree to
 * relative 1e-6, or to 4 times the difference between two ref runs where the
 * kernels' float atomics make even those differ; the final parameters are
 * compared the same way (max relative L2). Run with FLOWHN_BRANCH_STREAMS=1 as
 * well (make test-cuda does), so the fork/join of the branch streams is
 * recorded too. Needs a GPU. */
#include <cuda_runtime.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "../../src/core/error.h"
#include "../../src/model/model.h"
#include "../../src/train/optimizer.h"
#include "../../src/train/step.h"
#include "../helpers/tiny.h"
}
#include "../../src/ops/cuda/cuda_ops.h"
#include "../test.h"

#define STEPS 8
#define EVAL_AT 4  /* the evaluation forward runs before this step */
#define REL_TOL 1e-6

static const char *mode = "fp32";

typedef struct {
    double loss[STEPS], gnorm[STEPS];
    float *params;
    int recordings, replays;
} Run;

enum { PATH_REF, PATH_EAGER, PATH_GRAPH };

static int run_path(const Config *c, int path, int B, int T, Run *r) {
    memset(r, 0, sizeof *r);
    Model m;
    Optimizer opt;
    AdamWConfig oc;
    adamw_defaults(&oc);
    oc.lr = 1e-3;
    oc.min_lr = 1e-4;
    oc.warmup_steps = 2;
    oc.total_steps = STEPS;
    oc.grad_clip = 0.5;  /* small enough that clipping happens */
    int V = c->vocab_size, rc = -1;
    int *tok = (int *)malloc(sizeof(int) * B * T), *tgt = (int *)malloc(sizeof(int) * B * T);
    TrainStep ts;
    int have_ts = 0;
    if (model_create(&m, c, &cuda_ops) || model_init_params(&m, 4321)) goto out_tok;
    if (optimizer_create(&opt, &m, &oc)) goto out_model;
    if (path != PATH_REF) {
        if (train_step_init(&ts, &m, path == PATH_GRAPH)) goto out_opt;
        have_ts = 1;
    }
    for (int s = 0; s < STEPS; s++) {
        if (s == EVAL_AT) {  /* an evaluation between steps: unfused head, other scratch sizes */
            tiny_batch(tok, tgt, B, T, V, 999);
            if (model_forward(&m, tok, tgt, B, T)) goto out_ts;
        }
        tiny_batch(tok, tgt, B, T, V, 100 + s);
        if (s == 6) tgt[5] = -1;  /* one more ignored target: 1/n_valid changes, the graph is recorded again */
        if (path == PATH_REF) {
            model_zero_grad(&m);
            if (model_forward_backward(&m, tok, tgt, B, T) || optimizer_step(&opt, &m, 1.0, &r->gnorm[s])) goto out_ts;
            r->loss[s] = m.loss;
        } else if (train_step_run(&ts, &m, &opt, tok, tgt, B, T, &r->loss[s], &r->gnorm[s])) {
            goto out_ts;
        }
    }
    if (cuda_ops_check()) goto out_ts;
    r->params = (float *)malloc(sizeof(float) * m.layout.total);
    m.ops->to_host(r->params, m.params, sizeof(float) * m.layout.total);
    if (have_ts) { r->recordings = ts.recordings; r->replays = ts.replays; }
    rc = cuda_ops_check();
out_ts:
    if (have_ts) train_step_free(&ts, &m);
out_opt:
    optimizer_free(&opt, &m);
out_model:
    model_free(&m);
out_tok:
    free(tok);
    free(tgt);
    return rc;
}

static double rel(double a, double b) { return fabs(a - b) / fmax(fabs(a), 1e-30); }

static double params_rel(const Run *a, const Run *b, size_t n) {
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        double x = (double)a->params[i] - b->params[i];
        d += x * x;
        s += (double)a->params[i] * a->params[i];
    }
    return sqrt(d / fmax(s, 1e-300));
}

/* worst per-step relative difference of losses and norms; *bitwise: all equal */
static double worst_diff(const Run *a, const Run *b, int *bitwise) {
    double w = 0;
    *bitwise = 1;
    for (int s = 0; s < STEPS; s++) {
        w = fmax(w, fmax(rel(a->loss[s], b->loss[s]), rel(a->gnorm[s], b->gnorm[s])));
        if (a->loss[s] != b->loss[s] || a->gnorm[s] != b->gnorm[s]) *bitwise = 0;
    }
    return w;
}

static void test_arch(const TinySpec *s) {
    Config c = tiny_config_h256(s, 256);
    char name[64];
    snprintf(name, sizeof name, "%s-H256", s->name);
    if (config_validate(&c, name)) { CHECK(0, "%s", fh_last_error()); return; }
    const int B = 4, T = 256;
    Run ref, ref2, eager, graph;
    int ok = !run_path(&c, PATH_REF, B, T, &ref) && !run_path(&c, PATH_REF, B, T, &ref2) &&
             !run_path(&c, PATH_EAGER, B, T, &eager) && !run_path(&c, PATH_GRAPH, B, T, &graph);
    CHECK(ok, "%s: %s", name, fh_last_error());
    if (ok) {
        Model tmp;
        size_t n = 0;
        if (!model_create(&tmp, &c, &cuda_ops)) { n = tmp.layout.total; model_free(&tmp); }
        int bw_noise, bw_eager, bw_graph;
        double noise = worst_diff(&ref, &ref2, &bw_noise);
        double d_eager = worst_diff(&ref, &eager, &bw_eager), d_graph = worst_diff(&ref, &graph, &bw_graph);
        double p_noise = params_rel(&ref, &ref2, n), p_eager = params_rel(&ref, &eager, n),
               p_graph = params_rel(&ref, &graph, n);
        double tol = fmax(REL_TOL, 4 * noise), ptol = fmax(REL_TOL, 4 * p_noise);
        CHECK(d_eager <= tol, "%s: eager recordable step vs reference: rel %.2e > %.1e", name, d_eager, tol);
        CHECK(d_graph <= tol, "%s: graph replay vs reference: rel %.2e > %.1e", name, d_graph, tol);
        CHECK(p_eager <= ptol && p_graph <= ptol, "%s: final parameters: eager %.2e graph %.2e (bound %.1e)", name,
              p_eager, p_graph, ptol);
        /* step 0 eager, 1 recorded, replays after, except where the recording had to be made again */
        CHECK(graph.recordings >= 1 && graph.replays >= STEPS - 6, "%s: %d recordings, %d replays", name,
              graph.recordings, graph.replays);
        printf("  %-5s %-24s losses %.6f..%.6f  vs ref: eager %.1e%s graph %.1e%s (ref run-to-run %.1e%s); params "
               "%.1e / %.1e (noise %.1e); %d recordings, %d replays\n",
               mode, name, ref.loss[0], ref.loss[STEPS - 1], d_eager, bw_eager ? " (bitwise)" : "", d_graph,
               bw_graph ? " (bitwise)" : "", noise, bw_noise ? " (bitwise)" : "", p_eager, p_graph, p_noise,
               graph.recordings, graph.replays);
    }
    free(ref.params); free(ref2.params); free(eager.params); free(graph.params);
}

int main(void) {
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("no CUDA device: test_cuda_graph needs a GPU\nRESULT 0 passed, 1 failed\n");
        return 1;
    }
    const char *e = getenv("FLOWHN_BRANCH_STREAMS");
    printf("training step as a CUDA graph vs op by op (%d steps, branch streams %s)\n", STEPS,
           e && !strcmp(e, "1") ? "on" : "off");
    const char *archs[] = {"llama", "flowhn-fac-isolated", "flowhn-fac-prefix", "mamba1", "mamba2", "hymba"};
    const char *modes[] = {"fp32", "bf16"};
    for (int k = 0; k < 2; k++) {
        mode = modes[k];
        CHECK(cuda_set_matmul_precision(mode) == 0, "%s", fh_last_error());
        for (int a = 0; a < 6; a++)
            for (int i = 0; i < n_tiny_specs; i++)
                if (!strcmp(tiny_specs[i].name, archs[a])) RUN_ARG(test_arch, &tiny_specs[i], archs[a]);
    }
    cuda_set_matmul_precision("fp32");
    TEST_SUMMARY();
}
