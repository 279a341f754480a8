/* cmd_train.c - `flowhn train`: a config and token shards in, a trained
 * checkpoint, a JSON-lines log and a loss plot out; resumable. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/error.h"
#include "../dist/dist.h"
#include "../train/data_source.h"
#include "../model/flops.h"
#include "../model/memory.h"
#include "../train/checkpoint.h"
#include "../train/trainer.h"
#include "../ops/backend.h"
#include "args.h"
#include "commands.h"

static void usage(void) {
    fprintf(stderr,
            "usage: flowhn train --config FILE --data DIR --out DIR [options]\n"
            "  --config FILE       model config (configs/*.json)\n"
            "  --data DIR          token shards from `flowhn prepare` (train_*.bin, val_*.bin)\n"
            "  --out DIR           checkpoint.bin, log.jsonl and loss.svg are written here\n"
            "  --steps N           optimizer steps (default 200)\n"
            "  --batch B           sequences per micro-batch (default 8)\n"
            "  --seq-len T         tokens per sequence (default: max_position_embeddings)\n"
            "  --accum A           micro-batches per step (default 1)\n"
            "  --lr X              peak learning rate (default 3e-4); --min-lr X (default lr/10)\n"
            "  --warmup N          warm-up steps (default 10%% of steps)\n"
            "  --weight-decay X    AdamW decoupled weight decay on matrices (default 0.1)\n"
            "  --grad-clip X       global gradient-norm clip, 0 = off (default 1.0)\n"
            "  --val-every N       validation loss every N steps (default 50); --val-batches N (default 8)\n"
            "  --ckpt-every N      checkpoint every N steps (default: at the end only)\n"
            "  --stop-after N      stop with a checkpoint once N steps are done (the schedule still spans --steps)\n"
            "  --resume FILE       continue from a checkpoint (same config required)\n"
            "  --seed S            parameter initialisation seed (default 1)\n"
            "  --on-nan stop|skip  a NaN/Inf loss or gradient stops the run, or skips the update\n"
            "  --device cpu|cuda   backend (default cpu; cuda needs the CUDA build, build/flowhn-cuda)\n"
            "  --precision P       matrix products: fp32 (default), tf32 or bf16 (CUDA only)\n"
            "  --graph             CUDA, --accum 1, one GPU: record the whole step once as a CUDA graph and\n"
            "                      replay it (the default there; also FLOWHN_GRAPH=1)\n"
            "  --no-graph          the original step (host reads of the loss and norm inside it; the default on\n"
            "                      the CPU, with --accum > 1 and on several GPUs); also FLOWHN_NO_GRAPH=1\n"
            "  --gpus N            data-parallel over N GPUs of this node, one process each (--batch is per GPU);\n"
            "                      under mpirun/srun the ranks come from the environment instead\n"
            "  --overlap           several GPUs: reduce the gradients in buckets while the backward runs (also\n"
            "                      FLOWHN_OVERLAP=1; opt-in until it has run on several GPUs; the default is one\n"
            "                      reduce-scatter after the backward, --no-overlap); FLOWHN_BUCKET_MB sets the\n"
            "                      bucket size (default 25)\n");
}

int cmd_train(int argc, char **argv) {
    const char *cfg_path = NULL, *data = NULL, *out = NULL, *resume = NULL, *device = "cpu", *precision = "fp32";
    int steps = 200, batch = 8, seq = 0, accum = 1, warmup = -1, val_every = 50, val_batches = 8, ckpt_every = 0;
    int seed = 1, gpus = 1, stop_after = 0, overlap = 0, graph = 0;
    double lr = 3e-4, min_lr = -1, wd = 0.1, clip = 1.0;
    NanPolicy nan = NAN_STOP;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help")) { usage(); return 0; }
        if (!strcmp(a, "--no-graph")) { graph = -1; continue; }
        if (!strcmp(a, "--graph")) { graph = 1; continue; }
        if (!strcmp(a, "--no-overlap")) { overlap = 0; continue; }   /* flags: no value */
        if (!strcmp(a, "--overlap")) { overlap = 1; continue; }
        if (!(v = arg_value("train", argc, argv, &i))) return 2;
        int bad = 0;
        if (!strcmp(a, "--config")) cfg_path = v;
        else if (!strcmp(a, "--data")) data = v;
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--resume")) resume = v;
        else if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--precision")) precision = v;
        else if (!strcmp(a, "--steps")) bad = arg_int("train", a, v, 1, 1 << 30, &steps);
        else if (!strcmp(a, "--batch")) bad = arg_int("train", a, v, 1, 1 << 20, &batch);
        else if (!strcmp(a, "--seq-len")) bad = arg_int("train", a, v, 1, 1 << 24, &seq);
        else if (!strcmp(a, "--accum")) bad = arg_int("train", a, v, 1, 1 << 20, &accum);
        else if (!strcmp(a, "--warmup")) bad = arg_int("train", a, v, 0, 1 << 30, &warmup);
        else if (!strcmp(a, "--val-every")) bad = arg_int("train", a, v, 0, 1 << 30, &val_every);
        else if (!strcmp(a, "--val-batches")) bad = arg_int("train", a, v, 1, 1 << 20, &val_batches);
        else if (!strcmp(a, "--ckpt-every")) bad = arg_int("train", a, v, 0, 1 << 30, &ckpt_every);
        else if (!strcmp(a, "--stop-after")) bad = arg_int("train", a, v, 1, 1 << 30, &stop_after);
        else if (!strcmp(a, "--gpus")) bad = arg_int("train", a, v, 1, 1024, &gpus);
        else if (!strcmp(a, "--seed")) bad = arg_int("train", a, v, 0, 2147483647, &seed);
        else if (!strcmp(a, "--lr")) bad = arg_double("train", a, v, 0, 10, &lr);
        else if (!strcmp(a, "--min-lr")) bad = arg_double("train", a, v, 0, 10, &min_lr);
        else if (!strcmp(a, "--weight-decay")) bad = arg_double("train", a, v, 0, 10, &wd);
        else if (!strcmp(a, "--grad-clip")) bad = arg_double("train", a, v, 0, 1e9, &clip);
        else if (!strcmp(a, "--on-nan")) {
            if (!strcmp(v, "stop")) nan = NAN_STOP;
            else if (!strcmp(v, "skip")) nan = NAN_SKIP;
            else { fprintf(stderr, "flowhn train: --on-nan must be 'stop' or 'skip', got '%s'\n", v); return 2; }
        } else { fprintf(stderr, "flowhn train: unknown option '%s'\n", a); usage(); return 2; }
        if (bad) return 2;
    }
    if (!cfg_path || !data || !out) { usage(); return 2; }
    /* data parallelism: the launcher's ranks, or ours (--gpus N re-runs this command N times) */
    DistEnv env;
    if (dist_env_read(&env)) { fprintf(stderr, "flowhn train: %s\n", fh_last_error()); return 2; }
    if (gpus > 1 && env.world == 1) {
        if (strcmp(device, "cuda")) { fprintf(stderr, "flowhn train: --gpus needs --device cuda\n"); return 2; }
        return dist_launch(gpus, argc, argv, out);
    }
    if (env.rank != 0 && !freopen("/dev/null", "w", stdout)) return 1;   /* rank 0 reports for all */
    Dist dist;
    if (dist_init(&dist, &env, device, out)) {
        fprintf(stderr, "flowhn train: %s\n", fh_last_error());
        return 1;
    }
    Config c;
    if (config_load(&c, cfg_path)) { fprintf(stderr, "flowhn train: %s\n", fh_last_error()); return 1; }
    if (!seq) seq = c.max_seq_len;
    if (seq > c.max_seq_len) {
        fprintf(stderr, "flowhn train: --seq-len %d exceeds the config's max_position_embeddings %d\n", seq, c.max_seq_len);
        return 2;
    }
    const Backend *be = backend_find(device);
    if (!be) { fprintf(stderr, "flowhn train: --device %s: %s\n", device, fh_last_error()); return 2; }
    if (be->set_matmul_precision(precision)) { fprintf(stderr, "flowhn train: %s\n", fh_last_error()); return 2; }
    /* refused here, before the data is read or anything allocated, when it cannot fit */
    MemoryEstimate mem;
    int est = model_memory_estimate_ranks(&c, batch, seq, MEMORY_TRAIN, env.world, &mem);
    if (!est) memory_add_backend(&mem, be);   /* the bf16 weight copy of CUDA training */
    if (est || memory_check(&mem, be)) {
        fprintf(stderr, "flowhn train: %s\n", fh_last_error());
        return 1;
    }
    ShardSource train_src, val_src;
    if (shard_source_open(&train_src, data, "train", c.vocab_size, env.rank, env.world)) {
        fprintf(stderr, "flowhn train: %s\n", fh_last_error());
        return 1;
    }
    int have_val = shard_source_open(&val_src, data, "val", c.vocab_size, env.rank, env.world) == 0;
    if (!have_val) fprintf(stderr, "flowhn train: no validation shards (%s); training without validation\n", fh_last_error());
    double unigram = have_val ? shard_unigram_baseline(&train_src, &val_src) : 0;

    Model m;
    if (model_create(&m, &c, be->ops) || model_init_params(&m, (uint64_t)seed) ||
        (!resume && env.rank == 0 && model_measure_split(&m, seq, 2, stdout))) {
        fprintf(stderr, "flowhn train: %s\n", fh_last_error());
        return 1;
    }
    if (!resume && env.world > 1 && c.ratio_rule == RATIO_MEASURED) {   /* one measurement, rank 0's, for all */
        double r = env.rank == 0 ? m.cfg.split_ratio : 0;
        if (dist.all_reduce_host(&dist, &r, 1, "broadcast of the measured split")) {
            fprintf(stderr, "flowhn train: %s\n", fh_last_error());
            return 1;
        }
        m.cfg.ratio_rule = RATIO_FIXED;
        m.cfg.split_ratio = r;
    }
    if (resume && m.cfg.ratio_rule == RATIO_MEASURED) {
        /* the checkpoint stores the ratio measured when training started */
        Config ck;
        if (checkpoint_read_config(resume, &ck)) { fprintf(stderr, "flowhn train: %s\n", fh_last_error()); return 1; }
        m.cfg.ratio_rule = ck.ratio_rule;
        m.cfg.split_ratio = ck.split_ratio;
    }
    TrainOptions o;
    memset(&o, 0, sizeof o);
    o.batch_size = batch; o.seq_len = seq; o.grad_accum = accum; o.steps = steps;
    o.val_every = have_val ? val_every : 0; o.val_batches = val_batches; o.ckpt_every = ckpt_every;
    o.out_dir = out; o.resume = resume; o.nan_policy = nan; o.baseline_loss = unigram; o.dist = &dist; o.stop_after = stop_after;
    o.graph = graph;
    o.overlap = overlap;
    adamw_defaults(&o.opt);
    o.opt.lr = lr;
    o.opt.min_lr = min_lr >= 0 ? min_lr : lr / 10;
    o.opt.weight_decay = wd;
    o.opt.grad_clip = clip;
    o.opt.warmup_steps = warmup >= 0 ? warmup : steps / 10;
    printf("device: %s, backend %s, matmul precision %s\n", be->device(), m.ops->name, be->matmul_precision());
    printf("model: %s, %zu parameters (%.2fM); %.3g training FLOPs/token at T=%d\n", arch_name(c.arch),
           m.layout.total, m.layout.total / 1e6, flops_train_per_token(&c, seq), seq);
    char mem_line[512];
    memory_describe(&mem, mem_line, sizeof mem_line);
    printf("memory: estimated %s\n", mem_line);
    printf("data: %s (%ld training tokens)%s", data, shard_source_tokens(&train_src), have_val ? "" : "\n");
    if (have_val) printf(", unigram baseline on validation: %.4f nats/token\n", unigram);
    printf("training %d steps of %d x %d tokens x %d accumulation, lr %.2e, warm-up %d\n", steps, batch, seq, accum, lr,
           o.opt.warmup_steps);
    if (env.world > 1)
        printf("data parallel: %d ranks (%s), global batch %d x %d tokens, ZeRO-1 optimizer shards\n", env.world,
               env.source, env.world * batch * accum, seq);
    fflush(stdout);
    BatchSource tb = shard_batch_source(&train_src), vb = have_val ? shard_batch_source(&val_src) : tb;
    TrainResult r;
    int rc = train_run(&m, &o, &tb, have_val ? &vb : NULL, &r);
    if (rc) fprintf(stderr, "flowhn train: %s\n", fh_last_error());
    if (dist.failed) {   /* the communicator is aborted: leave without touching the device again */
        fflush(stdout);
        _exit(1);
    }
    else {
        printf("done: %d steps, final train loss %.4f", r.steps_done, r.last_loss);
        if (have_val && o.val_every > 0) printf(", validation loss %.4f (unigram baseline %.4f)", r.last_val_loss, unigram);
        printf(", %.0f tokens/s\ncheckpoint: %s/checkpoint.bin\nlog: %s/log.jsonl\nloss plot: %s/loss.svg\n",
               r.tokens_per_s, out, out, out);
    }
    free(r.losses);
    shard_source_close(&train_src);
    if (have_val) shard_source_close(&val_src);
    model_free(&m);
    dist_free(&dist);
    return rc ? 1 : 0;
}
