#!/usr/bin/env bash
# Runs scripts/test.sh N times in a row (default 10) and counts: one line per
# run (ok, or the names of the tests that failed), each run's output kept in
# a log folder, exit 1 if any run failed. For hunting flaky tests; run it on
# a loaded machine (two side by side load it more: each run starts its own
# throwaway PostgreSQL).
#
#   scripts/test-repeat.sh 10
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
logs=$(mktemp -d "${TMPDIR:-/tmp}/test-repeat.XXXXXX")
passed=0
for i in $(seq 1 "$runs"); do
    log="$logs/run-$i.log"
    started=$(date +%s)
    if scripts/test.sh >"$log" 2>&1; then
        passed=$((passed + 1))
        echo "run $i: ok ($(($(date +%s) - started)) s)"
    else
        failed=$(grep -E '^test .* FAILED$' "$log" | sed -e 's/^test //' -e 's/ \.\.\. FAILED$//' | tr '\n' ' ')
        echo "run $i: FAILED ${failed:-(no test failed: see $log)}"
    fi
done
echo "$passed of $runs runs passed; logs in $logs"
[ "$passed" -eq "$runs" ]
