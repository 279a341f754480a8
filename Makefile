# flowhn - build
#   make            the `flowhn` tool and build/libflowhn.a (fp32 CPU backend)
#   make test       build and run every test (fp32 tests + fp64 gradient checks)
#   make cuda       the CUDA backend (reserved; see src/ops/cuda)
CC      ?= gcc
OPT     ?= -O2
BUILD   ?= build
BIN     ?= flowhn
CFLAGS  += -std=c11 $(OPT) $(SAN) -g -Wall -Wextra -Wno-unused-parameter -fopenmp -D_GNU_SOURCE -MMD -MP \
           -I/usr/include/cjson -I/usr/include/x86_64-linux-gnu
LDLIBS  += -lopenblas -lcjson -lm -ldl
LDFLAGS += -fopenmp $(SAN)
# Prefer OpenBLAS's OpenMP build (Debian: libopenblas-openmp-dev): it shares
# the OpenMP thread pool with our ops instead of fighting it with its own
# pthreads (measured 1.6x faster training on 2 cores, docs/perf-notes.md).
BLAS_DIR ?= $(firstword $(wildcard /usr/lib/*/openblas-openmp))
ifneq ($(BLAS_DIR),)
LDFLAGS += -L$(BLAS_DIR) -Wl,-rpath,$(BLAS_DIR)
endif

LIB_SRC  := $(sort $(wildcard src/core/*.c src/ops/*.c src/ops/cpu/*.c src/model/*.c src/train/*.c src/data/*.c src/infer/*.c src/dist/*.c))
CLI_SRC  := $(sort $(wildcard src/cli/*.c))
TEST_SRC := $(sort $(wildcard tests/test_*.c))
GRAD_SRC := $(sort $(wildcard tests/grad_*.c))
TEST_HELPERS := $(sort $(wildcard tests/helpers/*.c))

OBJ32 := $(LIB_SRC:%.c=$(BUILD)/f32/%.o)
OBJ64 := $(LIB_SRC:%.c=$(BUILD)/f64/%.o)
HELP32 := $(TEST_HELPERS:%.c=$(BUILD)/f32/%.o)
HELP64 := $(TEST_HELPERS:%.c=$(BUILD)/f64/%.o)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%) $(GRAD_SRC:tests/%.c=$(BUILD)/tests/%)

.PHONY: all test tests clean cuda asan test-cuda test-cuda-sanitize
# keep test objects (no "rm" after the run, faster rebuilds)
.SECONDARY:
all: $(BIN) $(BUILD)/libflowhn.a

$(BUILD)/f32/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@
$(BUILD)/f64/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DFLOWHN_REAL_DOUBLE -c $< -o $@

$(BUILD)/libflowhn.a: $(OBJ32)
	@rm -f $@; ar rcs $@ $^
$(BUILD)/libflowhn_f64.a: $(OBJ64)
	@rm -f $@; ar rcs $@ $^

$(BIN): $(CLI_SRC:%.c=$(BUILD)/f32/%.o) $(BUILD)/libflowhn.a
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

# fp32 tests link the float library; grad_* tests link the double build.
$(BUILD)/tests/test_%: $(BUILD)/f32/tests/test_%.o $(HELP32) $(BUILD)/libflowhn.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)
$(BUILD)/tests/grad_%: $(BUILD)/f64/tests/grad_%.o $(HELP64) $(BUILD)/libflowhn_f64.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

# a rank of the rendezvous tests (tests/py/test_dist_mpi.py runs it under mpirun)
$(BUILD)/tests/rendezvous_probe: $(BUILD)/f32/tests/probe/rendezvous_probe.o $(BUILD)/libflowhn.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

tests: $(TEST_BIN) $(BIN) $(BUILD)/tests/rendezvous_probe
test: tests
	@FLOWHN=$(abspath $(BIN)) FLOWHN_BUILD=$(abspath $(BUILD)) sh tools/run_tests.sh $(TEST_BIN)

# The whole CPU test-suite under AddressSanitizer + UndefinedBehaviorSanitizer
# (its own build tree and binary; any report fails the run).
asan:
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  $(MAKE) --no-print-directory BUILD=build-asan BIN=build-asan/flowhn OPT="-O1" \
	  SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" test

cuda:
	$(MAKE) -f src/ops/cuda/cuda.mk

# On a GPU machine: every CUDA op against the CPU op, the whole model (fp32 and
# bf16) against the CPU, the generator, the training step replayed as a CUDA
# graph against op by op, then compute-sanitizer memcheck and racecheck on the
# op tests (FLOWHN_TEST_QUICK=1 drops the long T=1024 shapes under the sanitizer).
CUDA_TESTS = build/tests/test_cuda build/tests/test_cuda_model build/tests/test_cuda_decode build/tests/test_cuda_graph
test-cuda: cuda
	@FLOWHN_NO_PY_TESTS=1 sh tools/run_tests.sh $(CUDA_TESTS)
	@# the recorded step again with FlowHN/Hymba's branches on two streams (fork/join recorded as graph edges)
	FLOWHN_BRANCH_STREAMS=1 build/tests/test_cuda_graph
# memcheck and racecheck run one case per process; racecheck skips cuBLAS's and cuDNN's own Hopper
# kernels (nvjet_*, sm90_xmma_*, cutlass, cudnn_generated_*): see tools/gpu/sanitize_cases.sh for why, and docs/perf-notes.md
# "Racecheck coverage" for which of our kernels each case covers (the *_rc variants avoid cuBLASLt's
# bf16/tf32 kernels, which stop the sanitizer). All four runs go on after a failure; the target fails if any did.
test-cuda-sanitize: cuda
	rc=0; export SANITIZE_TIMEOUT=300; \
	tools/gpu/sanitize_cases.sh memcheck build/tests/test_cuda runs/memcheck || rc=1; \
	SANITIZE_TIMEOUT=600 tools/gpu/sanitize_cases.sh racecheck build/tests/test_cuda runs/racecheck || rc=1; \
	tools/gpu/sanitize_cases.sh memcheck build/tests/test_cuda_decode runs/memcheck-decode || rc=1; \
	SANITIZE_CASES=copy_rows,conv1d_step,attention_decode \
	  tools/gpu/sanitize_cases.sh racecheck build/tests/test_cuda_decode runs/racecheck-decode || rc=1; \
	exit $$rc

clean:
	rm -rf build build-asan flowhn

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
