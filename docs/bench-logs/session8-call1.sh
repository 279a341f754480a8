#!/usr/bin/env bash
# session 8 call 1 (two H200s). Bundle = int1: main e68eb20 + pending ssd-cbwd2 + scan1 (0001-0003, split) + decode-pdl
# (0001-0004, pdl2) + branches cudnn-attn (cuDNN fused attention, FLOWHN_ATTN_CUDNN=0 off) and elem-llama (FLOWHN_ELEM=old). GPU0: tests (new defaults, old switches), decode tests. GPU1: SSD/scan A/Bs + profiles, ncu of the new
# chunk backward, decode A/B of the four PDL settings.
set -uo pipefail
T0=$SECONDS; O=$OUT; mkdir -p $O/g0 $O/g1
source .devcarry/bundle/env.sh
left() { echo $((${END:-520} - (SECONDS - T0))); }
run_t() { local d=$1 n=$2; shift 2; local s=$SECONDS; env "$@" > $O/$d/$n.log 2>&1; echo "| $n | rc $? | $(grep '^RESULT' $O/$d/$n.log | tail -1) | $((SECONDS-s)) s |" >> $O/$d/rows.md; grep -E "^FAIL|check failed" $O/$d/$n.log | head -8 >> $O/$d/rows.md; }
bench() { local d=$1 tag=$2 c=$3 b=$4 t=$5; shift 5
    [ $(left) -lt 30 ] && return
    env "$@" timeout 80 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --batch $b --seq-len $t --steps 6 --warmup 2 --precision bf16 > $O/$d/bench-$tag-$c-$b-$t.log 2>&1
    echo "| $c B$b T$t | $tag | $(grep -oE 'graph=[0-9]|step_ms=[0-9.]+|tokens_per_s=[0-9.]+|mfu_bf16=[0-9.]+|peak_alloc_gib=[0-9.]+' $O/$d/bench-$tag-$c-$b-$t.log | tr '\n' ' ') $(grep -m1 -iE 'error|fail' $O/$d/bench-$tag-$c-$b-$t.log | cut -c1-150) |" >> $O/$d/rows.md; }
dec() { local d=$1 tag=$2 c=$3 b=$4; shift 4; [ $(left) -lt 25 ] && return
    env "$@" timeout 60 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --decode --batch $b --prompt-len 64 --steps 128 --precision bf16 > $O/$d/dec-$tag-$c-$b.log 2>&1
    echo "| decode $c B$b | $tag | $(grep -oE 'step_ms=[0-9.]+ tokens_per_s=[0-9.]+|bound_fraction=[0-9.]+' $O/$d/dec-$tag-$c-$b.log | tr '\n' ' ') $(grep -m1 -iE 'error|fail' $O/$d/dec-$tag-$c-$b.log | cut -c1-150) |" >> $O/$d/rows.md; }
prof() { local d=$1 tag=$2 c=$3 n=$4; shift 4; [ $(left) -lt 40 ] && return
    env "$@" timeout 90 $FB/flowhn-cuda bench --config configs/$c.json --device cuda --batch 8 --seq-len 1024 --steps 5 --warmup 2 --precision bf16 --profile > $O/$d/prof-$tag-$c.log 2>&1
    echo "### profile $c $tag" >> $O/$d/rows.md; grep -E "^\| " $O/$d/prof-$tag-$c.log | head -$n >> $O/$d/rows.md; }
(
  export CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=16
  run_t g0 test_cudnn FLOWHN_TEST_ONLY=test_attention_cudnn FLOWHN_TEST_REQUIRE_CUDNN=1 FLOWHN_ATTN_CUDNN_LOG=1 timeout 90 $FB/test_cuda
  grep -iE "cudnn" $O/g0/test_cudnn.log | sort | uniq -c | sort -rn | head -12 >> $O/g0/rows.md
  run_t g0 test_cuda timeout 220 $FB/test_cuda
  run_t g0 test_cuda_wl FLOWHN_SSD_CBWD=wl FLOWHN_TEST_ONLY=test_ssd,test_ssd_tc timeout 60 $FB/test_cuda
  run_t g0 test_cuda_old FLOWHN_SSD_CBWD=old FLOWHN_SCAN1=old FLOWHN_TEST_ONLY=test_ssd,test_ssd_tc,test_selective_scan timeout 60 $FB/test_cuda
  run_t g0 test_cuda_model timeout 220 $FB/test_cuda_model
  run_t g0 test_cuda_graph timeout 100 $FB/test_cuda_graph
  run_t g0 test_cuda_decode timeout 100 $FB/test_cuda_decode
  run_t g0 test_cuda_decode_pdl0 FLOWHN_PDL=0 timeout 100 $FB/test_cuda_decode
  for c in llama-135m llama-1b flowhn-fac-135m; do dec g0 def $c 1; dec g0 gemv2 $c 1 FLOWHN_PDL_GEMV=2; dec g0 gemv0 $c 1 FLOWHN_PDL_GEMV=0; dec g0 pdl0 $c 1 FLOWHN_PDL=0; done
) &
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=16
  bench g1 new llama-gpt2small 8 1024 FLOWHN_ATTN_CUDNN_LOG=1; bench g1 nocudnn llama-gpt2small 8 1024 FLOWHN_ATTN_CUDNN=0
  bench g1 elemold llama-gpt2small 8 1024 FLOWHN_ELEM=old; bench g1 new llama-135m 8 1024; bench g1 nocudnn llama-135m 8 1024 FLOWHN_ATTN_CUDNN=0
  grep -ihE "cudnn" $O/g1/bench-new-llama-gpt2small-8-1024.log | sort | uniq -c | sort -rn | head -8 >> $O/g1/rows.md
  prof g1 new llama-gpt2small 14
  bench g1 new mamba2-gpt2small 8 1024; bench g1 wl mamba2-gpt2small 8 1024 FLOWHN_SSD_CBWD=wl
  bench g1 new mamba2-135m 8 1024; bench g1 wl mamba2-135m 8 1024 FLOWHN_SSD_CBWD=wl
  bench g1 new mamba1-135m 8 1024; bench g1 old mamba1-135m 8 1024 FLOWHN_SCAN1=old
  bench g1 new flowhn-fac-1b 8 1024; bench g1 old flowhn-fac-1b 8 1024 FLOWHN_SCAN1=old
  bench g1 new mamba1-135m 1 32768; bench g1 old mamba1-135m 1 32768 FLOWHN_SCAN1=old
  prof g1 new mamba2-gpt2small 8; prof g1 new mamba1-135m 8
  [ $(left) -gt 70 ] && timeout $(( $(left) - 15 )) tools/gpu/ncu_kernels.sh --bin $FB/flowhn-cuda --out $O/g1/ncu configs/mamba2-gpt2small.json 'ssd_chunk_bwd_p64' 2 > $O/g1/ncu.log 2>&1 && echo "ncu done" >> $O/g1/rows.md
) &
wait
cd $O; { echo "## GPU0"; cat g0/rows.md; echo "## GPU1"; cat g1/rows.md; } > report.md 2>/dev/null
tar czf logs.tgz g0 g1 && rm -rf g0 g1; echo "total $((SECONDS-T0)) s" >> report.md; cat report.md
