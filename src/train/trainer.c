/* trainer.c - the training loop (see trainer.h). */
#include "trainer.h"

#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../core/error.h"
#include "../dist/bucket.h"
#include "../dist/shard.h"
#include "checkpoint.h"
#include "plot.h"
#include "step.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void fmt_eta(char *buf, size_t n, double s) {
    if (!isfinite(s) || s < 0) { snprintf(buf, n, "?"); return; }
    int t = (int)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%dh%02dm", t / 3600, t / 60 % 60);
    else snprintf(buf, n, "%dm%02ds", t / 60, t % 60);
}

/* Loss summed over the valid targets of n batches, and their count. */
static int loss_sums(Model *m, BatchSource *src, int n_batches, int B, int T, double *sum_out, double *count_out) {
    int *tok = malloc(sizeof(int) * (size_t)B * T), *tgt = malloc(sizeof(int) * (size_t)B * T);
    if (!tok || !tgt) { free(tok); free(tgt); return fh_error("out of memory"); }
    double sum = 0;
    long count = 0;
    for (int i = 0; i < n_batches; i++) {
        if (src->next(src->ctx, tok, tgt, B, T) || model_forward(m, tok, tgt, B, T)) { free(tok); free(tgt); return -1; }
        sum += m->loss * m->n_valid;
        count += m->n_valid;
    }
    free(tok);
    free(tgt);
    *sum_out = sum;
    *count_out = (double)count;
    return 0;
}

int evaluate_loss(Model *m, BatchSource *src, int n_batches, int B, int T, double *loss) {
    double sum, count;
    if (loss_sums(m, src, n_batches, B, T, &sum, &count)) return -1;
    *loss = count ? sum / count : 0;
    return 0;
}

/* The mean over every rank's batches (each rank reads its own slice). */
static int evaluate_loss_dist(Model *m, Dist *D, BatchSource *src, int n_batches, int B, int T, double *loss) {
    double x[2];
    if (loss_sums(m, src, n_batches, B, T, &x[0], &x[1])) return -1;
    if (D && D->all_reduce_host(D, x, 2, "all-reduce of the validation loss")) return -1;
    *loss = x[1] ? x[0] / x[1] : 0;
    return 0;
}

/* The trainer's own state for checkpoints: step, data position. */
static char *trainer_state(const Optimizer *opt, BatchSource *train, int world, int B, int T) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "step", opt->step);
    /* the data position counts batches of world*B*T tokens: a resume with another span rescales it */
    cJSON_AddNumberToObject(o, "world", world);
    cJSON_AddNumberToObject(o, "batch_size", B);
    cJSON_AddNumberToObject(o, "seq_len", T);
    char *ds = train->state ? train->state(train->ctx) : NULL;
    if (ds) cJSON_AddItemToObject(o, "data", cJSON_Parse(ds));
    free(ds);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

/* Every rank calls it (the moments are gathered); rank 0 writes the
 * single-process format, the others only take part in the gathers. All ranks
 * return the same status. */
static int save(Model *m, Optimizer *opt, BatchSource *train, const char *path, Dist *D, int B, int T) {
    int rank = D ? D->rank : 0, world = D ? D->world : 1;
    size_t n = m->layout.total;
    real *mh = NULL, *vh = NULL;
    int rc = 0;
    if (rank == 0) {
        mh = malloc(sizeof(real) * n);
        vh = malloc(sizeof(real) * n);
        if (!mh || !vh) rc = fh_error("out of memory saving a checkpoint");
    }
    if (!D) {
        if (!rc) {
            m->ops->to_host(mh, opt->m, sizeof(real) * n);
            m->ops->to_host(vh, opt->v, sizeof(real) * n);
        }
    } else {
        /* each moment gathered into the gradient buffer, which is free between steps (padded: world * per_rank) */
        real *shards[2] = {opt->m, opt->v}, *host[2] = {mh, vh};
        for (int k = 0; k < 2; k++) {
            if (D->all_gather(D, shards[k], m->grads, opt->per_rank, "all-gather of the optimizer moments")) {
                free(mh); free(vh);
                return -1;
            }
            if (rank == 0 && !rc) m->ops->to_host(host[k], m->grads, sizeof(real) * n);
        }
    }
    if (rank == 0 && !rc) {
        char *st = trainer_state(opt, train, world, B, T);
        OptimizerView view = {mh, vh};
        rc = checkpoint_save(path, m, view, st);
        free(st);
    }
    free(mh); free(vh);
    if (D) {   /* a failed write on rank 0 stops every rank, not just rank 0 */
        double status = rc ? 1 : 0;
        if (D->all_reduce_host(D, &status, 1, "all-reduce of the checkpoint status")) return -1;
        if (status && !rc) rc = fh_error("rank 0 could not write the checkpoint %s", path);
    }
    return rc;
}

/* A data position saved with a span of old_span tokens per batch index
 * (world*B*T then), rescaled to new_span: the first batch index whose tokens
 * start at or after the saved offset, so no token of the current epoch is
 * read twice (up to one span's worth may be skipped). Exact when the global
 * batch world*B*T is unchanged, e.g. 2 GPUs x 4 sequences -> 1 GPU x 8. */
static void rescale_position(cJSON *data, double old_span, double new_span) {
    cJSON *b = cJSON_GetObjectItemCaseSensitive(data, "batch");
    if (!cJSON_IsNumber(b) || old_span == new_span || new_span <= 0) return;
    cJSON_SetNumberValue(b, ceil(b->valuedouble * old_span / new_span));
}

static int resume_from(Model *m, Optimizer *opt, BatchSource *train, const char *path, int world, int B, int T) {
    size_t n = m->layout.total;
    real *mh = malloc(sizeof(real) * n), *vh = malloc(sizeof(real) * n);
    char *st = NULL;
    if (!mh || !vh) { free(mh); free(vh); return fh_error("out of memory"); }
    int rc = checkpoint_load(path, m, mh, vh, &st);
    if (!rc) {
        /* this rank's shard of the moments (everything for a world of one) */
        m->ops->from_host(opt->m, mh + opt->lo, sizeof(real) * (opt->hi - opt->lo));
        m->ops->from_host(opt->v, vh + opt->lo, sizeof(real) * (opt->hi - opt->lo));
        cJSON *o = st ? cJSON_Parse(st) : NULL;
        cJSON *step = o ? cJSON_GetObjectItemCaseSensitive(o, "step") : NULL;
        if (!cJSON_IsNumber(step)) rc = fh_error("%s: checkpoint has no trainer step (weights-only export?)", path);
        else {
            opt->step = (int)step->valuedouble;
            cJSON *data = cJSON_GetObjectItemCaseSensitive(o, "data");
            cJSON *ow = cJSON_GetObjectItemCaseSensitive(o, "world"), *ob = cJSON_GetObjectItemCaseSensitive(o, "batch_size"),
                  *ot = cJSON_GetObjectItemCaseSensitive(o, "seq_len");
            /* checkpoints from before data parallelism carry no shape: their span is taken as unchanged */
            if (data && cJSON_IsNumber(ow) && cJSON_IsNumber(ob) && cJSON_IsNumber(ot))
                rescale_position(data, ow->valuedouble * ob->valuedouble * ot->valuedouble, (double)world * B * T);
            if (data && train->restore) {
                char *ds = cJSON_PrintUnformatted(data);
                rc = train->restore(train->ctx, ds);
                free(ds);
            }
        }
        cJSON_Delete(o);
    }
    free(st); free(mh); free(vh);
    return rc;
}

/* ZeRO-1 cuts the flat buffers into world equal parts: the model's own
 * parameter and gradient buffers (exactly total reals) are moved into ones
 * padded to world * per_rank reals. The padding stays zero: no rank updates it. */
static int pad_buffers(Model *m, int world) {
    size_t total = m->layout.total, padded = shard_padded(total, world);
    if (padded == total) return 0;
    real *p = m->ops->alloc(sizeof(real) * padded), *g = m->ops->alloc(sizeof(real) * padded);
    real *h = malloc(sizeof(real) * total);
    if (!p || !g || !h) {
        m->ops->release(p); m->ops->release(g); free(h);
        return fh_error("cannot allocate the padded parameter and gradient buffers (%.1f MiB each)",
                        sizeof(real) * padded / 1048576.0);
    }
    m->ops->to_host(h, m->params, sizeof(real) * total);
    m->ops->from_host(p, h, sizeof(real) * total);
    free(h);
    m->ops->release(m->params);
    m->ops->release(m->grads);
    m->params = p;
    m->grads = g;
    return 0;
}

/* Appends one line to the training log. The stream is unbuffered, so the line
 * is one write: if the disk is full, the bytes that did get out are cut off
 * again (ftruncate), so the log only ever holds whole lines. */
static int log_append(FILE *log, const char *path, const char *line) {
    long at = ftell(log);
    if (fputs(line, log) >= 0) return 0;
    int e = errno;
    clearerr(log);
    if (at >= 0 && ftruncate(fileno(log), at) == 0) fseek(log, at, SEEK_SET);
    return fh_error("writing the training log %s failed (%s): free disk space or choose another --out (the log keeps "
                    "its whole lines; the last checkpoint is untouched)", path, strerror(e));
}

int train_run(Model *m, const TrainOptions *o, BatchSource *train, BatchSource *val, TrainResult *res) {
    memset(res, 0, sizeof *res);
    int B = o->batch_size, T = o->seq_len, accum = o->grad_accum > 0 ? o->grad_accum : 1;
    if (B < 1 || T < 1 || o->steps < 1)
        return fh_error("batch size, sequence length and steps must be positive (got %d, %d, %d)", B, T, o->steps);
    if (mkdir(o->out_dir, 0777) && errno != EEXIST)
        return fh_error("cannot create output directory %s: %s", o->out_dir, strerror(errno));
    char ckpt[1024], logp[1024], svg[1024];
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.bin", o->out_dir);
    snprintf(logp, sizeof logp, "%s/log.jsonl", o->out_dir);
    snprintf(svg, sizeof svg, "%s/loss.svg", o->out_dir);

    /* a world of one has no collectives, unless it is a real communicator (FLOWHN_NCCL_SINGLE) */
    Dist *D = o->dist && (o->dist->world > 1 || o->dist->impl) ? o->dist : NULL;
    int W = D ? D->world : 1, rank = D ? D->rank : 0, quiet = o->quiet || rank;
    if (D && pad_buffers(m, W)) return -1;
    const char *ov_env = getenv("FLOWHN_OVERLAP");
    int overlap = D && (o->overlap || (ov_env && !strcmp(ov_env, "1")));
    GradReducer gr;
    memset(&gr, 0, sizeof gr);
    if (overlap && grad_reducer_create(&gr, m, D, o->bucket_reals ? o->bucket_reals : bucket_reals_from_env()))
        return -1;
    if (D && !quiet) {
        if (overlap)
            fprintf(stderr, "gradient reduction: %d buckets (%d pieces over the ZeRO-1 shards) overlapped with the "
                    "backward\n", gr.plan.n_buckets, gr.plan.n_pieces);
        else fprintf(stderr, "gradient reduction: one reduce-scatter after the backward (--overlap to overlap it)\n");
    }
    Optimizer opt;
    AdamWConfig oc = o->opt;
    oc.total_steps = o->steps;
    if (optimizer_create_shard(&opt, m, &oc, D, rank, W)) { grad_reducer_free(&gr); return -1; }
    size_t S = opt.per_rank;
    if (o->resume && resume_from(m, &opt, train, o->resume, W, B, T)) { optimizer_free(&opt, m); return -1; }
    FILE *log = NULL;   /* rank 0 logs for everyone */
    if (rank == 0 && !(log = fopen(logp, o->resume ? "a" : "w"))) {
        optimizer_free(&opt, m);
        return fh_error("cannot write %s: %s", logp, strerror(errno));
    }
    if (log) {
        setvbuf(log, NULL, _IONBF, 0);  /* each line goes out whole or is cut back (log_append) */
        fseek(log, 0, SEEK_END);        /* an appended log: ftell must see its end, not 0 */
    }

    int *tok = malloc(sizeof(int) * (size_t)B * T), *tgt = malloc(sizeof(int) * (size_t)B * T);
    int n_steps = o->steps - opt.step;
    double *xs = calloc(n_steps + 1, sizeof(double)), *ys = calloc(n_steps + 1, sizeof(double));
    double *vx = calloc(n_steps + 2, sizeof(double)), *vy = calloc(n_steps + 2, sizeof(double));
    res->losses = calloc(n_steps + 1, sizeof(double));
    int nv = 0, rc = 0, use_ts = 0;
    TrainStep ts;
    if (!tok || !tgt || !xs || !ys || !vx || !vy || !res->losses) { rc = fh_error("out of memory"); goto done; }
    /* One process, no accumulation: the recordable step (step.h), replayed as a graph where the backend
     * records them. The default where it does (CUDA; tests/cuda/test_cuda_graph checks it against the
     * original step); --graph asks for it on the CPU too (to test the step op by op). Otherwise, and with
     * --no-graph / FLOWHN_NO_GRAPH=1, the original step. */
    int genv = train_step_graph_env(), graph = o->graph ? o->graph : genv;
    if (graph == 0 && m->ops->graph_begin) graph = 1;
    use_ts = accum == 1 && !D && genv >= 0 && train_step_supported(m->ops) && graph > 0;
    if (use_ts && train_step_init(&ts, m, graph > 0)) { rc = -1; goto done; }
    double t_start = now_s(), tokens_done = 0;
    int first_step = opt.step;
    while (opt.step < o->steps) {
        int step = opt.step;
        double t0 = now_s(), loss_sum = 0, gnorm = 0;
        int failed = 0;
        if (use_ts) {
            if (train->next(train->ctx, tok, tgt, B, T)) { rc = fh_error("step %d: %s", step + 1, fh_last_error()); goto done; }
            if (train_step_run(&ts, m, &opt, tok, tgt, B, T, &loss_sum, &gnorm)) {
                /* a NaN/Inf loss or gradient (no update made) goes to the policy below; anything else stops */
                int nonfinite = strstr(fh_last_error(), "not finite") != NULL;
                rc = fh_error("step %d: %s", step + 1, fh_last_error());
                if (!nonfinite) goto done;
                failed = 1;
            }
        } else {
            model_zero_grad(m);
            if (overlap) grad_reducer_begin(&gr, m->grads);
            for (int a = 0; a < accum; a++) {
                /* the earlier micro-batches only accumulate: the buckets go out during the last one's backward */
                if (overlap && a == accum - 1) { m->grads_ready = grad_reducer_ready; m->grads_ready_ctx = &gr; }
                /* forward and backward in one call: the fused classifier never stores the logits */
                int fail = train->next(train->ctx, tok, tgt, B, T) || model_forward_backward(m, tok, tgt, B, T);
                m->grads_ready = NULL;
                if (fail) {
                    rc = fh_error("step %d: %s", step + 1, fh_last_error());
                    /* with several ranks a non-finite loss is decided together after the reduction, whatever the
                     * policy */
                    if ((o->nan_policy == NAN_SKIP || D) && strstr(fh_last_error(), "not finite")) break;
                    goto done;
                }
                loss_sum += m->loss;
            }
            if (D) {
                /* the summed gradient of this rank's shard, the mean loss, and whether any rank's loss was not
                 * finite (then every rank skips the update together) */
                double x[2] = {loss_sum, rc ? 1 : 0};
                int red = overlap ? grad_reducer_finish(&gr)
                                  : D->reduce_scatter(D, m->grads, m->grads + rank * S, S,
                                                      "reduce-scatter of the gradients");
                if (red ||
                    D->all_reduce_host(D, x, 2, "all-reduce of the loss")) { rc = -1; goto done; }
                loss_sum = x[0] / W;
                if (x[1] > 0 && !rc) rc = fh_error("step %d: the loss of another rank is not finite", step + 1);
            }
            /* gradients are means over the accumulated micro-batches and the ranks */
            failed = rc || optimizer_step(&opt, m, 1.0 / ((double)accum * W), &gnorm);
        }
        if (failed) {
            if (D && D->failed) { rc = -1; goto done; }   /* a collective failed, not the numbers */
            /* a NaN/Inf loss or gradient: the update was not applied */
            fprintf(stderr, "\nflowhn train: %s\n", fh_last_error());
            if (o->nan_policy == NAN_STOP) { rc = -1; goto done; }
            fprintf(stderr, "flowhn train: skipping step %d (--on-nan skip)\n", step + 1);
            rc = 0;
            opt.step++;
            int k = step - first_step;   /* a gap in the curve, not a zero */
            xs[k] = step + 1; ys[k] = NAN; res->losses[k] = NAN;
            res->steps_done = k + 1;
            continue;
        }
        if (D && D->all_gather(D, m->params + rank * S, m->params, S, "all-gather of the parameters")) { rc = -1; goto done; }
        double dt = now_s() - t0, loss = loss_sum / accum;
        tokens_done += (double)B * T * accum * W;
        double tps = tokens_done / (now_s() - t_start);
        int k = step - first_step;
        xs[k] = step + 1; ys[k] = loss; res->losses[k] = loss;
        res->steps_done = k + 1;
        res->last_loss = loss;
        res->tokens_per_s = tps;
        double vloss = NAN;
        if (val && o->val_every > 0 && ((step + 1) % o->val_every == 0 || step + 1 == o->steps)) {
            char *vs = val->state ? val->state(val->ctx) : NULL;   /* same validation batches every time */
            if (evaluate_loss_dist(m, D, val, o->val_batches, B, T, &vloss)) { free(vs); rc = -1; goto done; }
            if (vs && val->restore) val->restore(val->ctx, vs);
            free(vs);
            vx[nv] = step + 1; vy[nv++] = vloss;
            res->last_val_loss = vloss;
        }
        if (log) {
            char line[512];
            int len = snprintf(line, sizeof line, "{\"step\": %d, \"loss\": %.6f, \"lr\": %.6g, \"grad_norm\": %.4f, "
                               "\"tokens_per_s\": %.1f, \"step_ms\": %.1f", step + 1, loss, lr_at(&opt.cfg, step),
                               gnorm, tps, dt * 1e3);
            if (isfinite(vloss)) len += snprintf(line + len, sizeof line - len, ", \"val_loss\": %.6f", vloss);
            snprintf(line + len, sizeof line - len, "}\n");
            if (log_append(log, logp, line)) { rc = -1; goto done; }
        }
        if (!quiet) {
            char eta[32];
            fmt_eta(eta, sizeof eta, (o->steps - step - 1) * (now_s() - t_start) / (k + 1));
            fprintf(stderr, "\rstep %5d/%d | loss %.4f%s | lr %.2e | %6.0f tok/s | ETA %s   ", step + 1, o->steps, loss,
                    "", lr_at(&opt.cfg, step), tps, eta);
            if (isfinite(vloss)) fprintf(stderr, "\n  validation loss %.4f at step %d\n", vloss, step + 1);
        }
        int last = opt.step == o->steps || (o->stop_after && opt.step >= o->stop_after);
        if ((o->ckpt_every > 0 && opt.step % o->ckpt_every == 0) || last) {
            if (save(m, &opt, train, ckpt, D, B, T)) { rc = -1; goto done; }
        }
        if (o->stop_after && opt.step >= o->stop_after) break;
    }
    if (!quiet) fprintf(stderr, "\n");
    if (rank == 0) {
        PlotSeries s[2] = {{"train loss", "#1f77b4", xs, ys, res->steps_done}, {"validation loss", "#d62728", vx, vy, nv}};
        const char *lab[1] = {"unigram baseline"};
        double base = o->baseline_loss;
        if (plot_svg(svg, "flowhn training", "step", "loss (nats/token)", s, nv ? 2 : 1, &base, lab, base > 0 ? 1 : 0))
            rc = -1;
    }
done:
    if (use_ts) train_step_free(&ts, m);
    if (log) fclose(log);
    free(tok); free(tgt); free(xs); free(ys); free(vx); free(vy);
    optimizer_free(&opt, m);
    grad_reducer_free(&gr);
    return rc;
}
