/* eval.h - zero-shot evaluation by log-likelihood.
 *
 * Multiple choice (JSON lines with "Query", "Choices", "label"): each choice is
 * scored by the summed log-probability of its tokens given the context;
 * accuracy of the argmax, and of the argmax after dividing by the choice's
 * length in bytes (acc_norm, as lm-evaluation-harness). Two layouts exist:
 *   - standard (PIQA, BoolQ, ...): context = Query, continuation = each choice,
 *     label = 0-based integer;
 *   - partial (WinoGrande as shipped): context = each choice, continuation =
 *     Query, label = "1"/"2" (1-based string). Detected per line from the label.
 * LAMBADA ("Query" + target word "label"): exact greedy match of every target
 * token, and the target's mean log-likelihood / perplexity. */
#ifndef FLOWHN_EVAL_H
#define FLOWHN_EVAL_H

#include "../data/tokenizer.h"
#include "../model/model.h"
#include "../train/trainer.h"

typedef struct {
    int n;                  /* items scored */
    int correct, correct_norm;
    double acc, acc_norm;
} ChoiceResult;

typedef struct {
    int n, correct;
    double acc, mean_logprob, ppl;   /* ppl = exp(-total logprob / target tokens) */
} LambadaResult;

/* log p(continuation | context) summed over the continuation's tokens, and
 * its token count. Contexts longer than the model's window are cut on the left. */
int score_continuation(Model *m, const Tokenizer *tok, const char *context, const char *continuation,
                       double *logprob, int *n_tokens, int *greedy_match);

/* limit <= 0: every line. progress: print a progress line to stderr. */
int eval_choices(Model *m, const Tokenizer *tok, const char *path, int limit, int progress, ChoiceResult *r);
int eval_lambada(Model *m, const Tokenizer *tok, const char *path, int limit, int progress, LambadaResult *r);

/* Validation loss by position: n_batches batches of B x T from src, the
 * per-token losses summed in K equal buckets of the input position t in
 * 0..T-1 (bucket i holds t in [i*T/K, (i+1)*T/K); the loss at t is that of
 * predicting token t+1). Fills bucket_sum[K] and bucket_count[K] (summed
 * losses and counted targets) and *loss, the mean over all counted targets
 * (the count-weighted mean of the buckets). 1 <= K <= T. 0 or -1. */
int eval_loss_by_position(Model *m, BatchSource *src, int n_batches, int B, int T, int K, double *bucket_sum,
                          long *bucket_count, double *loss);

#endif
