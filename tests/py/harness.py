"""Shared helpers for the Python tests: one `case` per check, and the
RESULT line tools/run_tests.sh adds up."""
import os
import sys

# the binary under test: ./flowhn, or $FLOWHN (make test and make asan set it)
FLOWHN = os.environ.get("FLOWHN", os.path.abspath("flowhn"))

_counts = {"passed": 0, "failed": 0}


def case(name, ok, detail=""):
    if ok:
        _counts["passed"] += 1
        print("ok   " + name)
    else:
        _counts["failed"] += 1
        print("FAIL %s %s" % (name, detail))


def finish():
    print("RESULT %d passed, %d failed" % (_counts["passed"], _counts["failed"]))
    sys.exit(1 if _counts["failed"] else 0)
