# cuda.mk - the CUDA backend (run from the repo root: `make cuda`, which does
# `$(MAKE) -f src/ops/cuda/cuda.mk`).
#   build/cuda/libflowhn_cuda.a   the op table cuda_ops (src/ops/cuda/*.cu)
#   build/tests/test_cuda         every CUDA op against the CPU oracle (needs a GPU to run)
#   build/tests/test_cuda_model   the whole model, cpu_ops vs cuda_ops, every architecture (needs a GPU)
#   build/flowhn-cuda             the flowhn tool with the CUDA backend linked in
#                                 (`flowhn-cuda bench --device cuda ...`)
# Everything is found by configuration; override any variable on the command
# line, e.g. `make cuda CUDA_HOME=/opt/cuda NCCL_HOME=/opt/nccl`.
#   CUDA_HOME     default: dirname(dirname(which nvcc)), else /usr/local/cuda
#   CUBLAS_INC/CUBLAS_LIB    cuBLAS + cuBLASLt (default: inside CUDA_HOME)
#   CUDNN_HOME, NCCL_HOME    default: PyTorch's wheels (python3 -c 'import nvidia.cudnn'),
#                            where python3 has them, else CUDA_HOME
#   CUDNN_INC/CUDNN_LIB, NCCL_INC/NCCL_LIB   default: $(X_HOME)/include, $(X_HOME)/lib
#                NCCL is linked by its soname (-l:libnccl.so.2): the wheels ship no libnccl.so link
#   CPU_LIB       the fp32 CPU oracle the test links (default build/libflowhn.a, built
#                 by the top Makefile); point it at a prebuilt copy where the machine
#                 lacks the CPU build's headers (the GPU machines have no cJSON/OpenBLAS)
# `make -f src/ops/cuda/cuda.mk cuda-config` prints what was found.

NVCC_PATH  := $(shell command -v nvcc 2>/dev/null)
CUDA_HOME  ?= $(if $(NVCC_PATH),$(patsubst %/,%,$(dir $(patsubst %/,%,$(dir $(NVCC_PATH))))),/usr/local/cuda)
NVCC       ?= $(CUDA_HOME)/bin/nvcc
CUDA_LIBDIR ?= $(firstword $(wildcard $(CUDA_HOME)/lib64 $(CUDA_HOME)/targets/x86_64-linux/lib $(CUDA_HOME)/lib) $(CUDA_HOME)/lib64)

CUBLAS_INC ?= $(CUDA_HOME)/include
CUBLAS_LIB ?= $(CUDA_LIBDIR)

# PyTorch ships NCCL and cuDNN as Python packages (nvidia.nccl, nvidia.cudnn);
# probe them only when the variables are unset.
py_pkg_dir = $(shell python3 -c "import $(1) as m; print(list(m.__path__)[0])" 2>/dev/null)
ifeq ($(origin CUDNN_HOME),undefined)
CUDNN_HOME := $(or $(call py_pkg_dir,nvidia.cudnn),$(CUDA_HOME))
endif
ifeq ($(origin NCCL_HOME),undefined)
NCCL_HOME := $(or $(call py_pkg_dir,nvidia.nccl),$(CUDA_HOME))
endif
CUDNN_INC ?= $(CUDNN_HOME)/include
CUDNN_LIB ?= $(firstword $(wildcard $(CUDNN_HOME)/lib $(CUDNN_HOME)/lib64) $(CUDA_LIBDIR))
NCCL_INC  ?= $(NCCL_HOME)/include
NCCL_LIB  ?= $(firstword $(wildcard $(NCCL_HOME)/lib $(NCCL_HOME)/lib64) $(CUDA_LIBDIR))

# sm_90 machine code for Hopper plus compute_90 PTX the driver can JIT for newer GPUs
CUDA_ARCH ?= -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90
NVCCFLAGS ?= -O3 -lineinfo
NVCCFLAGS += -std=c++17 $(CUDA_ARCH) -Xcompiler -fopenmp,-Wall,-Wno-unknown-pragmas -MMD -MP \
             -I$(CUBLAS_INC) -I$(CUDNN_INC) -I$(NCCL_INC)

# Only what the code uses is linked; cuDNN/NCCL dirs are searched and baked in
# as run paths for the steps that will use them.
CUDA_LDFLAGS = -L$(CUDA_LIBDIR) -L$(CUBLAS_LIB) -L$(CUDNN_LIB) -L$(NCCL_LIB) \
               -Xlinker -rpath,$(CUBLAS_LIB):$(CUDNN_LIB):$(NCCL_LIB)
CUDA_LDLIBS  = -lcublasLt -lcublas -l:libnccl.so.2 -lcudart -lgomp -lopenblas -lcjson -lm -ldl

CUDA_SRC := $(sort $(wildcard src/ops/cuda/*.cu))
CUDA_OBJ := $(CUDA_SRC:%.cu=build/cuda/%.o)
TEST_CUDA_SRC := tests/cuda/test_cuda.cu

# The test compares against the CPU ops that exist: each optional CPU source
# present turns on its comparison (so the CUDA build links while the CPU
# backend is still being written).
CPU_OPTIONAL := attention conv1d selective_scan ssd gated_rmsnorm
CPU_HAVE := $(foreach f,$(CPU_OPTIONAL),$(if $(wildcard src/ops/cpu/$(f).c),-DHAVE_CPU_$(shell echo $(f) | tr a-z A-Z)))

.PHONY: all cuda-config FORCE
all: build/cuda/libflowhn_cuda.a build/tests/test_cuda build/tests/test_cuda_model build/flowhn-cuda

build/cuda/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

build/cuda/libflowhn_cuda.a: $(CUDA_OBJ)
	@rm -f $@; ar rcs $@ $^

# the CPU oracle (fp32 library) comes from the top Makefile unless CPU_LIB names another
CPU_LIB ?= build/libflowhn.a
ifeq ($(CPU_LIB),build/libflowhn.a)
build/libflowhn.a: FORCE
	$(MAKE) -f Makefile build/libflowhn.a
endif

build/cuda/tests/cuda/test_cuda.o: $(TEST_CUDA_SRC) FORCE
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) $(CPU_HAVE) -c $< -o $@

build/tests/test_cuda: build/cuda/tests/cuda/test_cuda.o build/cuda/libflowhn_cuda.a $(CPU_LIB)
	@mkdir -p $(dir $@)
	$(NVCC) $(CUDA_ARCH) $^ -o $@ $(CUDA_LDFLAGS) $(CUDA_LDLIBS)

# fp32 test helpers (tiny configs) and the CLI's objects come from the top Makefile
HELP32 := build/f32/tests/helpers/tiny.o build/f32/tests/helpers/gradcheck.o
CLI_OBJ := $(patsubst %.c,build/f32/%.o,$(sort $(wildcard src/cli/*.c)))
$(HELP32) $(CLI_OBJ): FORCE
	$(MAKE) -f Makefile $@

build/cuda/tests/cuda/test_cuda_model.o: tests/cuda/test_cuda_model.cu FORCE
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

build/tests/test_cuda_model: build/cuda/tests/cuda/test_cuda_model.o $(HELP32) build/cuda/libflowhn_cuda.a $(CPU_LIB)
	@mkdir -p $(dir $@)
	$(NVCC) $(CUDA_ARCH) $^ -o $@ $(CUDA_LDFLAGS) $(CUDA_LDLIBS)

# the generator and its decoding ops on the GPU against the CPU (test_cuda_decode.cu)
all: build/tests/test_cuda_decode
build/cuda/tests/cuda/test_cuda_decode.o: tests/cuda/test_cuda_decode.cu FORCE
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

build/tests/test_cuda_decode: build/cuda/tests/cuda/test_cuda_decode.o $(HELP32) build/cuda/libflowhn_cuda.a $(CPU_LIB)
	@mkdir -p $(dir $@)
	$(NVCC) $(CUDA_ARCH) $^ -o $@ $(CUDA_LDFLAGS) $(CUDA_LDLIBS)

# the training step recorded as a CUDA graph vs op by op (test_cuda_graph.cu)
all: build/tests/test_cuda_graph
build/cuda/tests/cuda/test_cuda_graph.o: tests/cuda/test_cuda_graph.cu FORCE
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

build/tests/test_cuda_graph: build/cuda/tests/cuda/test_cuda_graph.o $(HELP32) build/cuda/libflowhn_cuda.a $(CPU_LIB)
	@mkdir -p $(dir $@)
	$(NVCC) $(CUDA_ARCH) $^ -o $@ $(CUDA_LDFLAGS) $(CUDA_LDLIBS)

# The CUDA objects go in as objects, not the archive: the registry's weak
# reference to cuda_backend (src/ops/cpu/backend.c) would not pull an archive
# member, so cuda_registry.o must be linked explicitly.
build/flowhn-cuda: $(CLI_OBJ) $(CUDA_OBJ) $(CPU_LIB)
	@mkdir -p $(dir $@)
	$(NVCC) $(CUDA_ARCH) $^ -o $@ $(CUDA_LDFLAGS) $(CUDA_LDLIBS)

cuda-config:
	@echo "CUDA_HOME=$(CUDA_HOME)"; echo "NVCC=$(NVCC)"; echo "CUDA_LIBDIR=$(CUDA_LIBDIR)"
	@echo "CUBLAS_INC=$(CUBLAS_INC) CUBLAS_LIB=$(CUBLAS_LIB)"
	@echo "CUDNN_INC=$(CUDNN_INC) CUDNN_LIB=$(CUDNN_LIB)"
	@echo "NCCL_INC=$(NCCL_INC) NCCL_LIB=$(NCCL_LIB)"

FORCE:

-include $(shell find build/cuda -name '*.d' 2>/dev/null)
