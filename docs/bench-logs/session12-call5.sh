#!/usr/bin/env bash
# session 12 call 5 (one H200): the review refactor of test_cuda's d16 tests, and test_cuda_model's llamapass on/off
# line with the classifier staging off by default (llama, mamba2 specs). Bundle = main f1eb57e + the review commit.
set -uo pipefail
source .devcarry/bundle/env.sh
FLOWHN_TEST_ONLY=test_inproj_d16,test_dzxd16,test_bf16_att_o,test_classifier_rows timeout 60 $FB/test_cuda > $OUT/t1.log 2>&1; echo "test_cuda rc $?"
grep -E '^(ok|FAIL)|check failed|RESULT' $OUT/t1.log | head -12
FLOWHN_TEST_ARCH=llama,mamba2 timeout 90 $FB/test_cuda_model > $OUT/t2.log 2>&1; echo "test_cuda_model rc $?"
grep -E '^(ok|FAIL)|check failed|RESULT|classifier staging' $OUT/t2.log | head -20 | cut -c1-200
