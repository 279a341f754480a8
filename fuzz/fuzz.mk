# fuzz/fuzz.mk - libFuzzer targets for the parsers of outside input
# (fuzz/fuzz_*.c; clang with -fsanitize=fuzzer,address,undefined).
#   make -f fuzz/fuzz.mk fuzz FUZZ_SECONDS=60   build, then run each target for FUZZ_SECONDS
#   make -f fuzz/fuzz.mk fuzz-build             build only: build-fuzz/fuzz_<target>
# A run starts from fuzz/corpus/<target> (read only) and grows
# build-fuzz/corpus/<target>. A crash, leak, timeout or sanitizer report fails
# the run, and its input is copied to fuzz/regressions/<target>/ so that
# tests/test_fuzz_regressions.c replays it in the normal build once fixed.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_BUILD   ?= build-fuzz
FUZZ_TARGETS := config tokenizer_json shard checkpoint safetensors eval_jsonl cli
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
# no -fopenmp: one thread per input keeps runs reproducible (pragmas ignored)
FUZZ_CFLAGS  := -std=c11 -O1 -g $(FUZZ_SAN) -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter \
                -Wno-unknown-pragmas -I/usr/include/cjson -I/usr/include/x86_64-linux-gnu
FUZZ_LDLIBS  := -lopenblas -lcjson -lm -ldl

FUZZ_LIB_SRC := $(sort $(wildcard src/core/*.c src/ops/cpu/*.c src/model/*.c src/train/*.c src/data/*.c src/infer/*.c src/dist/*.c))
FUZZ_OBJ     := $(FUZZ_LIB_SRC:%.c=$(FUZZ_BUILD)/obj/%.o)
FUZZ_BINS    := $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)

.PHONY: fuzz fuzz-build
.SECONDARY:

fuzz-build: $(FUZZ_BINS)

$(FUZZ_BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC $<"; $(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(FUZZ_BUILD)/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz_common.h $(FUZZ_OBJ)
	@echo "  LINK $@"; $(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $< $(FUZZ_OBJ) -o $@ $(FUZZ_LDLIBS)

# One target after another; prints executions per target and fails if any found something.
fuzz: $(FUZZ_BINS)
	@fail=0; \
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_BUILD)/corpus/$$t $(FUZZ_BUILD)/artifacts/$$t $(FUZZ_BUILD)/logs; \
	  rm -f $(FUZZ_BUILD)/artifacts/$$t/*; \
	  OPENBLAS_NUM_THREADS=1 ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	    $(FUZZ_BUILD)/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	    -close_fd_mask=3 -print_final_stats=1 -artifact_prefix=$(abspath $(FUZZ_BUILD))/artifacts/$$t/ \
	    $(abspath $(FUZZ_BUILD))/corpus/$$t $(abspath fuzz/corpus)/$$t > $(FUZZ_BUILD)/logs/$$t.log 2>&1; rc=$$?; \
	  runs=$$(sed -n 's/^stat::number_of_executed_units: *//p' $(FUZZ_BUILD)/logs/$$t.log | tail -1); \
	  found=$$(ls $(FUZZ_BUILD)/artifacts/$$t | wc -l); \
	  printf '%-16s %10s executions in %ss, exit %d, %d finding(s)\n' $$t "$${runs:-?}" $(FUZZ_SECONDS) $$rc $$found; \
	  if [ $$rc -ne 0 ] || [ $$found -ne 0 ]; then \
	    fail=1; mkdir -p fuzz/regressions/$$t; cp $(FUZZ_BUILD)/artifacts/$$t/* fuzz/regressions/$$t/ 2>/dev/null; \
	    grep -A25 -m1 -E '^==[0-9]+==ERROR|runtime error|ERROR: libFuzzer' $(FUZZ_BUILD)/logs/$$t.log; \
	    echo "   log: $(FUZZ_BUILD)/logs/$$t.log; input(s) copied to fuzz/regressions/$$t/"; \
	  fi; \
	done; \
	[ $$fail -eq 0 ] && echo "fuzz: no findings" || { echo "fuzz: FAILED"; exit 1; }

-include $(shell find $(FUZZ_BUILD)/obj -name '*.d' 2>/dev/null)
