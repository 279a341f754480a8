#!/usr/bin/env bash
# compute-sanitizer (racecheck or memcheck) over a test binary, one case per process.
#
#   tools/gpu/sanitize_cases.sh TOOL BINARY [LOGDIR]   (on a GPU machine; TOOL racecheck or memcheck;
#                                                       prints one table row per case, in the binary's order)
#   SANITIZE_CASES=a,b,...   only these cases (names as FLOWHN_TEST_LIST=1 BINARY prints them)
#   SANITIZE_TIMEOUT=s       seconds per case (default 120); a case past it is a row saying so, and a failure
#   SANITIZE_EXCLUDE="a b"   racecheck: kernel-name substrings left out (default: cuBLAS's and cuDNN's own kernels,
#                            "nvjet cudnn_generated xmma cutlass gemm splitKreduce", see below)
#   SANITIZE_BUDGET=s        seconds for the whole sweep (default none): no case starts once it is spent, each
#                            case's timeout is cut to what is left, and a case not run is a row saying so (a
#                            failure), so a sweep inside a device call ends with its table instead of being killed
#   SANITIZE_LANES=n         cases run at once (default 1). Session 14 ran two and three lanes on one H200:
#                            more cases finish, each slower (give the slow ones a larger timeout)
#
# The runs `make test-cuda-sanitize` makes:
#   tools/gpu/sanitize_cases.sh memcheck build/tests/test_cuda runs/memcheck           (every op case)
#   tools/gpu/sanitize_cases.sh racecheck build/tests/test_cuda runs/racecheck         (every op case)
#   tools/gpu/sanitize_cases.sh memcheck build/tests/test_cuda_decode runs/memcheck-decode
#   SANITIZE_CASES=copy_rows,conv1d_step,attention_decode \
#       tools/gpu/sanitize_cases.sh racecheck build/tests/test_cuda_decode runs/racecheck-decode
# (test_cuda_decode's other cases run whole generators, bf16 products included: memcheck only.)
#
# Why racecheck one case per process: compute-sanitizer stops with "Internal Sanitizer Error ... failed to handle a
# hardware exception" in cases that run cuBLASLt's tf32/bf16 Hopper kernels (H200, sessions 4-6:
# test_linear_precision, test_linear_gemv, test_classifier, test_adamw_copy; test_decode_fused's
# composition shapes run the same products), and every later case in that process then failed with it.
# Alone, each case's result is its own. Those cases stay in the run (listed, not counted: a newer
# sanitizer may get through them); their *_rc variants (test_linear_gemv_rc, test_decode_fused_rc,
# test_adamw_copy_rc) and test_classifier_rows / test_classifier_fp32 check the same kernels of ours
# against the CPU without entering cuBLASLt's bf16/tf32 kernels (docs/perf-notes.md, "Racecheck
# coverage"). test_bf16_d16_rc does so for the readers of the products' bf16 D (session 13: test_bf16_dact,
# test_bf16_dnorm, test_bf16_dnorm_att, test_bf16_resid run them only after a bf16 product): D is installed
# by linear.cu's test hook cuda_test_d16_install instead (perf-notes "Racecheck coverage, session 13", which
# lists every kernel since session 10 and its product-free case). cuBLASLt's nvjet_* kernels and cuDNN's
# generated attention kernels (cudnn_generated_fort_native_sdpa_*) are excluded: they synchronise shared memory
# with TMA mbarriers and wgmma fences, which racecheck does not model (session 14: 2 to 412 reports a case, every
# one inside cuDNN's sdpa kernels, none in ours). So are cuBLAS's other kernels (sm90_xmma_gemm_*, cutlass::*,
# gemm*, splitKreduce_kernel): session 15's test_linear_precision ran 480 s inside its tf32 products without a
# result; with them left out it reached its bf16 products (and the internal error) in 26 s. No kernel of ours has
# any of these substrings in its name (grep __global__ src/ops/cuda); racecheck is for ours.
# Racecheck times (session 15, H200, one case alone): test_ssd_tc 458 s (tensor-core tiles in shared memory), the
# rest under 150 s: give racecheck a timeout of 600.
# Why memcheck one case per process too: a whole quick test_cuda under memcheck outgrew one device call
# (session 14: 29 of 73 cases in 305 s beside two racecheck lanes); alone, a case that runs long costs only
# its own row.
#
# Exit status 1 if any case reports a hazard or a memory error, fails or times out; sanitizer internal errors
# are listed, not counted.
set -uo pipefail
TOOL=${1:-}; BIN=${2:-}
case "$TOOL" in racecheck|memcheck) ;; *)
    echo "sanitize_cases: the first argument is the tool, racecheck or memcheck (got '$TOOL')" >&2; exit 2;; esac
[ -x "$BIN" ] || { echo "sanitize_cases: no test binary '$BIN' (build it with make cuda)" >&2; exit 2; }
LOGS=${3:-runs/$TOOL}; mkdir -p "$LOGS"
TO=${SANITIZE_TIMEOUT:-120}
cases=$(FLOWHN_TEST_LIST=1 FLOWHN_TEST_QUICK=1 "$BIN" | awk '$1 == "case" {print $2}' | awk '!seen[$0]++' | tr '\n' ' ')
bad=0
if [ -n "${SANITIZE_CASES:-}" ]; then
    want=" $(echo "$SANITIZE_CASES" | tr ',' ' ') "
    sel=""
    for c in $cases; do case "$want" in *" $c "*) sel="$sel $c";; esac; done
    for c in $(echo "$SANITIZE_CASES" | tr ',' ' '); do
        case " $cases " in *" $c "*) ;; *) echo "| $TOOL $c | not a case of $BIN |"; bad=1;; esac
    done
    cases=$sel
fi
opts=(--tool "$TOOL" --error-exitcode 1)
if [ "$TOOL" = racecheck ]; then
    for k in ${SANITIZE_EXCLUDE-nvjet cudnn_generated xmma cutlass gemm splitKreduce}; do opts+=(--kernel-name-exclude "kns=$k"); done
fi
START=$SECONDS
budget_left() { if [ -n "${SANITIZE_BUDGET:-}" ]; then echo $((SANITIZE_BUDGET - (SECONDS - START))); else echo "$TO"; fi; }
one() {   # case -> $LOGS/$TOOL-case.row ("ok" or "bad" on its first line, the table row on its second)
    local c=$1 log="$LOGS/$TOOL-$1.log" rc r v=ok to=$TO bl
    bl=$(budget_left); [ "$bl" -lt "$to" ] && to=$bl
    if [ -n "${SANITIZE_BUDGET:-}" ] && [ "$to" -lt 5 ]; then
        printf 'bad\n| %s %s | not started: SANITIZE_BUDGET (%s s) spent |\n' "$TOOL" "$c" "$SANITIZE_BUDGET" > "$LOGS/$TOOL-$c.row"
        return
    fi
    FLOWHN_TEST_ONLY=$c FLOWHN_TEST_QUICK=1 timeout -k 10 "$to" compute-sanitizer "${opts[@]}" "$BIN" > "$log" 2>&1
    rc=$?
    if grep -q "Internal Sanitizer Error" "$log"; then r="sanitizer internal error (not ours to fix)"
    elif [ $rc = 124 ] || [ $rc = 137 ]; then r="timed out after $to s: no result (raise SANITIZE_TIMEOUT or the budget)"; v=bad
    else
        r="rc $rc, $(grep -ah 'RACECHECK SUMMARY\|ERROR SUMMARY' "$log" | sed 's/=* *//'), $(grep -ah '^RESULT' "$log")"
        [ $rc = 0 ] || v=bad
    fi
    printf '%s\n| %s %s | %s |\n' "$v" "$TOOL" "$c" "$r" > "$LOGS/$TOOL-$c.row"
}
lanes=${SANITIZE_LANES:-1}
for c in $cases; do rm -f "$LOGS/$TOOL-$c.row"; done   # no row from an earlier run stands in for this one's
for c in $cases; do
    while [ "$(jobs -rp | wc -l)" -ge "$lanes" ]; do wait -n; done
    one "$c" &
done
wait
for c in $cases; do
    if [ -f "$LOGS/$TOOL-$c.row" ]; then
        sed -n 2p "$LOGS/$TOOL-$c.row"
        [ "$(head -1 "$LOGS/$TOOL-$c.row")" = ok ] || bad=1
    else echo "| $TOOL $c | no row (the run was stopped) |"; bad=1; fi
done
exit $bad
