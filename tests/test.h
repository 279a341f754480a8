/* test.h - a tiny test harness.
 *
 * A test binary is a list of cases: RUN(fn) runs one, which fails if any
 * CHECK inside it fails. TEST_SUMMARY() prints "RESULT <p> passed, <f> failed"
 * (one count per case), which tools/run_tests.sh adds up. */
#ifndef FLOWHN_TEST_H
#define FLOWHN_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int t_cases_pass, t_cases_fail, t_case_failed;

/* 1 if the comma-separated list in environment variable `var` names `name` */
static int t_listed(const char *var, const char *name) {
    const char *list = getenv(var);
    size_t n = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == n && !strncmp(p, name, n)) return 1;
        p = e ? e + 1 : p + l;
    }
    return 0;
}

/* Which cases run, by their printed name (fn, or fn(label)); a case left out
 * counts neither way:
 *   FLOWHN_TEST_LIST=1            print "case <name>" for each case, run none
 *   FLOWHN_TEST_ONLY=name,...     run only these (e.g. one case per process,
 *                                 so that a sanitizer that dies in one case
 *                                 does not take the others with it)
 *   FLOWHN_TEST_SKIP=name,...     leave these out, printing "skip <name>" */
static int t_skipped(const char *name) {
    const char *l = getenv("FLOWHN_TEST_LIST");
    if (l && !strcmp(l, "1")) {
        printf("case %s\n", name);
        return 1;
    }
    if (getenv("FLOWHN_TEST_ONLY") && !t_listed("FLOWHN_TEST_ONLY", name)) return 1;
    if (t_listed("FLOWHN_TEST_SKIP", name)) {
        printf("skip %s (FLOWHN_TEST_SKIP)\n", name);
        return 1;
    }
    return 0;
}

#define CHECK(cond, ...)                                                  \
    do {                                                                  \
        if (!(cond)) {                                                    \
            t_case_failed = 1;                                            \
            printf("    check failed %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            printf(__VA_ARGS__);                                          \
            printf("\n");                                                 \
        }                                                                 \
    } while (0)

#define RUN(fn)                                                           \
    do {                                                                  \
        if (t_skipped(#fn)) break;                                        \
        t_case_failed = 0;                                                \
        fn();                                                             \
        if (t_case_failed) { t_cases_fail++; printf("FAIL %s\n", #fn); }  \
        else { t_cases_pass++; printf("ok   %s\n", #fn); }                \
        fflush(stdout);                                                   \
    } while (0)

/* RUN_ARG(fn, arg, label): one case per argument, named by a string */
#define RUN_ARG(fn, arg, label)                                           \
    do {                                                                  \
        char t_name_[320];                                                \
        snprintf(t_name_, sizeof t_name_, "%s(%.200s)", #fn, label);      \
        if (t_skipped(t_name_)) break;                                    \
        t_case_failed = 0;                                                \
        fn(arg);                                                          \
        if (t_case_failed) { t_cases_fail++; printf("FAIL %s(%s)\n", #fn, label); } \
        else { t_cases_pass++; printf("ok   %s(%s)\n", #fn, label); }    \
        fflush(stdout);                                                   \
    } while (0)

#define TEST_SUMMARY()                                                    \
    do {                                                                  \
        printf("RESULT %d passed, %d failed\n", t_cases_pass, t_cases_fail); \
        return t_cases_fail ? 1 : 0;                                      \
    } while (0)

#endif
