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

#include "../core/error.h"
#include "checkpoint.h"
#include "plot.h"

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

int evaluate_loss(Model *m, BatchSource *src, int n_batches, int B, int T, double *loss) {
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
    *loss = count ? sum / count : 0;
    return 0;
}

/* The trainer's own state for checkpoints: step, data position. */
static char *trainer_state(const Optimizer *opt, BatchSource *train) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "step", opt->step);
    char *ds = train->state ? train->state(train->ctx) : NULL;
    if (ds) cJSON_AddItemToObject(o, "data", cJSON_Parse(ds));
    free(ds);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static int save(Model *m, Optimizer *opt, BatchSource *train, const char *path) {
    size_t n = m->layout.total;
    real *mh = malloc(sizeof(real) * n), *vh = malloc(sizeof(real) * n);
    if (!mh || !vh) { free(mh); free(vh); return fh_error("out of memory saving a checkpoint"); }
    m->ops->to_host(mh, opt->m, sizeof(real) * n);
    m->ops->to_host(vh, opt->v, sizeof(real) * n);
    char *st = trainer_state(opt, train);
    OptimizerView view = {mh, vh};
    int rc = checkpoint_save(path, m, view, st);
    free(st); free(mh); free(vh);
    return rc;
}

static int resume_from(Model *m, Optimizer *opt, BatchSource *train, const char *path) {
    size_t n = m->layout.total;
    real *mh = malloc(sizeof(real) * n), *vh = malloc(sizeof(real) * n);
    char *st = NULL;
    if (!mh || !vh) { free(mh); free(vh); return fh_error("out of memory"); }
    int rc = checkpoint_load(path, m, mh, vh, &st);
    if (!rc) {
        m->ops->from_host(opt->m, mh, sizeof(real) * n);
        m->ops->from_host(opt->v, vh, sizeof(real) * n);
        cJSON *o = st ? cJSON_Parse(st) : NULL;
        cJSON *step = o ? cJSON_GetObjectItemCaseSensitive(o, "step") : NULL;
        if (!cJSON_IsNumber(step)) rc = fh_error("%s: checkpoint has no trainer step (weights-only export?)", path);
        else {
            opt->step = (int)step->valuedouble;
            cJSON *data = cJSON_GetObjectItemCaseSensitive(o, "data");
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

    Optimizer opt;
    AdamWConfig oc = o->opt;
    oc.total_steps = o->steps;
    if (optimizer_create(&opt, m, &oc)) return -1;
    if (o->resume && resume_from(m, &opt, train, o->resume)) { optimizer_free(&opt, m); return -1; }
    FILE *log = fopen(logp, o->resume ? "a" : "w");
    if (!log) { optimizer_free(&opt, m); return fh_error("cannot write %s: %s", logp, strerror(errno)); }

    int *tok = malloc(sizeof(int) * (size_t)B * T), *tgt = malloc(sizeof(int) * (size_t)B * T);
    int n_steps = o->steps - opt.step;
    double *xs = calloc(n_steps + 1, sizeof(double)), *ys = calloc(n_steps + 1, sizeof(double));
    double *vx = calloc(n_steps + 2, sizeof(double)), *vy = calloc(n_steps + 2, sizeof(double));
    res->losses = calloc(n_steps + 1, sizeof(double));
    int nv = 0, rc = 0;
    if (!tok || !tgt || !xs || !ys || !vx || !vy || !res->losses) { rc = fh_error("out of memory"); goto done; }
    double t_start = now_s(), tokens_done = 0;
    int first_step = opt.step;
    while (opt.step < o->steps) {
        int step = opt.step;
        double t0 = now_s(), loss_sum = 0;
        model_zero_grad(m);
        for (int a = 0; a < accum; a++) {
            if (train->next(train->ctx, tok, tgt, B, T) || model_forward(m, tok, tgt, B, T)) {
                rc = fh_error("step %d: %s", step + 1, fh_last_error());
                if (o->nan_policy == NAN_SKIP && strstr(fh_last_error(), "not finite")) break;
                goto done;
            }
            if (model_backward(m)) { rc = -1; goto done; }
            loss_sum += m->loss;
        }
        double gnorm = 0;
        if (rc || optimizer_step(&opt, m, 1.0 / accum, &gnorm)) {
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
        double dt = now_s() - t0, loss = loss_sum / accum;
        tokens_done += (double)B * T * accum;
        double tps = tokens_done / (now_s() - t_start);
        int k = step - first_step;
        xs[k] = step + 1; ys[k] = loss; res->losses[k] = loss;
        res->steps_done = k + 1;
        res->last_loss = loss;
        res->tokens_per_s = tps;
        double vloss = NAN;
        if (val && o->val_every > 0 && ((step + 1) % o->val_every == 0 || step + 1 == o->steps)) {
            char *vs = val->state ? val->state(val->ctx) : NULL;   /* same validation batches every time */
            if (evaluate_loss(m, val, o->val_batches, B, T, &vloss)) { free(vs); rc = -1; goto done; }
            if (vs && val->restore) val->restore(val->ctx, vs);
            free(vs);
            vx[nv] = step + 1; vy[nv++] = vloss;
            res->last_val_loss = vloss;
        }
        fprintf(log, "{\"step\": %d, \"loss\": %.6f, \"lr\": %.6g, \"grad_norm\": %.4f, \"tokens_per_s\": %.1f, "
                     "\"step_ms\": %.1f", step + 1, loss, lr_at(&opt.cfg, step), gnorm, tps, dt * 1e3);
        if (isfinite(vloss)) fprintf(log, ", \"val_loss\": %.6f", vloss);
        fprintf(log, "}\n");
        fflush(log);
        if (!o->quiet) {
            char eta[32];
            fmt_eta(eta, sizeof eta, (o->steps - step - 1) * (now_s() - t_start) / (k + 1));
            fprintf(stderr, "\rstep %5d/%d | loss %.4f%s | lr %.2e | %6.0f tok/s | ETA %s   ", step + 1, o->steps, loss,
                    "", lr_at(&opt.cfg, step), tps, eta);
            if (isfinite(vloss)) fprintf(stderr, "\n  validation loss %.4f at step %d\n", vloss, step + 1);
        }
        int last = opt.step == o->steps || (o->stop_after && opt.step >= o->stop_after);
        if ((o->ckpt_every > 0 && opt.step % o->ckpt_every == 0) || last) {
            if (save(m, &opt, train, ckpt)) { rc = -1; goto done; }
        }
        if (o->stop_after && opt.step >= o->stop_after) break;
    }
    if (!o->quiet) fprintf(stderr, "\n");
    {
        PlotSeries s[2] = {{"train loss", "#1f77b4", xs, ys, res->steps_done}, {"validation loss", "#d62728", vx, vy, nv}};
        const char *lab[1] = {"unigram baseline"};
        double base = o->baseline_loss;
        if (plot_svg(svg, "flowhn training", "step", "loss (nats/token)", s, nv ? 2 : 1, &base, lab, base > 0 ? 1 : 0))
            rc = -1;
    }
done:
    if (log) fclose(log);
    free(tok); free(tgt); free(xs); free(ys); free(vx); free(vy);
    optimizer_free(&opt, m);
    return rc;
}
