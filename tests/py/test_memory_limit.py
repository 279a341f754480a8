#!/usr/bin/env python3
"""Resource limits from the command line: a run whose estimated memory
exceeds what is available is refused before anything is allocated (fast, a
non-zero exit, the estimate by part and the fix in the message), both under
FLOWHN_MEMORY_LIMIT and with the real host figure for a 1B preset at batch 64;
a run that fits still runs. src/model/memory.h, docs/decisions.md.

Prints ok/FAIL lines and a final RESULT line (tools/run_tests.sh)."""
import os
import subprocess
import tempfile
import time

from harness import FLOWHN, case, finish

FIX = "reduce --batch or --seq-len, or use a smaller config"


def run(args, limit=None, timeout=60):
    env = dict(os.environ)
    env.pop("FLOWHN_MEMORY_LIMIT", None)
    if limit is not None:
        env["FLOWHN_MEMORY_LIMIT"] = limit
    t0 = time.monotonic()
    r = subprocess.run([FLOWHN] + args, capture_output=True, text=True, env=env, timeout=timeout)
    return r, time.monotonic() - t0


def refused(name, r, secs, must=(), max_secs=2.0):
    msg = r.stderr
    ok = r.returncode != 0 and secs < max_secs and "not enough memory" in msg and FIX in msg
    ok = ok and all(w in msg for w in ("params", "grads", "available") + tuple(must))
    case(name, ok, "(exit %d after %.2f s) %s" % (r.returncode, secs, msg.strip()[-400:]))


def mem_available():
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def main():
    tiny = "configs/tiny-llama.json"
    with tempfile.TemporaryDirectory() as d:
        # the check comes before the data is read: an empty --data directory is never looked at
        out = os.path.join(d, "run")
        r, s = run(["train", "--config", tiny, "--data", d, "--out", out, "--batch", "64", "--steps", "1"], "1M")
        refused("train over FLOWHN_MEMORY_LIMIT=1M is refused up front", r, s,
                ("AdamW m, v", "activations", "FLOWHN_MEMORY_LIMIT=1M", "MiB"))
        case("train refused before writing anything", not os.path.exists(out))

        r, s = run(["bench", "--config", tiny, "--batch", "64", "--steps", "1"], "1M")
        refused("bench over FLOWHN_MEMORY_LIMIT=1M is refused up front", r, s,
                ("AdamW m, v", "activations", "FLOWHN_MEMORY_LIMIT=1M"))

        r, s = run(["bench", "--config", tiny, "--batch", "2", "--seq-len", "16", "--steps", "1", "--warmup", "0"], "1G")
        case("bench that fits under FLOWHN_MEMORY_LIMIT=1G runs and prints its estimate",
             r.returncode == 0 and "memory: estimated" in r.stdout, r.stderr.strip()[-300:])

        r, s = run(["bench", "--config", tiny, "--steps", "1"], "12 parsecs")
        case("a FLOWHN_MEMORY_LIMIT that is not a byte count is named",
             r.returncode != 0 and "FLOWHN_MEMORY_LIMIT" in r.stderr, r.stderr.strip())

        # eval and generate check before loading the weights (and before the tokenizer)
        ck = os.path.join(d, "ck.bin")
        ri, _ = run(["init", "--config", tiny, "--out", ck])
        if ri.returncode:
            case("flowhn init makes a checkpoint", False, ri.stderr)
        else:
            r, s = run(["generate", "--checkpoint", ck, "--tokenizer", os.path.join(d, "none.json")], "4K")
            refused("generate over FLOWHN_MEMORY_LIMIT=4K is refused before loading", r, s,
                    ("KV caches", "FLOWHN_MEMORY_LIMIT=4K"))
            r, s = run(["eval", "--checkpoint", ck, "--data", os.path.join(d, "none")], "4K")
            refused("eval over FLOWHN_MEMORY_LIMIT=4K is refused before loading", r, s,
                    ("activations", "FLOWHN_MEMORY_LIMIT=4K"))

        # a 1B preset at batch 64 on the CPU (about 190-290 GiB): refused with the host's own figure
        # (a 64 GiB limit stands in on a machine with more than 150 GiB free), without allocating it
        limit = "64G" if mem_available() > 150 * 2**30 else None
        for cfg in ("configs/llama-1b.json", "configs/flowhn-fa-1b.json"):
            out = os.path.join(d, "run1b")
            r, s = run(["train", "--config", cfg, "--data", d, "--out", out, "--batch", "64"], limit, timeout=30)
            refused("%s at batch 64 on the CPU is refused in under 2 s" % cfg, r, s,
                    ("GiB", "activations", "MemAvailable" if limit is None else "FLOWHN_MEMORY_LIMIT"))
            r, s = run(["bench", "--config", cfg, "--batch", "64"], limit, timeout=30)
            refused("bench %s at batch 64 on the CPU is refused in under 2 s" % cfg, r, s, ("GiB",))


if __name__ == "__main__":
    main()
    finish()
