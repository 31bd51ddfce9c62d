#!/usr/bin/env bash
# Scale benchmark: fleet-controller replicas behind nginx, driven open loop by fleet-sim.
#
#   1. PostgreSQL (when `fleet-controller serve` has --database) and nginx, as plain processes in
#      a temporary folder (RUNBOOK); one controller replica, then three (three need PostgreSQL).
#   2. The fleet: `fleet-controller seed-devices` writes SCALE_DEVICES devices (into PostgreSQL,
#      or the SQLite file of the data directory); without that
#      command, FALLBACK_DEVICES devices register by checking in once each (said in the output).
#      Devices carry labels (region, site: SimulatedDevice.labels) that the rollout's selector reads.
#   3. A STAGED rollout in force while measuring (bench/scale/staged.yaml: a canary phase of 5% of
#      each cell that bakes for a day, on the devices of SELECTOR): most check-ins are idle (held
#      waiting for the phase, or not selected), about 5% of the selected ones are a device's first
#      answer with a signed assignment, followed by its install events, as in a fleet mid-rollout.
#   4. RATE check-ins/s (1M devices at a 15 min poll: 1,111/s) for DURATION s through nginx, then
#      --find-max from FIND_MAX_START/s up and DURATION s at the highest rate that held (before the
#      RATE run, which may overload the box). Reports achieved rate, latency quantiles (from the scheduled send), errors,
#      CPU-seconds per check-in of each process (controller replicas, postgres, nginx, fleet-sim),
#      database commits/s, and bytes on the wire per idle check-in.
#   5. WORST_CASE=1: after the staged runs, a second release to every device at once (--all), so
#      every measured check-in is the device's first (assignment signed, install events posted);
#      reported separately, at WORST_RATE (RATE).
#
#   BIN=.build/release bash bench/scale/run.sh
# Environment: SCALE_DEVICES (1000000), FALLBACK_DEVICES (20000), SEED_RATE (50), RATE (1111),
#   DURATION (60), CONNECTIONS (64), FIND_MAX (1), FIND_MAX_START (25), STEP_SECONDS (15), STEP_FACTOR (1.5), P99_TARGET_MS (250),
#   TICKLESS_WAIT (0: seconds to wait before measuring a build whose /healthz does not count gate ticks),
#   PROFILE=PREFIX (perf profile of the first replica per measured run), PG_STATEMENTS=1 (the statements per check-in), REPLICAS ("1 3"), STORE (postgres when the build has it; sqlite: the single box), SELECTOR ("region!=ap-east"), PG_POOL (4: connections per replica; the controller's default is 12), EVENT_LOOPS (each replica's --event-loops; default: cores ÷ replicas, at least 1, with more than one replica), WORST_CASE (1), WORST_RATE (RATE), IDLE_SECONDS (10: the replicas' CPU with no check-ins, before the runs), KEEP_TMP=1 keeps the work directory.
set -euo pipefail

ORIG_PWD=$PWD
BIN=${BIN:-.build/release}
case $BIN in /*) ;; *) BIN="$ORIG_PWD/$BIN" ;; esac
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
REPO=$PWD
SCALE_DEVICES=${SCALE_DEVICES:-1000000}
FALLBACK_DEVICES=${FALLBACK_DEVICES:-20000}
SEED_RATE=${SEED_RATE:-50}
RATE=${RATE:-1111}
DURATION=${DURATION:-60}
CONNECTIONS=${CONNECTIONS:-64}
FIND_MAX=${FIND_MAX:-1}
STEP_SECONDS=${STEP_SECONDS:-15}
FIND_MAX_START=${FIND_MAX_START:-25}
STEP_FACTOR=${STEP_FACTOR:-1.5}
TICKLESS_WAIT=${TICKLESS_WAIT:-0}
# Connections per replica: the replicas share PostgreSQL's two cores here (README, "Connections").
PG_POOL=${PG_POOL:-4}
P99_TARGET_MS=${P99_TARGET_MS:-250}
REPLICAS=${REPLICAS:-"1 3"}
SELECTOR=${SELECTOR:-"region!=ap-east"}
WORST_CASE=${WORST_CASE:-1}
WORST_RATE=${WORST_RATE:-$RATE}
PG_STATEMENTS=${PG_STATEMENTS:-0}
IDLE_SECONDS=${IDLE_SECONDS:-10}
PREFIX=sim-
for v in SCALE_DEVICES FALLBACK_DEVICES SEED_RATE RATE WORST_RATE DURATION CONNECTIONS STEP_SECONDS FIND_MAX_START P99_TARGET_MS PG_POOL; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "bench/scale: $v='${!v}' is not a positive whole number" >&2; exit 2; }
done
[[ -z ${EVENT_LOOPS:-} || $EVENT_LOOPS =~ ^[1-9][0-9]*$ ]] || { echo "bench/scale: EVENT_LOOPS='$EVENT_LOOPS' is not a positive whole number" >&2; exit 2; }
[[ $IDLE_SECONDS =~ ^[0-9]+$ ]] || { echo "bench/scale: IDLE_SECONDS='$IDLE_SECONDS' is not a whole number" >&2; exit 2; }
[[ $TICKLESS_WAIT =~ ^[0-9]+$ ]] || { echo "bench/scale: TICKLESS_WAIT='$TICKLESS_WAIT' is not a whole number" >&2; exit 2; }
[[ $STEP_FACTOR =~ ^[1-9][0-9]*(\.[0-9]+)?$ ]] && python3 -c "import sys; sys.exit(float('$STEP_FACTOR') <= 1)" ||
    { echo "bench/scale: STEP_FACTOR='$STEP_FACTOR' is not a number above 1" >&2; exit 2; }
for exe in fleetctl fleet-controller fleet-sim; do
    [[ -x $BIN/$exe ]] || { echo "bench/scale: $BIN/$exe is missing (swift build -c release)" >&2; exit 1; }
done
NGINX=$(command -v nginx || true)
[[ -n $NGINX ]] || { [[ -x /usr/sbin/nginx ]] && NGINX=/usr/sbin/nginx; }
[[ -n $NGINX ]] || { echo "bench/scale: nginx is not installed (apt-get install nginx-light)" >&2; exit 1; }

T=$(mktemp -d "${TMPDIR:-/tmp}/edgefleet-scale-bench.XXXXXX")
chmod 711 "$T"    # the postgres user must be able to enter
PIDS=()
CONTROLLERS=()
NGX=""
PG=""
PGPID=""
source "$REPO/scripts/procs.sh"
stop_nginx() { [[ -n $NGX ]] && { kill -QUIT "$NGX" 2>/dev/null || true; wait "$NGX" 2>/dev/null || true; }; NGX=""; }
stop_controllers() { local p; for p in "${CONTROLLERS[@]}"; do stop_pid "$p"; done; CONTROLLERS=(); }
on_exit() {
    local status=$?
    trap - EXIT
    stop_nginx
    stop_controllers
    [[ -n $PGPID ]] && { kill -INT "$PGPID" 2>/dev/null || true; }   # fast shutdown of the postmaster; runuser then exits
    [[ -n $PG ]] && { wait "$PG" 2>/dev/null || true; }
    stop_all
    if ((status != 0)); then
        for log in "$T"/*.log "$T"/nginx/error.log; do [[ -s $log ]] && { echo "---- $log"; tail -n 20 "$log"; }; done >&2
    fi
    [[ ${KEEP_TMP:-0} == 1 ]] && echo "kept $T" || rm -rf "$T"
    exit "$status"
}
trap on_exit EXIT
step() { printf '\n==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
fail() { echo "bench/scale: $*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
wait_http() { local i; for i in $(seq 1 300); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; fail "$1 did not answer"; }

# --- what this controller build can do ----------------------------------------------------------

HAS_DB=0
# grep -q stops reading at the first match; under pipefail the writer's SIGPIPE would fail the test.
grep -q -- --database <<<"$("$BIN/fleet-controller" serve --help 2>&1)" && HAS_DB=1
case ${STORE:-} in
    "" | postgres) ;;
    sqlite) HAS_DB=0 ;;   # the single box: one replica on its SQLite file
    *) echo "bench/scale: STORE='$STORE' is neither sqlite nor postgres" >&2; exit 2 ;;
esac
HAS_SEED=0
# (`seed-devices --help` would not do: an unknown subcommand prints the top-level help, status 0.)
"$BIN/fleet-controller" --help 2>&1 | grep -Eq '^[[:space:]]+seed-devices([[:space:]]|$)' && HAS_SEED=1
step "setup"
if ((HAS_DB)); then
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [[ -x $PGBIN/postgres ]] || fail "fleet-controller has --database but PostgreSQL is not installed (apt-get install postgresql)"
    note "fleet-controller serve has --database: PostgreSQL store, replicas: $REPLICAS"
else
    if [[ ${STORE:-} == sqlite ]]; then
        note "STORE=sqlite: the single box, one replica on its SQLite file"
    else
        note "fleet-controller serve has no --database yet: one replica on SQLite (the 3-replica run needs PostgreSQL)"
    fi
    REPLICAS=1
fi
if ((HAS_SEED)); then
    DEVICES=$SCALE_DEVICES
    note "fleet-controller seed-devices exists: $DEVICES devices seeded into the database"
else
    DEVICES=$FALLBACK_DEVICES
    note "fleet-controller seed-devices is missing: FALLING BACK to $DEVICES devices registered by one check-in each (not $SCALE_DEVICES)"
fi
CLK_TCK=$(getconf CLK_TCK)

"$BIN/fleetctl" keys init --dir "$T/keys" >"$T/keys.log" 2>&1
mkdir -p "$T/shared"

DBURL=""
if ((HAS_DB)); then
    PGPORT=$(free_port)
    mkdir "$T/pg" && chown postgres "$T/pg"
    runuser -u postgres -- "$PGBIN/initdb" -D "$T/pg/data" -U fleet --auth=trust --no-sync -E UTF8 --locale=C.UTF-8 >"$T/initdb.log" 2>&1
    PGSTAT=()
    ((PG_STATEMENTS)) && PGSTAT=(-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all)
    runuser -u postgres -- "$PGBIN/postgres" -D "$T/pg/data" -p "$PGPORT" -k "$T/pg" -c listen_addresses=127.0.0.1 \
        -c max_connections=200 "${PGSTAT[@]}" >"$T/postgres.log" 2>&1 &
    PG=$!   # runuser, which does not pass signals on: the postmaster is its child (PGPID)
    for _ in $(seq 1 200); do pg_isready -q -h 127.0.0.1 -p "$PGPORT" && break; sleep 0.05; done
    pg_isready -q -h 127.0.0.1 -p "$PGPORT" || fail "PostgreSQL did not start"
    PGPID=$(head -n 1 "$T/pg/data/postmaster.pid")
    DBURL="postgres://fleet@127.0.0.1:$PGPORT/postgres"
    ((PG_STATEMENTS)) && psql -h 127.0.0.1 -p "$PGPORT" -U fleet -d postgres -qAtc 'CREATE EXTENSION pg_stat_statements' >/dev/null
    note "PostgreSQL on 127.0.0.1:$PGPORT (postmaster pid $PGPID)"
fi

# Replica k: its own port; all share keys, the artifact directory and (with PostgreSQL) the database.
start_controllers() {
    local n=$1 k port
    # Replicas that share the machine's cores get a share of them each (one per core otherwise).
    local loops=${EVENT_LOOPS:-}
    if [[ -z $loops ]] && ((n > 1)); then loops=$(($(nproc) / n)); ((loops >= 1)) || loops=1; fi
    PORTS=()
    for ((k = 1; k <= n; k++)); do
        port=$(free_port)
        local args=(serve --listen "127.0.0.1:$port" --keys "$T/keys/online" --config fleet --poll-seconds 900
                    --checkin-burst 1000000 --checkins-per-minute 1000000 --log-level warning --scrub-interval 0
                    --artifact-accel-redirect /_artifacts/ --view-label region)
        if ((HAS_DB)); then args+=(--data "$T/shared" --database "$DBURL?pool=$PG_POOL"); else args+=(--data "$T/shared"); fi
        [[ -n $loops ]] && args+=(--event-loops "$loops")
        "$BIN/fleet-controller" "${args[@]}" >"$T/controller-$k.log" 2>&1 &
        CONTROLLERS+=("$!")
        PORTS+=("$port")
        wait_http "http://127.0.0.1:$port/healthz"
    done
    NPORT=$(free_port)
    mkdir -p "$T/nginx"
    local ups=()
    for port in "${PORTS[@]}"; do ups+=(--upstream "127.0.0.1:$port"); done
    bash deploy/nginx/render.sh --prefix "$T/nginx" --listen "127.0.0.1:$NPORT" --artifacts "$T/shared/artifacts/sha256" \
        --workers 1 "${ups[@]}" >/dev/null
    "$NGINX" -p "$T/nginx/" -c nginx.conf -g 'daemon off;' >"$T/nginx.log" 2>&1 &
    NGX=$!
    URL="http://127.0.0.1:$NPORT"
    wait_http "$URL/healthz"
    note "$n controller replica(s) (pids ${CONTROLLERS[*]}) behind nginx at $URL (pid $NGX)${loops:+; $loops event loop(s) each}"
}

# utime+stime of a process and, with "tree", its children (postgres backends, nginx workers), in seconds.
cpu_seconds() {
    local pid=$1 tree=${2:-} pids=("$1") total=0 p
    [[ -n $tree ]] && pids+=($(pgrep -P "$pid" || true))
    for p in "${pids[@]}"; do
        [[ -r /proc/$p/stat ]] || continue
        total=$((total + $(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat")))
    done
    python3 -c "print($total / $CLK_TCK)"
}
# Context switches (voluntary and not) of every thread of a process: a request that hops between
# threads (event loop, task pool) wakes one up at every hop.
switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ { n += $2 } END { print n + 0 }'; }
snapshot() {   # name=seconds lines for every process measured
    local k=1 p
    for p in "${CONTROLLERS[@]}"; do
        echo "controller-$k=$(cpu_seconds "$p")"
        echo "switches_controller-$k=$(switches "$p")"
        k=$((k + 1))
    done
    echo "nginx=$(cpu_seconds "$NGX" tree)"
    [[ -n $PGPID ]] && echo "postgres=$(cpu_seconds "$PGPID" tree)"
    if [[ -n $PGPID ]]; then
        echo "commits=$(psql -h 127.0.0.1 -p "$PGPORT" -U fleet -d postgres -Atc 'SELECT sum(xact_commit) FROM pg_stat_database')"
        psql -h 127.0.0.1 -p "$PGPORT" -U fleet -d postgres -Atc \
            "SELECT 'device_updates=' || n_tup_upd || E'\ndevice_hot_updates=' || n_tup_hot_upd || E'\ndevice_autovacuums=' || autovacuum_count
             FROM pg_stat_user_tables WHERE relname = 'devices'"
    fi
    # The whole machine (/proc/stat, in clock ticks): what was left idle, and stolen by the host.
    awk '/^cpu / { print "machine_busy=" ($2 + $3 + $4 + $7 + $8) "\nmachine_idle=" ($5 + $6) "\nmachine_steal=" $9 }' /proc/stat
    return 0
}

# CPU-seconds of this shell's finished children (bash `times`, second line), written to a file
# by the shell itself (in a $(...) subshell `times` would see none): around a fleet-sim run, the
# difference is fleet-sim's own CPU.
cpu_mark() { times >"$T/times-$1"; }
children_cpu() {
    tail -n 1 "$T/times-$1" | python3 -c '
import re, sys
t = 0.0
for m, s in re.findall(r"(\d+)m([\d.]+)s", sys.stdin.read()): t += int(m) * 60 + float(s)
print(t)'
}

sim() { "$BIN/fleet-sim" --url "$URL" --devices "$DEVICES" --id-prefix "$PREFIX" --state "$T/sim-state.json" --connections "$CONNECTIONS" "$@"; }

# --- the fleet --------------------------------------------------------------------------------

FIRST=$(echo "$REPLICAS" | awk '{print $1}')
step "fleet: $DEVICES devices, one model in a staged rollout (bench/scale/staged.yaml, selector '$SELECTOR')"
start_controllers "$FIRST"
export FLEET_CONTROLLER=$URL
ctl() { "$BIN/fleetctl" "$@" >>"$T/fleetctl.log" 2>&1 || fail "fleetctl $* failed"; }
ctl model add scale
for d in fp32 fp16 int8 int4; do
    head -c $((65536 + RANDOM)) /dev/urandom >"$T/scale-$d.bin"
    ctl variant add scale "$T/scale-$d.bin" --name "scale-$d" --dtype "$d" --format onnx
done
ctl release create scale --version 1 --keys "$T/keys" --variants scale-fp32,scale-fp16,scale-int8,scale-int4
ctl rollout start scale@1 --policy "$REPO/bench/scale/staged.yaml" --selector "$SELECTOR"
if ((HAS_SEED)); then
    started=$(date +%s.%N)
    SEEDARGS=(--count "$DEVICES" --id-prefix "$PREFIX" --data "$T/shared" --config fleet)
    ((HAS_DB)) && SEEDARGS+=(--database "$DBURL")
    "$BIN/fleet-controller" seed-devices "${SEEDARGS[@]}" >"$T/seed.log" 2>&1 || fail "fleet-controller seed-devices failed"
    note "seeded $DEVICES devices in $(python3 -c "import time; print(f'{time.time() - $started:.1f}')") s"
    # Seeded devices run nothing yet: those in the canary cohort install at their first check-in
    # below; the others are held waiting for the phase (or not selected) and stay idle.
else
    secs=$(((DEVICES + SEED_RATE - 1) / SEED_RATE))
    note "registering by check-in: $DEVICES devices at $SEED_RATE/s ($secs s); each installs the release and reports it"
    sim --rate "$SEED_RATE" --duration "$secs" --json >"$T/register.json" 2>"$T/register.log" || fail "fleet-sim (registration) failed"
    python3 - "$T/register.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"    registered: {r['ok']:,} of {r['scheduled']:,} check-ins ok, p99 {r['latencyMs']['p99']} ms, "
      f"{r['installsReported']:,} installs reported, errors {r['errors'] or 'none'}")
PY
fi

# --- load, per replica count ------------------------------------------------------------------

report() {   # $1 sim json, $2 before, $3 after, $4 replicas
    python3 - "$@" "$DURATION" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
def kv(path):
    out = {}
    for line in open(path):
        k, _, v = line.strip().partition("=")
        if v: out[k] = float(v)
    return out
before, after, replicas, duration = kv(sys.argv[2]), kv(sys.argv[3]), sys.argv[4], float(sys.argv[5])
ok = max(r["ok"], 1)
l = r["latencyMs"]
# fleet-sim counts its own CPU over the run (without loading and saving its state around it).
if "cpuSeconds" in r and "fleet-sim" in before:
    after["fleet-sim"] = before["fleet-sim"] + r["cpuSeconds"]
answered = r["ok"] > 0
print(f"    offered {r['offeredRate']:,.0f}/s, achieved {r['achievedRate']:,.1f}/s; {r['ok']:,} of {r['scheduled']:,} check-ins answered 2xx")
print(f"    latency from the scheduled send: p50 {l['p50']} ms, p99 {l['p99']} ms, p99.9 {l['p999']} ms, max {l['max']} ms")
print(f"    errors: {', '.join(f'{k} {v}' for k, v in sorted(r['errors'].items())) or 'none'}; generator launch lag at worst {r['maxSchedulerLagMs']} ms")
print("    CPU per check-in (utime+stime over the run ÷ check-ins answered):" if answered else
      "    CPU over the run (no check-in answered, so none per check-in):")
total = 0.0
for k in sorted(after):
    if k in ("commits", "device_updates", "device_hot_updates", "device_autovacuums") or k.startswith(("machine_", "switches_")) or k not in before: continue
    d = after[k] - before[k]; total += d
    per = f"{d / ok * 1e6:8.0f} µs/check-in" if answered else " " * 19
    print(f"      {k:<14} {d:7.2f} CPU-s  {per}  ({d / duration * 100:5.1f}% of a core)")
print(f"      {'all of them':<14} {total:7.2f} CPU-s  " + (f"{total / ok * 1e6:8.0f} µs/check-in" if answered else ""))
sw = sum(after[k] - before[k] for k in after if k.startswith("switches_") and k in before)
if answered:
    print(f"    controller threads' context switches: {sw / ok:.1f} per check-in (all replicas, /proc/PID/task/*/status)")
if "commits" in after:
    c = after["commits"] - before["commits"]
    print(f"    database commits: {c / duration:,.0f}/s ({c / ok:.2f} per check-in)")
else:
    print("    database commits: n/a (SQLite store)")
if "device_updates" in after:
    u = after["device_updates"] - before["device_updates"]
    hot = after["device_hot_updates"] - before["device_hot_updates"]
    print(f"    device row updates: {u:,.0f} ({hot / max(u, 1) * 100:.0f}% HOT, in place); autovacuums of devices: {after['device_autovacuums'] - before['device_autovacuums']:.0f}")
m = {k: after[f"machine_{k}"] - before[f"machine_{k}"] for k in ("busy", "idle", "steal")}
span = max(sum(m.values()), 1)
print(f"    machine: {m['busy'] / span * 100:.0f}% busy, {m['idle'] / span * 100:.0f}% idle, {m['steal'] / span * 100:.1f}% stolen by the host (all cores, /proc/stat)")
b = r["bytesPerIdleCheckIn"]
print(f"    bytes on the wire per idle check-in ({b['checkIns']:,} idle): HTTP request {b['requestHTTP']:.0f} "
      f"(body {b['requestBody']:.0f}) + response {b['responseHTTP']:.0f} (body {b['responseBody']:.0f}) = {b['requestHTTP'] + b['responseHTTP']:.0f} B")
PY
}

# Lets a controller finish what the last run left queued before the next measurement.
settle() { sleep 5; wait_http "$URL/healthz"; }

# Gate ticks the replicas have run to the end (/healthz of each; only the leader ticks).
gate_ticks() {
    local port sum=0 n
    for port in "${PORTS[@]}"; do
        n=$(curl -fsS --max-time 5 "http://127.0.0.1:$port/healthz" 2>/dev/null |
            python3 -c 'import json, sys; print(int(json.load(sys.stdin).get("gateTicks", -1)))' 2>/dev/null || echo -1)
        ((n < 0)) && { echo -1; return; }
        sum=$((sum + n))
    done
    echo "$sum"
}

# Waits until $1 more gate ticks have ended, so that the measurement does not include the
# leader's one-off reading and grouping of the whole fleet after a start or a new rollout (its
# first tick over 1,000,000 devices takes seconds; later ticks reuse what it grouped).
await_gate_ticks() {
    local more=$1 base now started
    base=$(gate_ticks)
    if ((base < 0)); then
        note "the replicas do not report gate ticks in /healthz: waiting TICKLESS_WAIT=$TICKLESS_WAIT s instead"
        sleep "$TICKLESS_WAIT"
        return
    fi
    started=$(date +%s.%N)
    for _ in $(seq 1 600); do
        now=$(gate_ticks)
        if ((now >= base + more)); then
            note "waited $(python3 -c "import time; print(f'{time.time() - $started:.1f}')") s for $more gate tick(s) over the fleet to end"
            return
        fi
        sleep 0.5
    done
    note "no gate tick ended within 300 s: measuring anyway"
}

# What the replicas cost with no check-in at all over IDLE_SECONDS: their background work (the
# leader's gate ticks and lease, the others' elections, change listeners, flushers), which every
# added replica brings whatever the rate.
idle_cost() {
    ((IDLE_SECONDS)) || return 0
    local n=$1 before after
    before=$(for p in "${CONTROLLERS[@]}"; do cpu_seconds "$p"; done)
    sleep "$IDLE_SECONDS"
    after=$(for p in "${CONTROLLERS[@]}"; do cpu_seconds "$p"; done)
    python3 - "$IDLE_SECONDS" "$before" "$after" <<'PY'
import sys
secs, before, after = float(sys.argv[1]), sys.argv[2].split(), sys.argv[3].split()
each = [(float(a) - float(b)) / secs * 100 for a, b in zip(after, before)]
print(f"    idle for {secs:.0f} s (no check-ins): replicas' CPU " + ", ".join(f"{e:.2f}%" for e in each) + " of a core")
PY
}

measure() {   # $1 replicas, $2 rate, $3 label, $4 what is in force
    local n=$1 r=$2 label=$3 what=${4:-staged rollout in force}
    step "$n replica(s), $what: $r check-ins/s for $DURATION s through nginx ($DEVICES devices, $CONNECTIONS connections)"
    snapshot >"$T/before-$n-$label"
    local perf=""
    if [[ -n ${PROFILE:-} ]]; then   # PROFILE=PREFIX: perf samples of the first replica, PREFIX-<label>-<n>.txt
        perf record -F 499 -g -p "${CONTROLLERS[0]}" -o "$T/perf-$label-$n.data" >/dev/null 2>&1 &
        perf=$!
    fi
    pg_statements reset
    cpu_mark "$n-$label-0"
    sim --rate "$r" --duration "$DURATION" --json >"$T/$label-$n.json" 2>"$T/$label-$n.log" || fail "fleet-sim failed"
    cpu_mark "$n-$label-1"
    if [[ -n $perf ]]; then
        kill -INT "$perf" 2>/dev/null || true; wait "$perf" 2>/dev/null || true
        perf report -i "$T/perf-$label-$n.data" --no-children --percent-limit 0.7 --stdio -g none 2>/dev/null |
            swift demangle --simplified >"$PROFILE-$label-$n.txt" || true
        note "profile of controller-1: $PROFILE-$label-$n.txt"
    fi
    snapshot >"$T/after-$n-$label"
    echo "fleet-sim=$(children_cpu "$n-$label-0")" >>"$T/before-$n-$label"
    echo "fleet-sim=$(children_cpu "$n-$label-1")" >>"$T/after-$n-$label"
    report "$T/$label-$n.json" "$T/before-$n-$label" "$T/after-$n-$label" "$n"
    pg_statements show "$T/$label-$n.json"
}

# PG_STATEMENTS=1: the statements PostgreSQL ran during a measured run, most frequent first, per
# check-in answered (pg_stat_statements; reads included).
pg_statements() {
    ((PG_STATEMENTS)) && [[ -n $PGPID ]] || return 0
    local q=(psql -h 127.0.0.1 -p "$PGPORT" -U fleet -d postgres -qAt)
    if [[ $1 == reset ]]; then "${q[@]}" -c 'SELECT pg_stat_statements_reset()' >/dev/null; return 0; fi
    local ok
    ok=$(python3 -c 'import json, sys; print(max(json.load(open(sys.argv[1]))["ok"], 1))' "$2")
    echo "    statements per check-in (pg_stat_statements, top 12 by time; calls per check-in, ms total, statement):"
    "${q[@]}" -F $'\t' -c "SELECT round(calls::numeric / $ok, 3), round(total_exec_time::numeric, 1),
        left(regexp_replace(query, '\s+', ' ', 'g'), 110) FROM pg_stat_statements
        WHERE query NOT LIKE '%pg_stat_statements%' ORDER BY total_exec_time DESC LIMIT 12" |
        awk -F '\t' '{ printf "      %7s %9s  %s\n", $1, $2, $3 }'
}

for n in $REPLICAS; do
    if [[ $n != "$FIRST" ]]; then
        step "restarting with $n replicas"
        stop_nginx; stop_controllers
        start_controllers "$n"
        export FLEET_CONTROLLER=$URL   # the new nginx's port, for fleetctl
        await_gate_ticks 1
    else
        await_gate_ticks 2   # one may have begun before the seeding ended
    fi
    idle_cost "$n"
    # Low to high: --find-max first, then the highest rate that held, then RATE (which may be far
    # past what the box holds: an overloaded controller goes on with queued check-ins for a while).
    BEST=0
    if ((FIND_MAX)); then
        step "$n replica(s): --find-max from $FIND_MAX_START/s, $STEP_SECONDS s steps, p99 ≤ $P99_TARGET_MS ms, no errors"
        sim --rate "$FIND_MAX_START" --find-max --step-duration "$STEP_SECONDS" --step-factor "$STEP_FACTOR" --p99-target-ms "$P99_TARGET_MS" --json \
            >"$T/findmax-$n.json" 2>"$T/findmax-$n.log" || fail "fleet-sim --find-max failed"
        sed 's/^fleet-sim: /    /' "$T/findmax-$n.log"
        BEST=$(python3 - "$T/findmax-$n.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
best = r.get("maxSustainableRate")
print(f"    highest sustainable rate: {f'{best:,.0f} check-ins/s' if best else 'none (the first step failed)'}; stopped: {r['stoppedBecause']}", file=sys.stderr)
print(int(best) if best else 0)
PY
)
        # CPU and bytes at a rate this box holds.
        if ((BEST > 0)) && ((BEST != RATE)); then settle; measure "$n" "$BEST" "sustained"; fi
        settle
    fi
    measure "$n" "$RATE" "rate"
    # Label views and selectors over the whole fleet, once per replica count (the devices by region
    # in /metrics; the rollout's wave and cell counts).
    started=$(date +%s.%N)
    curl -fsS "$URL/metrics" | grep -c '^edgefleet_devices_by_label{' >"$T/by-label" || echo 0 >"$T/by-label"
    note "label view (/metrics, devices by region): $(cat "$T/by-label") series in $(python3 -c "import time; print(f'{time.time() - $started:.2f}')") s"
    started=$(date +%s.%N)
    if "$BIN/fleetctl" rollout status 1 >>"$T/fleetctl.log" 2>&1; then
        note "fleetctl rollout status 1 (selector and cells over $DEVICES devices): $(python3 -c "import time; print(f'{time.time() - $started:.2f}')") s"
    else
        note "fleetctl rollout status 1 failed (not timed): $(tail -n 1 "$T/fleetctl.log")"
    fi
done
if ((WORST_CASE)); then
    # The worst case, reported apart: every measured check-in is the device's first under a new
    # rollout (assignment signed and stored, install events posted).
    step "$n replica(s): release 2 to every device at once (worst case: every check-in a first one)"
    ctl release create scale --version 2 --keys "$T/keys" --variants scale-fp32,scale-fp16,scale-int8,scale-int4
    ctl rollout start scale@2 --all --supersede
    settle
    await_gate_ticks 2
    measure "$n" "$WORST_RATE" "worst" "WORST CASE (every check-in a device's first under a rollout to all)"
fi
step "notes"
note "fleet-sim shares the machine's cores with everything it measures (its own CPU is listed above), so the"
note "rates are a floor for the server side. Latency counts from each check-in's scheduled send time."
((HAS_SEED)) || note "No seed-devices command: $DEVICES devices registered by check-in, not $SCALE_DEVICES seeded rows."
