#!/usr/bin/env bash
# session 6 call 2 (two H200s), build int6 = main + decode-fuse + bf16-shadow + m2-elementwise.
# GPU0: int6's tests, then PyTorch side by side. GPU1: A/B of each change by its switch, profiles.
set -uo pipefail
T0=$SECONDS; O=$OUT; mkdir -p $O/g0 $O/g1
source .devcarry/bundle/env.sh
left() { echo $((${END:-550} - (SECONDS - T0))); }
run_t() { local d=$1 n=$2; shift 2; local s=$SECONDS; env "$@" > $O/$d/$n.log 2>&1; echo "| $n | rc $? | $(grep '^RESULT' $O/$d/$n.log | tail -1) | $((SECONDS-s)) s |" >> $O/$d/rows.md; grep -E "^FAIL|check failed" $O/$d/$n.log | head -8 >> $O/$d/rows.md; }
bench() { local d=$1 tag=$2 c=$3 b=$4; shift 4
    [ $(left) -lt 30 ] && return
    env "$@" timeout 80 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --batch $b --seq-len 1024 --steps 6 --warmup 2 --precision bf16 > $O/$d/bench-$tag-$c-$b.log 2>&1
    echo "| $c B$b | $tag | $(grep -oE 'step_ms=[0-9.]+ tokens_per_s=[0-9.]+' $O/$d/bench-$tag-$c-$b.log) | $(grep -oE 'mfu_bf16=[0-9.]+|peak_alloc_gib=[0-9.]+' $O/$d/bench-$tag-$c-$b.log | tr '\n' ' ') |" >> $O/$d/rows.md; }
dec() { local d=$1 tag=$2 c=$3 b=$4; shift 4; [ $(left) -lt 25 ] && return
    env "$@" timeout 60 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --decode --batch $b --prompt-len 64 --steps 128 --precision bf16 > $O/$d/dec-$tag-$c-$b.log 2>&1
    echo "| decode $c B$b | $tag | $(grep -oE 'step_ms=[0-9.]+ tokens_per_s=[0-9.]+|bound_fraction=[0-9.]+' $O/$d/dec-$tag-$c-$b.log | tr '\n' ' ') |" >> $O/$d/rows.md; }
prof() { local d=$1 tag=$2; shift 2; [ $(left) -lt 40 ] && return
    timeout 90 "$@" --profile > $O/$d/profile-$tag.log 2>&1
    { echo "### profile $tag"; sed -n '/^op profile/,$p' $O/$d/profile-$tag.log | sed -n '3,20p'; } >> $O/$d/rows.md; }
(
  export CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=16
  run_t g0 test_cuda timeout 150 $FB/test_cuda
  run_t g0 test_cuda_model timeout 200 $FB/test_cuda_model
  run_t g0 test_cuda_decode timeout 100 $FB/test_cuda_decode
  run_t g0 test_cuda_graph timeout 100 $FB/test_cuda_graph
  run_t g0 test_cuda_graph_streams FLOWHN_BRANCH_STREAMS=1 timeout 100 $FB/test_cuda_graph
  run_t g0 memcheck_decode timeout 120 compute-sanitizer --tool memcheck --error-exitcode 1 $FB/test_cuda_decode
  grep -h "ERROR SUMMARY" $O/g0/memcheck_decode.log >> $O/g0/rows.md
  mkdir -p $O/g0/torch
  [ $(left) -gt 90 ] && FLOWHN_CUDA=$FB/flowhn-cuda timeout $(( $(left) - 20 )) tools/bench_compare.sh --out $O/g0/torch --configs \
    "configs/llama-gpt2small.json configs/mamba2-gpt2small.json configs/shm-135m.json configs/flowhn-ae-135m.json configs/flowhn-nosplit-135m.json configs/llama-135m.json" > $O/g0/torch.log 2>&1
  cat $O/g0/torch/bench_compare.md >> $O/g0/rows.md 2>/dev/null
) &
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=16
  sleep 3
  for c in llama-1b flowhn-fac-1b llama-135m; do dec g1 fuse $c 1; dec g1 nofuse $c 1 FLOWHN_DECODE_FUSE=0; dec g1 oldattn $c 1 FLOWHN_DECODE_ATTN=old; done
  dec g1 fuse flowhn-fac-1b 64; dec g1 fuse llama-1b 64
  for c in llama-gpt2small llama-1b flowhn-fac-135m; do bench g1 shadow $c 8; bench g1 noshadow $c 8 FLOWHN_BF16_SHADOW=0; done
  bench g1 m2new mamba2-gpt2small 8; bench g1 m2old mamba2-gpt2small 8 FLOWHN_CONV_SILU=0 FLOWHN_M2_KERNELS=old
  bench g1 m2new mamba1-135m 8; bench g1 m2old mamba1-135m 8 FLOWHN_CONV_SILU=0 FLOWHN_M2_KERNELS=old
  prof g1 llama-gpt2small $FB/flowhn-cuda bench --config configs/llama-gpt2small.json --device cuda --batch 8 --seq-len 1024 --steps 3 --warmup 2 --precision bf16
  prof g1 mamba2-gpt2small $FB/flowhn-cuda bench --config configs/mamba2-gpt2small.json --device cuda --batch 8 --seq-len 1024 --steps 3 --warmup 2 --precision bf16
  prof g1 decode-llama-1b $FB/flowhn-cuda bench --config configs/llama-1b.json --device cuda --decode --batch 1 --prompt-len 64 --steps 128 --precision bf16
  bench g1 shadow flowhn-fac-1b 8; bench g1 shadow llama-1b 32
) &
wait
cd $O; { echo "## GPU0"; cat g0/rows.md; echo "## GPU1"; cat g1/rows.md; } > report.md 2>/dev/null
tar czf logs.tgz g0 g1 && rm -rf g0 g1; echo "total $((SECONDS-T0)) s" >> report.md; cat report.md
