"""tools/gpu/sanitize_cases.sh (the compute-sanitizer sweep of `make test-cuda-sanitize`) without a GPU: a stub
test binary that lists its cases and a stub compute-sanitizer on PATH that answers each case the way the real one
does (a clean summary, a hazard, a failed case, an internal error inside cuBLASLt, a hang). Checks the table rows,
the exit status, that listed-twice cases run once, that unknown cases are named, the racecheck exclusions, the
per-case timeout, SANITIZE_BUDGET (no case starts once it is spent and each row says why) and lanes."""
import os
import re
import stat
import subprocess
import tempfile
import time

from harness import case, finish

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(ROOT, "tools", "gpu", "sanitize_cases.sh")

# The test binary: FLOWHN_TEST_LIST=1 prints "case NAME" lines (some twice, as test_cuda does); a run prints RESULT.
BINARY = """#!/bin/sh
if [ -n "$FLOWHN_TEST_LIST" ]; then
    for c in clean hazard failing internal slow clean2 clean; do echo "case $c"; done; exit 0
fi
echo "ran $FLOWHN_TEST_ONLY" >> "$STUB_RUNS"
case "$FLOWHN_TEST_ONLY" in
    failing) echo "RESULT 0 passed, 1 failed"; exit 1;;
    slow) sleep 30;;
    *) sleep "${STUB_SLEEP:-0}"; echo "RESULT 1 passed, 0 failed";;
esac
"""

# compute-sanitizer: records its options, runs the binary, reports by case as the real tool prints it.
SANITIZER = """#!/bin/bash
args=("$@"); n=${#args[@]}; bin=${args[$((n-1))]}
echo "$FLOWHN_TEST_ONLY ${args[*]:0:$((n-1))}" >> "$STUB_OPTS"
"$bin"; rc=$?
case "$FLOWHN_TEST_ONLY" in
    hazard) echo "========= RACECHECK SUMMARY: 3 hazards displayed (3 errors, 0 warnings)"; exit 1;;
    internal) echo "========= Internal Sanitizer Error: The Sanitizer failed to handle a hardware exception."; exit 1;;
esac
echo "========= ERROR SUMMARY: 0 errors"
exit $rc
"""


def write_exe(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)


def sweep(d, tool, env_extra, logs="logs"):
    env = dict(os.environ, PATH=d + os.pathsep + os.environ["PATH"], STUB_RUNS=os.path.join(d, "runs"),
               STUB_OPTS=os.path.join(d, "opts"))
    for k in ("SANITIZE_CASES", "SANITIZE_TIMEOUT", "SANITIZE_EXCLUDE", "SANITIZE_LANES", "SANITIZE_BUDGET"):
        env.pop(k, None)
    env.update(env_extra)
    for f in ("runs", "opts"):
        if os.path.exists(os.path.join(d, f)):
            os.remove(os.path.join(d, f))
    t0 = time.time()
    r = subprocess.run(["bash", SCRIPT, tool, os.path.join(d, "test_stub"), os.path.join(d, logs)],
                       capture_output=True, text=True, env=env, timeout=120)
    return r, time.time() - t0


def rows(r):
    return {ln.split("|")[1].split()[1]: ln.split("|")[2].strip() for ln in r.stdout.splitlines()
            if ln.startswith("| ")}


def cut_to_budget(row, budget):
    """a timeout row whose limit is what the budget left: the budget, less the whole seconds the cases before it
    took (bash's SECONDS; a loaded machine may take one or two)"""
    m = re.search(r"timed out after (\d+) s", row)
    return m is not None and budget - 3 <= int(m.group(1)) <= budget


def read(d, name):
    p = os.path.join(d, name)
    return open(p).read() if os.path.exists(p) else ""


def main():
    with tempfile.TemporaryDirectory() as d:
        write_exe(os.path.join(d, "test_stub"), BINARY)
        write_exe(os.path.join(d, "compute-sanitizer"), SANITIZER)

        r, _ = sweep(d, "racecheck", {"SANITIZE_CASES": "clean,clean2"})
        rw = rows(r)
        case("two clean cases: exit 0, a row each naming the summary and the RESULT", r.returncode == 0 and
             sorted(rw) == ["clean", "clean2"] and all("0 errors" in v and "1 passed" in v for v in rw.values()),
             r.stdout + r.stderr)
        case("a case the binary lists twice runs once", read(d, "runs").count("ran clean\n") == 1, read(d, "runs"))
        opts = read(d, "opts")
        case("racecheck leaves out cuBLASLt's and cuDNN's kernels by default",
             "--kernel-name-exclude kns=nvjet" in opts and "--kernel-name-exclude kns=cudnn_generated" in opts and
             "--tool racecheck" in opts and "--error-exitcode 1" in opts, opts)

        r, _ = sweep(d, "memcheck", {"SANITIZE_CASES": "clean"})
        case("memcheck takes no kernel exclusions", r.returncode == 0 and "kernel-name-exclude" not in read(d, "opts")
             and "--tool memcheck" in read(d, "opts"), read(d, "opts"))

        r, _ = sweep(d, "racecheck", {"SANITIZE_CASES": "clean,hazard"})
        rw = rows(r)
        case("a hazard fails the sweep and its row carries the summary",
             r.returncode == 1 and "3 hazards" in rw.get("hazard", "") and "0 errors" in rw.get("clean", ""),
             r.stdout)

        r, _ = sweep(d, "memcheck", {"SANITIZE_CASES": "failing"})
        case("a failing case fails the sweep", r.returncode == 1 and "0 passed, 1 failed" in rows(r).get("failing", ""),
             r.stdout)

        r, _ = sweep(d, "racecheck", {"SANITIZE_CASES": "internal,clean"})
        case("the sanitizer's internal error is listed, not counted",
             r.returncode == 0 and "internal error" in rows(r).get("internal", ""), r.stdout)

        r, _ = sweep(d, "racecheck", {"SANITIZE_CASES": "clean,no_such_case"})
        case("an unknown case is named and fails the sweep",
             r.returncode == 1 and "not a case of" in r.stdout and "no_such_case" in r.stdout, r.stdout)

        r, _ = sweep(d, "racecheck", {"SANITIZE_CASES": "nonsense_only"})
        case("a selection with no known case fails, runs nothing", r.returncode == 1 and read(d, "runs") == "",
             r.stdout)

        r, took = sweep(d, "memcheck", {"SANITIZE_CASES": "slow,clean", "SANITIZE_TIMEOUT": "2"})
        case("a case past SANITIZE_TIMEOUT is a timeout row and a failure; the next case still runs",
             r.returncode == 1 and "timed out after 2 s" in rows(r).get("slow", "") and
             "1 passed" in rows(r).get("clean", "") and took < 25, "%s (%.1f s)" % (r.stdout, took))

        r, took = sweep(d, "memcheck", {"SANITIZE_CASES": "clean2,slow,clean", "SANITIZE_TIMEOUT": "60",
                                        "SANITIZE_BUDGET": "7"})
        rw = rows(r)
        case("SANITIZE_BUDGET cuts the running case's timeout to what is left and starts no case after it",
             r.returncode == 1 and "1 passed" in rw.get("clean", "") and cut_to_budget(rw.get("slow", ""), 7)
             and "not started: SANITIZE_BUDGET" in rw.get("clean2", "") and "ran clean2" not in read(d, "runs")
             and took < 25, "%s (%.1f s)" % (r.stdout, took))
        case("the table keeps the binary's order, not the selection's", [ln.split()[2] for ln in r.stdout.splitlines()
             if ln.startswith("| ")] == ["clean", "slow", "clean2"], r.stdout)

        r, took = sweep(d, "memcheck", {"SANITIZE_CASES": "clean,clean2,internal", "SANITIZE_LANES": "3",
                                        "STUB_SLEEP": "2"})
        case("three lanes run three 2-s cases at once, each with its row (one lane would take 6 s)",
             r.returncode == 0 and len(rows(r)) == 3 and took < 5.9, "%s (%.1f s)" % (r.stdout, took))

        r, _ = sweep(d, "helgrind", {})
        case("a tool other than racecheck or memcheck is refused, naming both", r.returncode == 2 and
             "racecheck or memcheck" in r.stderr, r.stderr)
    finish()


if __name__ == "__main__":
    main()
