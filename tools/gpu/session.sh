#!/usr/bin/env bash
# The GPU work of a session in as few device calls as possible, from a bundle made
# here by tools/gpu/bundle.sh (the GPU machine has the CUDA runtime, not our CPU libraries).
#
#   bash tools/gpu/session.sh [--bundle DIR] STAGE...      (on the GPU machine, repo root)
#
# Stages (each command under a timeout; logs in $OUT, else runs/gpu_session; a summary last):
#   tests     test_cuda, test_cuda_model, test_cuda_decode (also without the gemv products and FlowHN's graphs),
#             test_cuda_graph (also with branch streams)                                               ~3.5 min
#   memcheck  compute-sanitizer memcheck, one case per process, three at once: test_cuda (quick), test_cuda_decode
#             ~5 min (session 15 on an H200: test_cuda's 56 cases in 73 + 97 s, test_cuda_decode's 29 in 140 s)
#   racecheck the same with racecheck over test_cuda (quick, two at once), cuBLAS's and cuDNN's own kernels excluded,
#             and test_cuda_decode's three own-kernel cases: more than one call (test_ssd_tc alone 458 s): split
#             it over calls with SANITIZE_CASES
#   sanitize  both (tools/gpu/sanitize_cases.sh SANITIZE_CASES=... picks cases to split a run over calls)
#   bench     tools/bench_all.sh: every architecture at 135M; LLaMA and the FlowHN splits at 350M and 1B
#             (T 1024, 8192 tokens a step); LLaMA and FlowHN-FAC at T 4K, 16K, 32K                       ~4 min
#   decode    bench --decode, B 1 and 64: llama, flowhn-fac, mamba2 at 135M and 1B                      ~1 min
#   torch     tools/bench_compare.sh: flowhn against the PyTorch model, side by side                    ~5 min
#   fill      the cells session 4 could not measure: mamba1, jamba, shm, hymba, flowhn-nosplit at 350M
#             and 1B; every other architecture at T 4K/16K/32K (135M); shm, flowhn-ae, flowhn-nosplit and
#             mamba2-gpt2small against PyTorch                                                          ~9 min
#   profile   bench --profile (every op timed by CUDA events): llama-gpt2small, mamba2-gpt2small,
#             flowhn-fac-135m, llama-1b; one table each; then the B 1 decode step of llama-1b     ~3 min
#   ab        session 5's switches timed apart: training with and without the bf16 weight copy
#             (FLOWHN_BF16_MASTER=0), decode with and without the gemv products (FLOWHN_GEMV=0)        ~3 min
#   ncu       tools/gpu/ncu_kernels.sh: Nsight Compute on the bf16 attention kernels (llama-gpt2small) and the
#             SSD chunk kernels (mamba2-gpt2small): SOL, occupancy, warp stalls                        ~4 min
# Pick stages to fit one call's 10 minutes, e.g. `tests decode bench`, then `sanitize torch`.
# On a several-GPU host, run the tests and sanitize stages alone: their CPU oracle takes every host core,
# and beside another GPU's job they ran 2-3x slower and hit their limits (session 4).
set -uo pipefail
cd "$(dirname "$0")/../.."
BUNDLE=.devcarry/bundle
if [ "${1:-}" = "--bundle" ]; then BUNDLE="$2"; shift 2; fi
[ -f "$BUNDLE/env.sh" ] || { echo "session: no $BUNDLE/env.sh (make it here with tools/gpu/bundle.sh)" >&2; exit 2; }
# shellcheck disable=SC1091
source "$BUNDLE/env.sh"
LOGS=${OUT:-runs/gpu_session}; mkdir -p "$LOGS"
SUMMARY="$LOGS/summary.md"; : > "$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | sed 's/^/GPU: /' | tee -a "$SUMMARY"
run_test() {   # name, env..., binary
    local name=$1; shift
    local s=$SECONDS
    env "$@" > "$LOGS/$name.log" 2>&1; local rc=$?
    note "| $name | rc $rc | $(grep '^RESULT' "$LOGS/$name.log" | tail -1) | $((SECONDS - s)) s |"
    grep -E "FAIL|check failed" "$LOGS/$name.log" | head -5
}
for stage in "$@"; do
    note ""; note "## $stage"
    case $stage in
    tests)
        run_test test_cuda timeout 300 "$FB/test_cuda"
        run_test test_cuda_model timeout 300 "$FB/test_cuda_model"
        run_test test_cuda_decode timeout 200 "$FB/test_cuda_decode"
        run_test test_cuda_decode_no_gemv FLOWHN_GEMV=0 FLOWHN_SPLIT_DECODE_GRAPH=0 timeout 200 "$FB/test_cuda_decode"
        run_test test_cuda_graph timeout 200 "$FB/test_cuda_graph"
        run_test test_cuda_graph_streams FLOWHN_BRANCH_STREAMS=1 timeout 200 "$FB/test_cuda_graph" ;;
    memcheck|racecheck|sanitize)
        # one case per process (see the script for why); memcheck three at once (session 15: test_cuda's 56
        # cases in 170 s, test_cuda_decode's 29 in 140 s), racecheck two (test_ssd_tc alone takes 458 s)
        [ $stage = racecheck ] || SANITIZE_LANES=3 SANITIZE_TIMEOUT=300 tools/gpu/sanitize_cases.sh memcheck \
            "$FB/test_cuda" "$LOGS/memcheck" | tee -a "$SUMMARY"
        [ $stage = memcheck ] || SANITIZE_LANES=2 SANITIZE_TIMEOUT=600 tools/gpu/sanitize_cases.sh racecheck \
            "$FB/test_cuda" "$LOGS/racecheck" | tee -a "$SUMMARY"
        [ $stage = racecheck ] || SANITIZE_LANES=3 SANITIZE_TIMEOUT=300 tools/gpu/sanitize_cases.sh memcheck \
            "$FB/test_cuda_decode" "$LOGS/memcheck-decode" | tee -a "$SUMMARY"
        [ $stage = memcheck ] || SANITIZE_CASES=copy_rows,conv1d_step,attention_decode SANITIZE_TIMEOUT=300 \
            tools/gpu/sanitize_cases.sh racecheck "$FB/test_cuda_decode" "$LOGS/racecheck-decode" | tee -a "$SUMMARY" ;;
    bench)
        tools/bench_all.sh --bin "$FB/flowhn-cuda" --out "$LOGS/b135" --sizes 135m > /dev/null 2>&1
        tools/bench_all.sh --bin "$FB/flowhn-cuda" --out "$LOGS/b350" --sizes "350m 1b" \
            --archs "llama flowhn-fac flowhn-fa flowhn-ae mamba2" > /dev/null 2>&1
        tools/bench_all.sh --bin "$FB/flowhn-cuda" --out "$LOGS/bT" --sizes 135m --seqs "4096 16384 32768" \
            --archs "llama flowhn-fac" > /dev/null 2>&1
        for d in b135 b350 bT; do cat "$LOGS/$d/bench_all.md" >> "$SUMMARY"; echo >> "$SUMMARY"; done
        tools/bench_all.sh --bin "$FB/flowhn-cuda" --out "$LOGS/gpt2" --sizes gpt2small --archs "llama mamba2" \
            > /dev/null 2>&1; cat "$LOGS/gpt2/bench_all.md" >> "$SUMMARY" ;;
    decode)
        note "| config | B | ms/step | tokens/s | bound fraction (bf16 weights / measured bandwidth) |"
        note "|---|---|---|---|---|"
        for c in llama-135m flowhn-fac-135m mamba2-135m llama-1b flowhn-fac-1b mamba2-1b; do for b in 1 64; do
            timeout 120 "$FB/flowhn-cuda" bench --config configs/$c.json --device cuda --decode --batch $b \
                --prompt-len 64 --steps 128 --precision bf16 > "$LOGS/decode-$c-$b.log" 2>&1
            grep DECODE "$LOGS/decode-$c-$b.log" | tr ' ' '\n' | awk -F= -v c=$c -v b=$b '
                {v[$1]=$2} END {printf "| %s | %s | %s | %s | %s |\n", c, b, v["step_ms"], v["tokens_per_s"], v["bound_fraction"]}' \
                | tee -a "$SUMMARY"
        done; done
        for c in llama-135m flowhn-fac-135m llama-1b flowhn-fac-1b; do b=1   # without the one-kernel decode products
            FLOWHN_GEMV=0 timeout 120 "$FB/flowhn-cuda" bench --config configs/$c.json --device cuda \
                --decode --batch $b --prompt-len 64 --steps 128 --precision bf16 > "$LOGS/decode-$c-$b-nogemv.log" 2>&1
            grep DECODE "$LOGS/decode-$c-$b-nogemv.log" | tr ' ' '\n' | awk -F= -v c="$c (FLOWHN_GEMV=0)" -v b=$b '
                {v[$1]=$2} END {printf "| %s | %s | %s | %s | %s |\n", c, b, v["step_ms"], v["tokens_per_s"], v["bound_fraction"]}' \
                | tee -a "$SUMMARY"
        done ;;
    torch)
        FLOWHN_CUDA="$FB/flowhn-cuda" tools/bench_compare.sh --out "$LOGS/torch" > /dev/null 2>&1
        cat "$LOGS/torch/bench_compare.md" >> "$SUMMARY" ;;
    fill)
        tools/bench_all.sh --bin "$FB/flowhn-cuda" --out "$LOGS/fill-sizes" --sizes "350m 1b" \
            --archs "mamba1 jamba shm hymba flowhn-nosplit" > /dev/null 2>&1
        tools/bench_all.sh --bin "$FB/flowhn-cuda" --out "$LOGS/fill-T" --sizes 135m --seqs "4096 16384 32768" \
            --archs "flowhn-fa flowhn-ae flowhn-nosplit mamba1 mamba2 jamba shm hymba" > /dev/null 2>&1
        for d in fill-sizes fill-T; do cat "$LOGS/$d/bench_all.md" >> "$SUMMARY"; echo >> "$SUMMARY"; done
        FLOWHN_CUDA="$FB/flowhn-cuda" tools/bench_compare.sh --out "$LOGS/fill-torch" --configs \
            "configs/shm-135m.json configs/flowhn-ae-135m.json configs/flowhn-nosplit-135m.json configs/mamba2-gpt2small.json" \
            > /dev/null 2>&1
        cat "$LOGS/fill-torch/bench_compare.md" >> "$SUMMARY" ;;
    profile)
        for c in llama-gpt2small mamba2-gpt2small flowhn-fac-135m llama-1b; do
            timeout 120 "$FB/flowhn-cuda" bench --config configs/$c.json --device cuda --batch 8 --seq-len 1024 \
                --steps 5 --warmup 2 --precision bf16 --profile > "$LOGS/profile-$c.log" 2>&1
            note ""; note "### $c"; sed -n '/^op profile/,$p' "$LOGS/profile-$c.log" | head -24 >> "$SUMMARY"
        done
        timeout 150 "$FB/flowhn-cuda" bench --config configs/llama-1b.json --device cuda --decode --batch 1 \
            --prompt-len 64 --steps 128 --precision bf16 --profile > "$LOGS/profile-decode-llama-1b.log" 2>&1
        note ""; note "### decode llama-1b B 1"; sed -n '/^op profile/,$p' "$LOGS/profile-decode-llama-1b.log" | head -24 >> "$SUMMARY" ;;
    ab)
        note "| run | switch | ms/step | tokens/s |"; note "|---|---|---|---|"
        for c in llama-gpt2small llama-1b flowhn-fac-135m; do for m in 1 0; do
            FLOWHN_BF16_MASTER=$m timeout 90 "$FB/flowhn-cuda" bench --config configs/$c.json --device cuda --batch 8 \
                --seq-len 1024 --steps 6 --warmup 2 --precision bf16 > "$LOGS/ab-$c-master$m.log" 2>&1
            note "| train $c | FLOWHN_BF16_MASTER=$m | $(grep -oE 'step_ms=[0-9.]+ tokens_per_s=[0-9.]+' "$LOGS/ab-$c-master$m.log") |"
        done; done
        for c in llama-1b flowhn-fac-1b; do for g in 1 0; do
            FLOWHN_GEMV=$g timeout 120 "$FB/flowhn-cuda" bench --config configs/$c.json --device cuda --decode --batch 1 \
                --prompt-len 64 --steps 128 --precision bf16 > "$LOGS/ab-dec-$c-gemv$g.log" 2>&1
            note "| decode $c B 1 | FLOWHN_GEMV=$g | $(grep -oE 'step_ms=[0-9.]+ tokens_per_s=[0-9.]+' "$LOGS/ab-dec-$c-gemv$g.log") |"
        done; done ;;
    ncu)
        tools/gpu/ncu_kernels.sh --bin "$FB/flowhn-cuda" --out "$LOGS/ncu-attn" configs/llama-gpt2small.json \
            'attention_tc_(fwd|bwd)_kernel' 2 > "$LOGS/ncu-attn.log" 2>&1
        tools/gpu/ncu_kernels.sh --bin "$FB/flowhn-cuda" --out "$LOGS/ncu-ssd" configs/mamba2-gpt2small.json \
            'ssd_chunk_(scan|bwd_p64)_kernel' 2 > "$LOGS/ncu-ssd.log" 2>&1
        for f in ncu-attn ncu-ssd; do note ""; note "### $f"; head -60 "$LOGS/$f.log" >> "$SUMMARY"; done ;;
    *) note "unknown stage $stage (tests memcheck racecheck sanitize bench decode torch fill profile ab ncu)" ;;
    esac
done
echo; cat "$SUMMARY"
