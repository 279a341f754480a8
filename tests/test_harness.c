/* test_harness.c - the harness's case selection (tests/test.h): FLOWHN_TEST_ONLY,
 * FLOWHN_TEST_SKIP and FLOWHN_TEST_LIST, which the GPU scripts use to run one
 * case per process under compute-sanitizer (tools/gpu/session.sh sanitize). */
#include "test.h"

static int ran_a, ran_b, ran_c;
static void case_a(void) { ran_a++; }
static void case_b(void) { ran_b++; }
static void case_c(int *n) { (*n)++; ran_c++; }

static void only_runs_the_named_cases(void) {
    int before_pass = t_cases_pass, n = 0;
    setenv("FLOWHN_TEST_ONLY", "case_b,case_c(two)", 1);
    RUN(case_a);
    RUN(case_b);
    RUN_ARG(case_c, &n, "one");
    RUN_ARG(case_c, &n, "two");
    unsetenv("FLOWHN_TEST_ONLY");
    CHECK(ran_a == 0 && ran_b == 1 && ran_c == 1 && n == 1, "ran a %d, b %d, c %d", ran_a, ran_b, ran_c);
    CHECK(t_cases_pass == before_pass + 2, "%d cases counted, want 2", t_cases_pass - before_pass);
    t_cases_pass = before_pass;   /* the selected cases are not this binary's own */
}

static void skip_leaves_out_the_named_cases(void) {
    int before_pass = t_cases_pass;
    ran_a = ran_b = 0;
    setenv("FLOWHN_TEST_SKIP", "case_a", 1);
    RUN(case_a);
    RUN(case_b);
    unsetenv("FLOWHN_TEST_SKIP");
    CHECK(ran_a == 0 && ran_b == 1, "ran a %d, b %d", ran_a, ran_b);
    t_cases_pass = before_pass;
}

static void list_runs_nothing(void) {
    int before_pass = t_cases_pass, before_fail = t_cases_fail;
    ran_a = ran_b = 0;
    setenv("FLOWHN_TEST_LIST", "1", 1);
    RUN(case_a);
    RUN(case_b);
    unsetenv("FLOWHN_TEST_LIST");
    CHECK(ran_a == 0 && ran_b == 0, "listing ran a %d, b %d", ran_a, ran_b);
    CHECK(t_cases_pass == before_pass && t_cases_fail == before_fail, "listing counted cases");
}

int main(void) {
    /* the environment may select this binary's own cases; clear it first */
    unsetenv("FLOWHN_TEST_ONLY");
    unsetenv("FLOWHN_TEST_SKIP");
    unsetenv("FLOWHN_TEST_LIST");
    RUN(only_runs_the_named_cases);
    RUN(skip_leaves_out_the_named_cases);
    RUN(list_runs_nothing);
    TEST_SUMMARY();
}
