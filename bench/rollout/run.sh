#!/usr/bin/env bash
# Rollout benchmarks:
#   1. gate evaluation   fleet-controller bench-gates: one staged-rollout tick over GATE_DEVICES
#                        devices' telemetry (install outcomes and runtime metrics) in SQLite
#   2. check-ins/s       wrk posting check-ins (CHECKIN_DEVICES distinct devices, an active staged
#                        rollout) to one fleet-controller on loopback; nginx answering a static
#                        file of the same size on the same machine is the peer, for scale
#
#   BIN=.build/release bash bench/rollout/run.sh
# Environment: GATE_DEVICES (100000), GATE_RUNS (3), CHECKIN_DEVICES (1000), WRK_SECONDS (10),
#              WRK_CONNECTIONS (16), KEEP_TMP=1 keeps the work directory.
set -euo pipefail

ORIG_PWD=$PWD
BIN=${BIN:-.build/release}
case $BIN in /*) ;; *) BIN="$ORIG_PWD/$BIN" ;; esac
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
REPO=$PWD
GATE_DEVICES=${GATE_DEVICES:-100000}
GATE_RUNS=${GATE_RUNS:-3}
CHECKIN_DEVICES=${CHECKIN_DEVICES:-1000}
WRK_SECONDS=${WRK_SECONDS:-10}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-16}
for v in GATE_DEVICES GATE_RUNS CHECKIN_DEVICES WRK_SECONDS WRK_CONNECTIONS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "bench/rollout: $v='${!v}' is not a positive whole number" >&2; exit 2; }
done
for exe in fleetctl fleet-controller; do
    [[ -x $BIN/$exe ]] || { echo "bench/rollout: $BIN/$exe is missing (swift build -c release)" >&2; exit 1; }
done

T=$(mktemp -d "${TMPDIR:-/tmp}/edgefleet-rollout-bench.XXXXXX")
PIDS=()
source "$REPO/scripts/procs.sh"
on_exit() {
    local status=$?
    trap - EXIT
    stop_all
    if ((status != 0)); then
        for log in "$T"/*.log; do [[ -s $log ]] && { echo "---- $log"; tail -n 20 "$log"; }; done >&2
    fi
    [[ ${KEEP_TMP:-0} == 1 ]] && echo "kept $T" || rm -rf "$T"
    exit "$status"
}
trap on_exit EXIT
step() { printf '\n==> %s\n' "$*"; }
fail() { echo "bench/rollout: $*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }

# --- 1. gate evaluation ------------------------------------------------------------------------

step "1. gate evaluation over $GATE_DEVICES devices (fleet-controller bench-gates, $GATE_RUNS ticks)"
"$BIN/fleet-controller" bench-gates --devices "$GATE_DEVICES" --runs "$GATE_RUNS" --work "$T/gates" --json >"$T/gates.json"
python3 - "$T/gates.json" <<'PY'
import json, sys, statistics
r = json.load(open(sys.argv[1]))
tick = statistics.median(r["tickSeconds"]); ev = statistics.median(r["evaluateSeconds"])
print(f"    devices {r['devices']:,}, cells {r['cells']}, telemetry events {r['events']:,}, cohort {r['cohortDevices']:,}")
print(f"    whole tick (SQLite reads, cohorts, gates, cell writes): median {tick*1000:.0f} ms "
      f"= {r['devices']/tick:,.0f} devices/s (steady; the first, reading the store whole: {r['firstTickSeconds']*1000:.0f} ms)")
for name in ["deviceCells", "members", "outcomes", "runtimeMetrics", "otherReads", "evaluation", "cellWrites"]:
    print(f"      {name:<16} first {r['tickStages'][0][name]*1000:7.0f} ms, steady median "
          f"{statistics.median(s[name] for s in r['tickStages'][1:])*1000:7.0f} ms")
print(f"    evaluation alone (cohorts, observations, gates):        median {ev*1000:.0f} ms")
PY
rm -rf "$T/gates"

# --- 2. check-ins per second --------------------------------------------------------------------

command -v wrk >/dev/null || fail "wrk is not installed (apt-get install wrk)"
step "2. check-ins per second: wrk against fleet-controller ($CHECKIN_DEVICES devices, staged rollout active)"
PORT=$(free_port)
"$BIN/fleetctl" keys init --dir "$T/keys" >"$T/keys.log" 2>&1
"$BIN/fleet-controller" serve --data "$T/controller" --listen "127.0.0.1:$PORT" --keys "$T/keys/online" --config fleet \
    --poll-seconds 30 --checkin-burst 1000000 --checkins-per-minute 1000000 >"$T/controller.log" 2>&1 &
PIDS+=("$!")
export FLEET_CONTROLLER="http://127.0.0.1:$PORT"
for _ in $(seq 1 150); do curl -fsS "$FLEET_CONTROLLER/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fsS "$FLEET_CONTROLLER/healthz" >/dev/null || fail "the controller did not come up"
ctl() { "$BIN/fleetctl" "$@" >>"$T/fleetctl.log" 2>&1 || fail "fleetctl $* failed"; }
head -c 65536 /dev/urandom >"$T/v1-int8.bin"; head -c 65536 /dev/urandom >"$T/v1-fp32.bin"
head -c 65536 /dev/urandom >"$T/v2-int8.bin"; head -c 65536 /dev/urandom >"$T/v2-fp32.bin"
ctl model add bench
for v in 1 2; do
    ctl variant add bench "$T/v$v-int8.bin" --name "bench$v-int8" --dtype int8 --format onnx
    ctl variant add bench "$T/v$v-fp32.bin" --name "bench$v-fp32" --dtype fp32 --format onnx
    ctl release create bench --version "$v" --keys "$T/keys" --variants "bench$v-int8,bench$v-fp32"
done
ctl rollout start bench@1 --all
ctl rollout start bench@2 --policy canary
SHA1=$(sha256sum "$T/v1-int8.bin" | cut -d' ' -f1)
FACTS=$(python3 -c 'import json; f = json.load(open("fleet/demo/edge-x86-vnni-01.json")); f.pop("deviceId"); print(json.dumps(f))')
cat >"$T/checkin.lua" <<LUA
local n = 0
local facts = [[$FACTS]]
request = function()
    n = n + 1
    local id = "bench-dev-" .. (n % $CHECKIN_DEVICES)
    local body = '{"facts":' .. facts .. ',"installed":{"bench":"$SHA1"},"agentVersion":"bench"}'
    return wrk.format("POST", "/v1/devices/" .. id .. "/checkin", {["Content-Type"] = "application/json"}, body)
end
LUA
# One pass registers every device; then the timed run.
wrk -t1 -c4 -d3s -s "$T/checkin.lua" "$FLEET_CONTROLLER" >"$T/warmup.log" 2>&1 || fail "wrk warm-up failed"
wrk -t2 -c"$WRK_CONNECTIONS" -d"${WRK_SECONDS}s" --latency -s "$T/checkin.lua" "$FLEET_CONTROLLER" >"$T/wrk.log" 2>&1 || fail "wrk failed"
grep -q "Non-2xx" "$T/wrk.log" && { cat "$T/wrk.log"; fail "some check-ins were answered with an error"; }
CHECKINS=$(awk '/Requests\/sec/ {print $2}' "$T/wrk.log")
P50=$(awk '/^ +50%/ {print $2}' "$T/wrk.log"); P99=$(awk '/^ +99%/ {print $2}' "$T/wrk.log")
SIZE=$(curl -fsS -X POST -H 'Content-Type: application/json' \
    -d "{\"facts\":$FACTS,\"installed\":{\"bench\":\"$SHA1\"},\"agentVersion\":\"bench\"}" \
    "$FLEET_CONTROLLER/v1/devices/bench-dev-1/checkin" | wc -c)
echo "    fleet-controller: $CHECKINS check-ins/s (p50 $P50, p99 $P99; answers of $SIZE bytes, $WRK_CONNECTIONS connections)"
DEVICES=$(curl -fsS "$FLEET_CONTROLLER/v1/status" | python3 -c 'import json, sys; print(json.load(sys.stdin)["devices"])')
[[ $DEVICES -ge $CHECKIN_DEVICES ]] || fail "only $DEVICES devices registered"

if command -v nginx >/dev/null; then
    NPORT=$(free_port)
    mkdir -p "$T/nginx/www" "$T/nginx/tmp"
    head -c "$SIZE" /dev/zero | tr '\0' 'x' >"$T/nginx/www/checkin.json"
    cat >"$T/nginx/nginx.conf" <<CONF
worker_processes 2;
daemon off;
pid $T/nginx/nginx.pid;
error_log $T/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $T/nginx/tmp; proxy_temp_path $T/nginx/tmp; fastcgi_temp_path $T/nginx/tmp;
    uwsgi_temp_path $T/nginx/tmp; scgi_temp_path $T/nginx/tmp;
    server { listen 127.0.0.1:$NPORT; root $T/nginx/www; location / { } }
}
CONF
    nginx -c "$T/nginx/nginx.conf" >"$T/nginx.log" 2>&1 &
    PIDS+=("$!")
    for _ in $(seq 1 50); do curl -fsS "http://127.0.0.1:$NPORT/checkin.json" >/dev/null 2>&1 && break; sleep 0.1; done
    wrk -t2 -c"$WRK_CONNECTIONS" -d"${WRK_SECONDS}s" "http://127.0.0.1:$NPORT/checkin.json" >"$T/wrk-nginx.log" 2>&1 || fail "wrk against nginx failed"
    NGINX=$(awk '/Requests\/sec/ {print $2}' "$T/wrk-nginx.log")
    python3 -c "import sys; c, n = float(sys.argv[1]), float(sys.argv[2]); print(f'    nginx, static file of the same size: {n:,.0f} requests/s; fleet-controller check-ins = {c/n:.3f} of that')" "$CHECKINS" "$NGINX"
else
    echo "    (nginx not installed: no static-file peer; apt-get install nginx)"
fi
