#!/usr/bin/env bash
# Runs the whole test suite (`swift test`, already built) under a watchdog, for `make test`.
#
# - Output is line-buffered, so a log cut off by an outside timeout ends at the last line printed,
#   not at the last 4 KiB block that happened to be flushed.
# - Swift Testing's event stream goes to $EVENTS; every REPORT_EVERY seconds the tests that have
#   been running longer than that are listed (name, minutes), so a test that hangs is named in the
#   log while it hangs.
# - After TEST_TIMEOUT seconds the run is stopped: the tests still running and the processes the
#   run started (with their command lines) are printed, everything is killed, and the script
#   fails. A hang then costs TEST_TIMEOUT, not the whole CI budget, and says where it was.
#
#   TEST_TIMEOUT   seconds for the whole run (default 2700; the suite takes 4 to 7 minutes on 2 cores)
#   REPORT_EVERY   seconds between reports of long-running tests (default 300)
#   SWIFT          the swift driver (default swift)
#   extra arguments go to `swift test` (e.g. --filter X)
set -uo pipefail

SWIFT=${SWIFT:-swift}
TEST_TIMEOUT=${TEST_TIMEOUT:-2700}
REPORT_EVERY=${REPORT_EVERY:-300}
EVENTS=${EVENTS:-.build/test-events.jsonl}
mkdir -p "$(dirname "$EVENTS")"
rm -f "$EVENTS"

# The tests that started and have not ended, longest first: "minutes  id".
running_tests() {
    [[ -s "$EVENTS" ]] || return 0
    python3 - "$EVENTS" "$1" <<'PY'
import json, sys, datetime
path, older = sys.argv[1], float(sys.argv[2])
started, now = {}, datetime.datetime.now(datetime.timezone.utc).timestamp()
for line in open(path, errors="replace"):
    try:
        e = json.loads(line)
    except ValueError:
        continue  # a line being written
    if e.get("kind") != "event":
        continue
    p = e["payload"]
    case = p.get("_testCase") or {}
    key = (p.get("testID"), case.get("id", ""), case.get("displayName", ""))
    if p.get("kind") == "testStarted" or p.get("kind") == "testCaseStarted":
        started[key] = p.get("instant", {}).get("since1970", now)
    elif p.get("kind") in ("testEnded", "testCaseEnded", "testSkipped"):
        started.pop(key, None)
for (test, _, case), since in sorted(started.items(), key=lambda kv: kv[1]):
    age = now - since
    # Suites span their tests: name only functions (ids with a "/").
    if age >= older and test and "/" in test:
        print(f"{age / 60:6.1f} min  {test}{'  (' + case + ')' if case else ''}")
PY
}

# The children of $1 (read from /proc: no procps needed).
children() {
    local stat line fields
    for stat in /proc/[0-9]*/stat; do
        { read -r line < "$stat"; } 2>/dev/null || continue
        # pid (comm) state ppid ...: comm may hold spaces; split what follows its ')'.
        read -r -a fields <<< "${line##*) }"
        [[ "${fields[1]}" == "$1" ]] && echo "${line%% *}"
    done
}

# Every process below $1, with its command line.
descendants() {
    local pid
    for pid in $(children "$1"); do
        printf '%s %s\n' "$pid" "$(tr '\0' ' ' 2>/dev/null < /proc/"$pid"/cmdline | cut -c1-300)"
        descendants "$pid"
    done
}

stdbuf -oL -eL "$SWIFT" test --skip-build --event-stream-output-path "$EVENTS" --event-stream-version 0 "$@" &
run=$!
start=$(date +%s)
next_report=$((start + REPORT_EVERY))
while kill -0 "$run" 2>/dev/null; do
    now=$(date +%s)
    if (( now - start >= TEST_TIMEOUT )); then
        echo
        echo "run-tests: the suite has run for $TEST_TIMEOUT s (TEST_TIMEOUT); stopping it."
        echo "run-tests: tests still running:"
        running_tests 0
        echo "run-tests: processes of the run:"
        procs=$(descendants "$run")
        echo "$procs"
        for pid in $(cut -d' ' -f1 <<< "$procs"); do kill -KILL "$pid" 2>/dev/null; done
        kill -KILL "$run" 2>/dev/null
        wait "$run" 2>/dev/null
        exit 1
    fi
    if (( now >= next_report )); then
        long=$(running_tests "$REPORT_EVERY")
        if [[ -n "$long" ]]; then
            echo "run-tests: after $(( (now - start) / 60 )) min, running for over $(( REPORT_EVERY / 60 )) min:"
            echo "$long"
        fi
        next_report=$((now + REPORT_EVERY))
    fi
    sleep 5
done
wait "$run"
