#!/usr/bin/env bash
# compute-sanitizer racecheck over a test binary, one case per process.
#
#   tools/gpu/racecheck_cases.sh BINARY [LOGDIR]      (on a GPU machine; prints one table row per case)
#   RACECHECK_CASES=a,b,...   only these cases (names as FLOWHN_TEST_LIST=1 BINARY prints them)
#   RACECHECK_TIMEOUT=s       seconds per case (default 120)
#   RACECHECK_EXCLUDE="a b"   kernel-name substrings left out (default "nvjet cudnn_generated", see below)
#
# The two runs `make test-cuda-sanitize` makes:
#   tools/gpu/racecheck_cases.sh build/tests/test_cuda runs/racecheck            (every op case)
#   RACECHECK_CASES=copy_rows,conv1d_step,attention_decode \
#       tools/gpu/racecheck_cases.sh build/tests/test_cuda_decode runs/racecheck-decode
# (test_cuda_decode's other cases run whole generators, bf16 products included.)
#
# Why one per process: compute-sanitizer stops with "Internal Sanitizer Error ... failed to handle a
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
# one inside cuDNN's sdpa kernels, none in ours).
# Exit status 1 if any case reports a hazard or fails; sanitizer internal errors are listed, not counted.
set -uo pipefail
BIN=$1; LOGS=${2:-runs/racecheck}; mkdir -p "$LOGS"
bad=0
cases=$(FLOWHN_TEST_LIST=1 FLOWHN_TEST_QUICK=1 "$BIN" | awk '$1 == "case" {print $2}' | tr '\n' ' ')
if [ -n "${RACECHECK_CASES:-}" ]; then
    want=" $(echo "$RACECHECK_CASES" | tr ',' ' ') "
    sel=""
    for c in $cases; do case "$want" in *" $c "*) sel="$sel $c";; esac; done
    for c in $(echo "$RACECHECK_CASES" | tr ',' ' '); do
        case " $cases " in *" $c "*) ;; *) echo "| racecheck $c | not a case of $BIN |"; bad=1;; esac
    done
    cases=$sel
fi
excl=()
for k in ${RACECHECK_EXCLUDE-nvjet cudnn_generated}; do excl+=(--kernel-name-exclude "kns=$k"); done
for c in $cases; do
    FLOWHN_TEST_ONLY=$c FLOWHN_TEST_QUICK=1 timeout "${RACECHECK_TIMEOUT:-120}" compute-sanitizer --tool racecheck \
        "${excl[@]}" --error-exitcode 1 "$BIN" > "$LOGS/racecheck-$c.log" 2>&1
    rc=$?
    if grep -q "Internal Sanitizer Error" "$LOGS/racecheck-$c.log"; then r="sanitizer internal error (not ours to fix)"
    elif [ $rc = 124 ]; then r="timed out after ${RACECHECK_TIMEOUT:-120} s: no result (raise RACECHECK_TIMEOUT)"; bad=1
    else
        r="rc $rc, $(grep -h 'RACECHECK SUMMARY' "$LOGS/racecheck-$c.log" | sed 's/=* *//'), $(grep -ah '^RESULT' "$LOGS/racecheck-$c.log")"
        [ $rc = 0 ] || bad=1
    fi
    echo "| racecheck $c | $r |"
done
exit $bad
