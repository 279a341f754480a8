#!/usr/bin/env python3
"""`flowhn train --gpus N` on the CPU build: the launcher starts N ranks of
the same command (FLOWHN_RANK/FLOWHN_WORLD_SIZE/FLOWHN_RENDEZVOUS set, --gpus
removed), and when a rank fails (here each one does: the CPU build has no
NCCL) it reports which rank and how, stops the others and exits non-zero,
promptly; a rank started by hand with a CPU device is refused with the fix.
Prints ok/FAIL lines and a RESULT line."""
import os
import re
import subprocess
import tempfile
import time

from harness import FLOWHN, case, finish


def main():
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "configs", "tiny-llama.json")
        out = os.path.join(d, "out")
        t0 = time.time()
        r = subprocess.run([FLOWHN, "train", "--gpus", "3", "--device", "cuda", "--config", cfg, "--data", d,
                            "--out", out, "--steps", "2"], capture_output=True, text=True, timeout=60)
        dt = time.time() - t0
        started = re.search(r"started 3 ranks \(pids (\d+) (\d+) (\d+)\), rendezvous file:(\S+)", r.stderr)
        case("the launcher starts 3 ranks with a file rendezvous in --out",
             started is not None and started.group(4).startswith(out + "/.rendezvous-"), r.stderr)
        died = re.search(r"rank (\d) \(pid (\d+)\) exited with status 1; stopping the other ranks", r.stderr)
        case("a failed rank is named with its status, the job exits non-zero",
             died is not None and r.returncode != 0 and started is not None and died.group(2) in started.groups()[:3],
             "rc %d: %s" % (r.returncode, r.stderr))
        case("each rank ran the command without --gpus and said why it failed",
             r.stderr.count("this build has no NCCL") >= 1 and "unknown option" not in r.stderr, r.stderr)
        case("it stops promptly (%.1f s)" % dt, dt < 20)
        case("no rendezvous file is left behind", not any(f.startswith(".rendezvous") for f in os.listdir(out)),
             str(os.listdir(out)))

        env = dict(os.environ, FLOWHN_RANK="1", FLOWHN_WORLD_SIZE="2")
        r = subprocess.run([FLOWHN, "train", "--config", cfg, "--data", d, "--out", out], capture_output=True, text=True,
                           env=env, timeout=60)
        case("a rank of a world of 2 on the CPU is refused with the fix",
             r.returncode != 0 and "--device cuda" in r.stderr, r.stderr)
        env = dict(os.environ, FLOWHN_RANK="2", FLOWHN_WORLD_SIZE="2")
        r = subprocess.run([FLOWHN, "train", "--config", cfg, "--data", d, "--out", out], capture_output=True, text=True,
                           env=env, timeout=60)
        case("an inconsistent rank environment is refused", r.returncode == 2 and "outside the world" in r.stderr,
             r.stderr)
    finish()


main()
