#!/bin/sh
# Runs each test binary given (and tests/py/*.py when python3 is present),
# adds up their "RESULT p passed, f failed" lines and prints the total last.
# A binary that dies without a RESULT line counts as one failed case.
pass=0; fail=0
for t in "$@"; do
    echo "== $t"
    out=$(timeout 900 "$t" 2>&1); rc=$?
    echo "$out" | grep -v '^ok ' | grep -v '^RESULT'
    line=$(echo "$out" | grep '^RESULT' | tail -1)
    if [ -z "$line" ]; then
        echo "FAIL $t: exited with status $rc and no RESULT line"; fail=$((fail+1)); continue
    fi
    p=$(echo "$line" | awk '{print $2}'); f=$(echo "$line" | awk '{print $4}')
    echo "   $p passed, $f failed"
    pass=$((pass+p)); fail=$((fail+f))
done
if [ -z "$FLOWHN_NO_PY_TESTS" ] && [ -d tests/py ] && command -v python3 >/dev/null; then
    for t in tests/py/test_*.py; do
        [ -f "$t" ] || continue
        echo "== $t"
        out=$(timeout 900 python3 "$t" 2>&1); rc=$?
        echo "$out" | grep -v '^ok ' | grep -v '^RESULT'
        line=$(echo "$out" | grep '^RESULT' | tail -1)
        if [ -z "$line" ]; then echo "FAIL $t: status $rc, no RESULT line"; fail=$((fail+1)); continue; fi
        p=$(echo "$line" | awk '{print $2}'); f=$(echo "$line" | awk '{print $4}')
        echo "   $p passed, $f failed"
        pass=$((pass+p)); fail=$((fail+f))
    done
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
