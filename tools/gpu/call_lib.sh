# Helpers for one device call's script (sourced, not run). Sessions 6-14 copied these functions into every
# call script (docs/bench-logs/session*-call*.sh, kept as they ran); a new call script sources this instead:
#
#   source tools/gpu/call_lib.sh            # on the GPU machine, from the repository root; needs $OUT
#   call_begin g0 g1                        # the bundle's env ($FB), $O = $OUT, one folder a lane
#   ( export CUDA_VISIBLE_DEVICES=0; run_t g0 test_cuda timeout 300 $FB/test_cuda; bench g0 new llama-135m 8 1024 ) &
#   wait; call_report g0 g1
#
# Every helper appends markdown rows to $O/<lane>/rows.md and skips itself when too little of the call is
# left: left() counts down from END seconds (default 480) after call_begin. Environment per helper call is
# passed as NAME=value words after the fixed arguments (as `env` takes them).

call_begin() {   # lane folders...
    T0=$SECONDS; O=$OUT
    local d; for d in "$@"; do mkdir -p "$O/$d"; done
    # shellcheck disable=SC1091
    source "${BUNDLE:-.devcarry/bundle}/env.sh"
}
left() { echo $((${END:-480} - (SECONDS - T0))); }

# run_t LANE NAME [VAR=v ...] COMMAND...: a test binary; its RESULT line, time and first failures
run_t() { local d=$1 n=$2; shift 2; local s=$SECONDS
    env "$@" > "$O/$d/$n.log" 2>&1
    echo "| $n | rc $? | $(grep -a '^RESULT' "$O/$d/$n.log" | tail -1) | $((SECONDS-s)) s |" >> "$O/$d/rows.md"
    grep -aE "^FAIL|check failed|ERROR SUMMARY|table is full|Internal Sanitizer" "$O/$d/$n.log" | head -8 | cut -c1-300 >> "$O/$d/rows.md"; }

# bench LANE TAG CONFIG B T [VAR=v ...]: one training bench row (graph, step ms, tokens/s, MFU, memory)
bench() { local d=$1 tag=$2 c=$3 b=$4 t=$5; shift 5
    [ "$(left)" -lt 35 ] && return
    local log="$O/$d/bench-$tag-$c-$b-$t.log"
    env "$@" timeout 80 "$FB/flowhn-cuda" bench --config "configs/$c.json" --device cuda --batch "$b" --seq-len "$t" \
        --steps 6 --warmup 2 --precision bf16 > "$log" 2>&1
    echo "| $c B$b T$t | $tag | $(grep -oE 'graph=[0-9]|step_ms=[0-9.]+|tokens_per_s=[0-9.]+|mfu_bf16=[0-9.]+|peak_alloc_gib=[0-9.]+' "$log" | tr '\n' ' ') $(grep -m1 -iE 'error|fail' "$log" | cut -c1-150) |" >> "$O/$d/rows.md"; }

# prof LANE TAG CONFIG [VAR=v ...]: the op profile at B 8, T 1K; the rows named by PROF_OPS (a regex)
prof() { local d=$1 tag=$2 c=$3; shift 3
    [ "$(left)" -lt 35 ] && return
    local log="$O/$d/prof-$tag-$c.log"
    env "$@" timeout 60 "$FB/flowhn-cuda" bench --config "configs/$c.json" --device cuda --batch 8 --seq-len 1024 \
        --steps 5 --warmup 2 --precision bf16 --profile > "$log" 2>&1
    echo "### profile $tag $c" >> "$O/$d/rows.md"
    grep -E "^\| (${PROF_OPS:-classifier|linear_bwd|linear_fwd|attention_rope_bwd|attention_rope_fwd|all ops})|step_ms" "$log" \
        | head -12 | cut -c1-160 >> "$O/$d/rows.md"; }

# torch_pair LANE CONFIG_PATHS...: flowhn against the PyTorch reference, same run (tools/bench_compare.sh)
torch_pair() { local d=$1; shift
    [ "$(left)" -lt 60 ] && return
    FLOWHN_CUDA=$FB/flowhn-cuda timeout $(( $(left) - 5 )) tools/bench_compare.sh --out "$O/$d/torch" --configs "$*" \
        > "$O/$d/torch.log" 2>&1
    echo "### compare $d" >> "$O/$d/rows.md"; cat "$O/$d/torch/bench_compare.md" >> "$O/$d/rows.md" 2>/dev/null
    grep -h "^BENCH\|^TORCHBENCH" "$O/$d/torch/bench_compare.log" 2>/dev/null \
        | grep -oE '^[A-Z]+|config=[^ ]+|step_ms=[0-9.]+|tokens_per_s=[0-9.]+|compile_s=[0-9.]+' | paste -sd' ' \
        | sed 's/ BENCH/\nBENCH/g; s/ TORCHBENCH/\nTORCHBENCH/g' >> "$O/$d/rows.md"; }

# dec LANE TAG CONFIG B [VAR=v ...]: one decode bench row (prompt 64, 128 steps)
dec() { local d=$1 tag=$2 c=$3 b=$4; shift 4
    [ "$(left)" -lt 25 ] && return
    local log="$O/$d/dec-$tag-$c-$b.log"
    env "$@" timeout 60 "$FB/flowhn-cuda" bench --config "configs/$c.json" --device cuda --decode --batch "$b" \
        --prompt-len 64 --steps 128 --precision bf16 > "$log" 2>&1
    echo "| decode $c B$b | $tag | $(grep -oE 'graph=[0-9]|step_ms=[0-9.]+|tokens_per_s=[0-9.]+|bound_fraction=[0-9.]+|prefill_batched_tokens_per_s=[0-9.]+|bound_ms=[0-9.]+' "$log" | tr '\n' ' ') $(grep -m1 -iE 'error|fail' "$log" | cut -c1-150) |" >> "$O/$d/rows.md"; }

# sweep LANE TAG [bench_all.sh options...]: a tools/bench_all.sh table
sweep() { local d=$1 tag=$2; shift 2
    [ "$(left)" -lt 40 ] && return
    timeout $(( $(left) - 5 )) tools/bench_all.sh --bin "$FB/flowhn-cuda" --out "$O/$d/all-$tag" "$@" > "$O/$d/all-$tag.log" 2>&1
    echo "### sweep $tag: $*" >> "$O/$d/rows.md"; cat "$O/$d/all-$tag/bench_all.md" >> "$O/$d/rows.md" 2>/dev/null; }

# call_report LANES...: report.md (every lane's rows, the call's time) and logs.tgz of the lanes' folders
call_report() {
    local d
    ( cd "$O" || exit
      for d in "$@"; do echo "## $d"; cat "$d/rows.md" 2>/dev/null; done > report.md
      for d in "$@"; do cp "$d/torch/bench_compare.log" "cmp-$d.log" 2>/dev/null; done
      tar czf logs.tgz "$@" 2>/dev/null && rm -rf "$@"
      echo "total $((SECONDS-T0)) s" >> report.md; cat report.md )
}
