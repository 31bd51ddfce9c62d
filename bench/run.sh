#!/usr/bin/env bash
# EdgeFleet benchmarks against the peer tools, in one run, side by side:
#   1. verify throughput     fleet-agent hash          vs  sha256sum
#   2. download throughput   fleet-agent fetch         vs  curl, from a real fleet-controller
#   3. swap gap              a reader that opens MODELS/NAME/current/FILE in a tight loop while
#                            the running agent replaces v1 with v2
#   4. footprint             agent binary size and linkage, agent RSS idle and while installing
# then a summary table. See bench/README.md.
#
# Run from the repository root (or `make bench`):
#   BIN=.build/release bash bench/run.sh
# Environment:
#   BIN             where fleetctl, fleet-controller and fleet-agent are (default .build/release)
#   BENCH_SIZE_MB   size of the verify/download file in MiB (default 256)
#   MODEL_SIZE_MB   size of the swap model v1 in MiB; v2 is 1 MiB larger (default 90)
#   RUNS, WARMUP    timed runs and warm-up runs per tool (default 3 and 1)
#   IDLE_SECONDS    how long the agent polls with nothing to do before its idle RSS is read (default 5)
#   BENCH_STRICT=1  exit 3 when a goal (swap, size, RSS) is missed
#   KEEP_TMP=1      keep the temporary directory (printed at the start)
#   Deadlines, in seconds: HEALTH_DEADLINE (30), CMD_DEADLINE (600, each fleetctl call and each
#   timed run), CHECKIN_DEADLINE (60), INSTALL_DEADLINE (600, each model install)
set -euo pipefail

# --- settings ----------------------------------------------------------------------------------

ORIG_PWD=$PWD
BIN=${BIN:-.build/release}
case $BIN in /*) ;; *) BIN="$ORIG_PWD/$BIN" ;; esac
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
HERE=$REPO/bench

BENCH_SIZE_MB=${BENCH_SIZE_MB:-256}
MODEL_SIZE_MB=${MODEL_SIZE_MB:-90}
RUNS=${RUNS:-3}
WARMUP=${WARMUP:-1}
IDLE_SECONDS=${IDLE_SECONDS:-5}
SWAP_TAIL_SECONDS=${SWAP_TAIL_SECONDS:-1}
HEALTH_DEADLINE=${HEALTH_DEADLINE:-30}
CMD_DEADLINE=${CMD_DEADLINE:-600}
CHECKIN_DEADLINE=${CHECKIN_DEADLINE:-60}
INSTALL_DEADLINE=${INSTALL_DEADLINE:-600}
MODEL=bench-model
DL_MODEL=bench-download
DEVICE_ID=bench-agent-01
FACTS_TEMPLATE=fleet/demo/edge-x86-vnni-01.json   # x86-avx512-vnni, fibre: no byte budget

for v in BENCH_SIZE_MB MODEL_SIZE_MB RUNS WARMUP IDLE_SECONDS SWAP_TAIL_SECONDS HEALTH_DEADLINE CMD_DEADLINE \
         CHECKIN_DEADLINE INSTALL_DEADLINE; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "bench: $v='${!v}' is not a whole number" >&2; exit 2; }
done
((BENCH_SIZE_MB > 0 && MODEL_SIZE_MB > 0 && RUNS > 0)) || { echo "bench: sizes and RUNS must be positive" >&2; exit 2; }

# --- prerequisites: check, never install ---------------------------------------------------------

missing=()
declare -A PKG=([sha256sum]=coreutils [curl]=curl [python3]=python3 [timeout]=coreutils [ldd]=libc-bin
                [head]=coreutils [sync]=coreutils)
for tool in sha256sum curl python3 timeout ldd head sync; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool (Debian package ${PKG[$tool]})")
done
for exe in fleetctl fleet-controller fleet-agent; do
    [[ -x "$BIN/$exe" ]] || missing+=("$BIN/$exe (build it: swift build -c release, or make bench)")
done
[[ -f $FACTS_TEMPLATE ]] || missing+=("$REPO/$FACTS_TEMPLATE (device facts template)")
if ((${#missing[@]} > 0)); then
    echo "bench: cannot run, missing:" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    echo "bench: this script installs nothing; install the missing pieces and run again" >&2
    exit 1
fi
if command -v hyperfine >/dev/null 2>&1; then TIMER="hyperfine ($(command -v hyperfine))"; else TIMER="python time.perf_counter (hyperfine not installed)"; fi

# --- temporary directory, processes, cleanup ------------------------------------------------------

T=$(mktemp -d "${TMPDIR:-/tmp}/edgefleet-bench.XXXXXX")
RES=$T/results
LOGS=$T/logs
mkdir -p "$RES" "$LOGS"
PIDS=()   # every process this script started, and only those
CONTROLLER_PID=
AGENT_PID=
READER_PID=
SAMPLER_PID=

step() { printf '\n==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }

# SIGTERM, then up to 10 s for a clean exit, then SIGKILL.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/procs.sh"

show_logs() {
    local log
    for log in "$LOGS"/*.log; do
        [[ -s $log ]] || continue
        printf '\n---- last lines of %s ----\n' "${log#"$T"/}"
        tail -n 30 "$log"
    done
}

on_exit() {
    local status=$?
    trap - EXIT INT TERM
    if ((status != 0)); then
        echo >&2
        echo "bench FAILED (exit $status)" >&2
        show_logs >&2
    fi
    [[ -z ${NAP_PID:-} ]] || kill "$NAP_PID" 2>/dev/null || true
    stop_all
    if [[ ${KEEP_TMP:-0} == 1 ]]; then
        echo "bench: kept $T" >&2
    else
        rm -rf "$T"
    fi
    exit "$status"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() { echo "bench: $*" >&2; exit 1; }

# A sleep that INT/TERM can cut short (bash runs traps only between commands, but `wait` returns early).
NAP_PID=
nap() { sleep "$1" & NAP_PID=$!; wait "$NAP_PID" || true; NAP_PID=; }

# fleetctl with a deadline; its output goes to logs/fleetctl.log, its first line is echoed.
ctl() {
    local rc=0 out=$T/fleetctl.out t0
    printf '+ fleetctl %s\n' "$*" >>"$LOGS/fleetctl.log"
    t0=$(now)
    timeout "$CMD_DEADLINE" "$BIN/fleetctl" "$@" >"$out" 2>&1 || rc=$?
    cat "$out" >>"$LOGS/fleetctl.log"
    if ((rc == 124)); then
        fail "fleetctl $* did not finish within ${CMD_DEADLINE}s"
    elif ((rc != 0)); then
        fail "fleetctl $* failed (exit $rc)"
    fi
    info "fleetctl $1 $2 ($(since "$t0") s): $(head -n 1 "$out")"
}

# timing.py with its output logged; stops the run when a timed command fails.
timed() {
    local rc=0
    python3 "$HERE/timing.py" --runs "$RUNS" --warmup "$WARMUP" --timeout "$CMD_DEADLINE" "$@" \
        2>>"$LOGS/timing.log" || rc=$?
    ((rc == 0)) || fail "timing failed: $*"
}

alive() {
    local pid=$1 what=$2
    kill -0 "$pid" 2>/dev/null || fail "$what (pid $pid) exited; see its log below"
}

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }   # seconds since a now() value

json_get() {   # json_get FILE KEY  ->  the value at the top level of a JSON file
    python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

current_sha() { readlink "$MODELS/$MODEL/current" 2>/dev/null || true; }

echo "EdgeFleet benchmarks"
info "binaries:  $BIN"
info "work dir:  $T"
info "timing:    $TIMER"
info "sizes:     verify/download ${BENCH_SIZE_MB} MiB, swap models ${MODEL_SIZE_MB} MiB; MB/s means 10^6 bytes/s"
DEBUG_BUILD=0
[[ $BIN == */debug || $BIN == */debug/ ]] && DEBUG_BUILD=1
((DEBUG_BUILD == 0)) || info "NOTE: debug binaries; the numbers are not meaningful"

# --- 1. verify throughput --------------------------------------------------------------------------

step "1. verify throughput: fleet-agent hash vs sha256sum (${BENCH_SIZE_MB} MiB random file)"
BIG=$T/blob.bin
BIG_BYTES=$((BENCH_SIZE_MB * 1048576))
head -c "$BIG_BYTES" /dev/urandom >"$BIG"
[[ $(stat -c %s "$BIG") == "$BIG_BYTES" ]] || fail "could not write $BIG_BYTES random bytes to $BIG"

timed --label "fleet-agent hash" --bytes "$BIG_BYTES" --capture --out "$RES/verify_agent.json" \
    -- "$BIN/fleet-agent" hash "$BIG"
timed --label "sha256sum" --bytes "$BIG_BYTES" --capture --out "$RES/verify_sha256sum.json" \
    -- sha256sum "$BIG"
agent_line=$(json_get "$RES/verify_agent.json" stdout)
peer_line=$(json_get "$RES/verify_sha256sum.json" stdout)
agent_sha=$(awk '{print $1}' <<<"$agent_line")
agent_len=$(awk '{print $2}' <<<"$agent_line")
BIG_SHA=$(awk '{print $1}' <<<"$peer_line")
[[ $BIG_SHA =~ ^[0-9a-f]{64}$ ]] || fail "sha256sum printed no hash: $peer_line"
[[ $agent_sha == "$BIG_SHA" ]] || fail "hashes differ: fleet-agent hash printed '$agent_line', sha256sum '$peer_line'"
[[ $agent_len == "$BIG_BYTES" ]] || fail "fleet-agent hash reports $agent_len bytes, the file has $BIG_BYTES"
info "same sha256 from both: $BIG_SHA"

# --- controller --------------------------------------------------------------------------------

step "start fleet-controller"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
export FLEET_CONTROLLER="http://127.0.0.1:$PORT"
ctl keys init --dir "$T/keys"
for f in offline/release.key online/director.key online/timestamp.key root.json; do
    [[ -s $T/keys/$f ]] || fail "fleetctl keys init did not write $T/keys/$f"
done
"$BIN/fleet-controller" serve --data "$T/controller" --listen "127.0.0.1:$PORT" \
    --keys "$T/keys/online" --config fleet >"$LOGS/controller.log" 2>&1 &
CONTROLLER_PID=$!
PIDS+=("$CONTROLLER_PID")
deadline=$((SECONDS + HEALTH_DEADLINE))
until curl -fsS "$FLEET_CONTROLLER/healthz" >/dev/null 2>&1; do
    alive "$CONTROLLER_PID" "the controller"
    ((SECONDS < deadline)) || fail "the controller did not answer /healthz within ${HEALTH_DEADLINE}s"
    sleep 0.2
done
info "controller is up at $FLEET_CONTROLLER (pid $CONTROLLER_PID)"

# --- 2. download throughput ------------------------------------------------------------------------

step "2. download throughput: fleet-agent fetch vs curl (${BENCH_SIZE_MB} MiB artifact)"
ctl model add "$DL_MODEL"
ctl variant add "$DL_MODEL" "$BIG" --name "$DL_MODEL-blob" --format safetensors --dtype fp32
URL=$FLEET_CONTROLLER/v1/artifacts/$BIG_SHA
served=$(curl -fsSI "$URL" | tr -d '\r' | awk 'tolower($1) == "content-length:" {print $2}') \
    || fail "HEAD $URL failed"
[[ $served == "$BIG_BYTES" ]] || fail "the controller serves $URL with Content-Length '$served', expected $BIG_BYTES"
info "artifact: $URL"

mkdir -p "$T/dl"
timed --label "fleet-agent fetch" --bytes "$BIG_BYTES" --rm "$T/dl/agent.out" --out "$RES/download_agent.json" \
    -- "$BIN/fleet-agent" fetch "$URL" --out "$T/dl/agent.out"
got=$(sha_of "$T/dl/agent.out")
[[ $got == "$BIG_SHA" ]] || fail "fleet-agent fetch wrote a file with sha256 $got, expected $BIG_SHA"
rm -f "$T/dl/agent.out"

timed --label "curl" --bytes "$BIG_BYTES" --rm "$T/dl/curl.out" --out "$RES/download_curl.json" \
    -- curl -sS -o "$T/dl/curl.out" "$URL"
got=$(sha_of "$T/dl/curl.out")
[[ $got == "$BIG_SHA" ]] || fail "curl wrote a file with sha256 $got, expected $BIG_SHA"
rm -f "$T/dl/curl.out"

# fleet-agent fetch fsyncs the file when done, curl does not: the same with an fsync, for fairness.
# shellcheck disable=SC2016   # $1/$2 are for the inner sh
timed --label "curl + sync FILE" --bytes "$BIG_BYTES" --rm "$T/dl/curl.out" --out "$RES/download_curl_fsync.json" \
    -- sh -c 'curl -sS -o "$1" "$2" && sync "$1"' sh "$T/dl/curl.out" "$URL"
got=$(sha_of "$T/dl/curl.out")
[[ $got == "$BIG_SHA" ]] || fail "curl (+ sync) wrote a file with sha256 $got, expected $BIG_SHA"
rm -f "$T/dl/curl.out"
info "all downloads hash to $BIG_SHA"

# --- agent, idle ---------------------------------------------------------------------------------------

step "start fleet-agent (polls every 1 s) and let it idle"
python3 - "$FACTS_TEMPLATE" "$T/facts.json" "$DEVICE_ID" <<'PY'
import json, sys
facts = json.load(open(sys.argv[1]))
facts["deviceId"] = sys.argv[3]
facts["hostname"] = sys.argv[3]
json.dump(facts, open(sys.argv[2], "w"), indent=2)
PY
AGENT_DIR=$T/agent
MODELS=$AGENT_DIR/models
# shellcheck disable=SC2016   # $EDGEFLEET_MODEL_PATH is for the agent's shell
"$BIN/fleet-agent" run --controller "$FLEET_CONTROLLER" \
    --state "$AGENT_DIR/state" --models "$MODELS" \
    --facts "$T/facts.json" --root "$T/keys/root.json" --poll-seconds 1 \
    --health-command 'test -s "$EDGEFLEET_MODEL_PATH"' >"$LOGS/agent.log" 2>&1 &
AGENT_PID=$!
PIDS+=("$AGENT_PID")
deadline=$((SECONDS + CHECKIN_DEADLINE))
until curl -fsS "$FLEET_CONTROLLER/v1/devices/$DEVICE_ID" >/dev/null 2>&1; do
    alive "$AGENT_PID" "the agent"
    alive "$CONTROLLER_PID" "the controller"
    ((SECONDS < deadline)) || fail "the agent did not check in within ${CHECKIN_DEADLINE}s"
    sleep 0.2
done
info "agent $DEVICE_ID checked in (pid $AGENT_PID); idling ${IDLE_SECONDS}s with no rollout"
nap "$IDLE_SECONDS"
alive "$AGENT_PID" "the agent"
[[ -z $(current_sha) ]] || fail "the agent installed something while no rollout was active"
python3 "$HERE/procmem.py" status "$AGENT_PID" --out "$RES/mem_idle.json"

# --- 3. swap gap ---------------------------------------------------------------------------------------

step "3. swap gap: v1 -> v2 of $MODEL (${MODEL_SIZE_MB} MiB) while a reader opens current/ in a loop"
# Same file name in both versions, so the path through `current` stays the same.
FILE=$MODEL.safetensors
mkdir -p "$T/src/v1" "$T/src/v2"
V1=$T/src/v1/$FILE
V2=$T/src/v2/$FILE
V1_BYTES=$((MODEL_SIZE_MB * 1048576))
V2_BYTES=$((V1_BYTES + 1048576))
head -c "$V1_BYTES" /dev/urandom >"$V1"
head -c "$V2_BYTES" /dev/urandom >"$V2"
V1_SHA=$(sha_of "$V1")
V2_SHA=$(sha_of "$V2")
[[ $V1_SHA != "$V2_SHA" ]] || fail "v1 and v2 came out identical"

ctl model add "$MODEL"
ctl variant add "$MODEL" "$V1" --name "$MODEL-v1" --format safetensors --dtype fp32
ctl release create "$MODEL" --version 1.0.0 --keys "$T/keys" --variants "$MODEL-v1"
t0=$(now)
ctl rollout start "$MODEL@1.0.0" --all

wait_current() {   # wait_current SHA WHAT
    local want=$1 what=$2 deadline=$((SECONDS + INSTALL_DEADLINE))
    until [[ $(current_sha) == "$want" ]]; do
        alive "$AGENT_PID" "the agent"
        alive "$CONTROLLER_PID" "the controller"
        [[ -z $READER_PID ]] || alive "$READER_PID" "the swap reader"
        ((SECONDS < deadline)) || fail "$what: $MODELS/$MODEL/current is '$(current_sha)', not $want after ${INSTALL_DEADLINE}s"
        sleep 0.05
    done
}
# The agent logs every install step as `... sha256=<first 12> ... install <kind>`.
wait_committed() {   # wait_committed SHA WHAT
    local want=${1:0:12} what=$2 deadline=$((SECONDS + INSTALL_DEADLINE)) line
    while :; do
        line=$(grep -E "sha256=$want.*install (committed|rolled-back|failed)" "$LOGS/agent.log" | tail -n 1 || true)
        case $line in
            *"install committed"*) return 0 ;;
            *"install rolled-back"* | *"install failed"*) fail "$what: the agent reports: $line" ;;
        esac
        alive "$AGENT_PID" "the agent"
        ((SECONDS < deadline)) || fail "$what: no 'install committed' line for sha256=$want in the agent log after ${INSTALL_DEADLINE}s"
        sleep 0.05
    done
}
wait_current "$V1_SHA" "install of v1"
wait_committed "$V1_SHA" "install of v1"
info "v1 installed $(since "$t0") s after the rollout started: current -> $(current_sha)"
[[ $(sha_of "$MODELS/$MODEL/current/$FILE") == "$V1_SHA" ]] || fail "current/$FILE is not v1"

# v2 is uploaded before the reader starts; releasing and rolling it out is what the reader watches.
ctl variant add "$MODEL" "$V2" --name "$MODEL-v2" --format safetensors --dtype fp32

HWM_RESET=0
if [[ $(python3 "$HERE/procmem.py" reset-hwm "$AGENT_PID") == reset ]]; then HWM_RESET=1; fi
python3 "$HERE/procmem.py" sample "$AGENT_PID" --out "$RES/mem_install_sample.json" >"$LOGS/sampler.log" 2>&1 &
SAMPLER_PID=$!
PIDS+=("$SAMPLER_PID")
python3 "$HERE/swapreader.py" --path "$MODELS/$MODEL/current/$FILE" \
    --variant "v1=$V1" --variant "v2=$V2" --ready "$T/reader.ready" --out "$RES/swap.json" \
    --max-seconds $((INSTALL_DEADLINE + 120)) >"$LOGS/reader.log" 2>&1 &
READER_PID=$!
PIDS+=("$READER_PID")
deadline=$((SECONDS + 30))
until [[ -e $T/reader.ready ]]; do
    alive "$READER_PID" "the swap reader"
    ((SECONDS < deadline)) || fail "the swap reader read no complete model within 30s"
    sleep 0.05
done
info "reader running (pid $READER_PID), memory sampler running (pid $SAMPLER_PID)"

ctl release create "$MODEL" --version 2.0.0 --keys "$T/keys" --variants "$MODEL-v2"
t0=$(now)
ctl rollout start "$MODEL@2.0.0" --all
wait_current "$V2_SHA" "install of v2"
t1=$(now)
info "v2 current $(since "$t0") s after the rollout started"
wait_committed "$V2_SHA" "install of v2"
info "v2 committed $(since "$t0") s after the rollout started"
nap "$SWAP_TAIL_SECONDS"   # keep reading a little after the commit
alive "$READER_PID" "the swap reader"
stop_pid "$READER_PID"
READER_PID=
stop_pid "$SAMPLER_PID"
SAMPLER_PID=
[[ -s $RES/swap.json ]] || fail "the swap reader wrote no result"
[[ -s $RES/mem_install_sample.json ]] || fail "the memory sampler wrote no result"
python3 "$HERE/procmem.py" status "$AGENT_PID" --out "$RES/mem_install_status.json" >/dev/null
[[ $(sha_of "$MODELS/$MODEL/current/$FILE") == "$V2_SHA" ]] || fail "current/$FILE is not v2"
python3 - "$t0" "$t1" "$V2_BYTES" >"$RES/swap_meta.json" <<'PY'
import json, sys
print(json.dumps({"install_seconds": float(sys.argv[2]) - float(sys.argv[1]), "v2_bytes": int(sys.argv[3])}))
PY
python3 - "$RES/swap.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"    reads {r['reads']}, failed {r['failed']}, longest gap {r['longest_gap_ms']:.1f} ms, "
      f"seen {r['seen']}, went back {r['went_back']}")
for k, v in r["failures_by_reason"].items():
    print(f"      failed: {k}: {v}")
PY
v2_seen=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["seen"]["v2"])' "$RES/swap.json")
((v2_seen > 0)) || fail "the reader never read v2 although current points at it"

# --- 4. footprint --------------------------------------------------------------------------------------

step "4. footprint of $BIN/fleet-agent"
python3 "$HERE/elfinfo.py" "$BIN/fleet-agent" --out "$RES/elf.json"
ldd "$BIN/fleet-agent" >"$LOGS/ldd.log" 2>&1 || true
if grep -q 'libswift[^ ]*\.so' "$LOGS/ldd.log"; then
    info "ldd: links the Swift runtime dynamically:"
    grep -o 'libswift[^ ]*\.so[^ ]*' "$LOGS/ldd.log" | sort -u | tr '\n' ' ' | fold -s -w 96 | sed 's/^/      /'
    echo
    LDD_SWIFT=1
else
    info "ldd: no libswift*.so"
    LDD_SWIFT=0
fi
info "ldd: shared libraries it loads (direct and indirect):"
awk '$1 !~ /^linux-vdso/ {print $1}' "$LOGS/ldd.log" | tr '\n' ' ' | fold -s -w 96 | sed 's/^/      /'
echo
stripped=$(json_get "$RES/elf.json" stripped)
MAKE_AGENT=0
if [[ $stripped == True && $LDD_SWIFT == 0 ]]; then
    MAKE_AGENT=1
    info "built by \`make agent\`: yes (stripped, Swift stdlib static)"
else
    why=()
    [[ $stripped == True ]] || why+=("not stripped")
    ((LDD_SWIFT == 0)) || why+=("Swift stdlib linked dynamically")
    why_text=$(IFS=,; echo "${why[*]}")
    info "built by \`make agent\`: no (${why_text//,/, }); build it with \`make agent\` to measure the shipped binary"
fi
python3 "$HERE/procmem.py" status "$AGENT_PID" --out "$RES/mem_after_install.json" >/dev/null
python3 - "$RES/mem_idle.json" "$RES/mem_install_sample.json" "$RES/mem_install_status.json" "$HWM_RESET" <<'PY'
import json, sys
idle, sample, status = (json.load(open(p)) for p in sys.argv[1:4])
print(f"    RSS idle:       VmRSS {idle['VmRSS_bytes'] / 1e6:.1f} MB, VmHWM {idle['VmHWM_bytes'] / 1e6:.1f} MB")
note = "" if sys.argv[4] == "1" else " (VmHWM could not be reset: it includes the v1 install)"
print(f"    RSS installing: VmHWM {status['VmHWM_bytes'] / 1e6:.1f} MB, max sampled VmRSS "
      f"{sample['max_VmRSS_bytes'] / 1e6:.1f} MB ({sample['samples']} samples){note}")
PY

python3 - "$RES/meta.json" "$BIN" "$DEBUG_BUILD" "$MAKE_AGENT" "$HWM_RESET" "$IDLE_SECONDS" <<'PY'
import json, sys
out, bin_, debug, make_agent, hwm_reset, idle = sys.argv[1:]
json.dump({"bin": bin_, "debug_build": debug == "1", "make_agent_build": make_agent == "1",
           "hwm_reset": hwm_reset == "1", "idle_seconds": int(idle)}, open(out, "w"))
PY

# --- summary -----------------------------------------------------------------------------------------

step "stop agent and controller"
stop_all
CONTROLLER_PID=
AGENT_PID=

step "summary"
strict=()
[[ ${BENCH_STRICT:-0} == 1 ]] && strict=(--strict)
report_rc=0
python3 "$HERE/report.py" "$RES" "${strict[@]}" || report_rc=$?
if ((report_rc == 3)); then
    # Goals missed under BENCH_STRICT=1: not a breakage, so no log dump.
    trap - EXIT
    if [[ ${KEEP_TMP:-0} == 1 ]]; then echo "bench: kept $T" >&2; else rm -rf "$T"; fi
    exit 3
fi
((report_rc == 0)) || fail "report.py failed (exit $report_rc)"
