#!/usr/bin/env bash
# session 6 call 1 (two H200s). GPU0: main's tests, FLOWHN_ADD_NORM A/B, pending ssd-dbdc check + bench.
# GPU1: sanitize (memcheck, racecheck per case), decode + flowhn-1b profiles, flowhn-fac-1b MFU.
set -uo pipefail
T0=$SECONDS; O=$OUT; mkdir -p $O/g0 $O/g1
export LD_LIBRARY_PATH=$PWD/.devcarry/bundle/lib:${LD_LIBRARY_PATH:-}
unpack() { mkdir -p $2; for f in $1/bin/*.xz; do xz -dc $f > $2/$(basename $f .xz); chmod +x $2/$(basename $f .xz); done; }
unpack .devcarry/dbdc /tmp/fbD
left() { echo $((${END:-545} - (SECONDS - T0))); }
run_t() { local d=$1 n=$2; shift 2; local s=$SECONDS; env "$@" > $O/$d/$n.log 2>&1; echo "| $n | rc $? | $(grep '^RESULT' $O/$d/$n.log | tail -1) | $((SECONDS-s)) s |" >> $O/$d/rows.md; grep -E "^FAIL|check failed" $O/$d/$n.log | head -6 >> $O/$d/rows.md; }
bench() { local d=$1 tag=$2 fb=$3 c=$4 b=$5; shift 5
    [ $(left) -lt 30 ] && return
    env "$@" timeout 80 $fb/flowhn-cuda bench --config configs/$c.json --device cuda --batch $b --seq-len 1024 --steps 6 --warmup 2 --precision bf16 > $O/$d/bench-$tag-$c-$b.log 2>&1
    echo "| $c B$b | $tag | $(grep -oE 'step_ms=[0-9.]+ tokens_per_s=[0-9.]+' $O/$d/bench-$tag-$c-$b.log) | $(grep -oE 'mfu_bf16=[0-9.]+|peak_alloc_gib=[0-9.]+' $O/$d/bench-$tag-$c-$b.log | tr '\n' ' ') |" >> $O/$d/rows.md; }
prof() { local d=$1 tag=$2; shift 2; [ $(left) -lt 40 ] && return
    timeout 90 "$@" --profile > $O/$d/profile-$tag.log 2>&1
    { echo "### profile $tag"; sed -n '/^op profile/,$p' $O/$d/profile-$tag.log | sed -n '3,22p'; } >> $O/$d/rows.md; }
(
  export CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=16
  OUT=$O/g0/s bash tools/gpu/session.sh tests > $O/g0/session.log 2>&1; cat $O/g0/s/summary.md >> $O/g0/rows.md
  for m in 0 1; do bench g0 addnorm$m /tmp/flowhn-bin llama-gpt2small 8 FLOWHN_ADD_NORM=$m; done
  bench g0 addnorm1 /tmp/flowhn-bin llama-1b 8 FLOWHN_ADD_NORM=1; bench g0 addnorm0 /tmp/flowhn-bin llama-1b 8 FLOWHN_ADD_NORM=0
  run_t g0 dbdc_test_ssd FLOWHN_TEST_ONLY=test_ssd,test_ssd_tc timeout 120 /tmp/fbD/test_cuda
  bench g0 main /tmp/flowhn-bin mamba2-gpt2small 8; bench g0 dbdc /tmp/fbD mamba2-gpt2small 8
  bench g0 dbdc-noatomics /tmp/fbD mamba2-gpt2small 8 FLOWHN_SSD_TIME_NO_BC_ATOMICS=1
  [ $(left) -gt 150 ] && run_t g0 dbdc_test_cuda_model timeout $(( $(left) - 30 )) /tmp/fbD/test_cuda_model
) &
(
  export CUDA_VISIBLE_DEVICES=1 OMP_NUM_THREADS=16
  sleep 5
  source .devcarry/bundle/env.sh
  mkdir -p $O/g1/rc; timeout 280 tools/gpu/racecheck_cases.sh $FB/test_cuda $O/g1/rc >> $O/g1/rows.md 2>&1
  run_t g1 memcheck FLOWHN_TEST_QUICK=1 timeout 130 compute-sanitizer --tool memcheck --error-exitcode 1 $FB/test_cuda
  grep -h "ERROR SUMMARY" $O/g1/memcheck.log >> $O/g1/rows.md
  prof g1 decode-llama-1b $FB/flowhn-cuda bench --config configs/llama-1b.json --device cuda --decode --batch 1 --prompt-len 64 --steps 128 --precision bf16
  prof g1 decode-flowhn-fac-1b $FB/flowhn-cuda bench --config configs/flowhn-fac-1b.json --device cuda --decode --batch 1 --prompt-len 64 --steps 128 --precision bf16
  prof g1 train-flowhn-fac-1b $FB/flowhn-cuda bench --config configs/flowhn-fac-1b.json --device cuda --batch 8 --seq-len 1024 --steps 4 --warmup 2 --precision bf16
  bench g1 main $FB flowhn-fac-1b 8; bench g1 main $FB flowhn-fac-1b 32; bench g1 main $FB llama-1b 32
) &
wait
cd $O; { echo "## GPU0"; cat g0/rows.md; echo "## GPU1"; cat g1/rows.md; } > report.md 2>/dev/null
tar czf logs.tgz g0 g1 && rm -rf g0 g1; echo "total $((SECONDS-T0)) s" >> report.md; cat report.md
