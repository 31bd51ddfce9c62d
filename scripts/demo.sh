#!/usr/bin/env bash
# EdgeFleet demo: one controller and one agent per facts file in fleet/demo/, all on loopback,
# and a model going out to every one of them.
#
# Run from the repository root after `swift build` (or just `make demo`).
#   BIN=.build/debug   where fleetctl, fleet-controller and fleet-agent are
set -euo pipefail

BIN=${BIN:-.build/debug}
MODEL=demo-mlp
VERSION=1.0.0
DTYPES=(fp32 fp16 int8 int4)
HEALTH_DEADLINE=30    # seconds for the controller to answer /healthz
INSTALL_DEADLINE=90   # seconds for every agent to commit the model

for exe in fleetctl fleet-controller fleet-agent; do
    if [[ ! -x "$BIN/$exe" ]]; then
        echo "demo: $BIN/$exe not found; build first (swift build, or make demo)" >&2
        exit 1
    fi
done

T=$(mktemp -d "${TMPDIR:-/tmp}/edgefleet-demo.XXXXXX")
PIDS=()          # every process this script started, and only those
AGENT_NAMES=()   # facts file names, also the agents' directory names under $T/agents
AGENT_IDS=()     # device ids from the facts files
AGENT_PIDS=()
METRICS_PORTS=()  # each agent's local metrics endpoint (127.0.0.1:PORT)

step() { printf '\n==> %s\n' "$*"; }

source "$(dirname "${BASH_SOURCE[0]}")/procs.sh"

show_logs() {
    local log
    for log in "$T/controller.log" "$T"/agents/*.log; do
        [[ -f "$log" ]] || continue
        printf '\n---- last lines of %s ----\n' "${log#"$T"/}"
        tail -n 40 "$log"
    done
}

on_exit() {
    local status=$?
    trap - EXIT INT TERM
    if ((status != 0)); then
        echo >&2
        echo "demo FAILED (exit $status)" >&2
        show_logs >&2
    fi
    stop_all
    if [[ -n "${KEEP_DEMO:-}" ]]; then echo "demo files kept in $T"; else rm -rf "$T"; fi
    exit "$status"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() { echo "demo: $*" >&2; exit 1; }

fleetctl() { "$BIN/fleetctl" "$@"; }

# --- keys and controller ---------------------------------------------------------------------

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')

step "fleetctl keys init --dir $T/keys"
fleetctl keys init --dir "$T/keys"
for f in offline/root.key offline/release.key online/director.key online/timestamp.key root.json online/root.json; do
    [[ -s "$T/keys/$f" ]] || fail "fleetctl keys init did not write $T/keys/$f"
done

step "fleet-controller serve on 127.0.0.1:$PORT"
"$BIN/fleet-controller" serve --data "$T/controller" --listen "127.0.0.1:$PORT" \
    --keys "$T/keys/online" --config fleet >"$T/controller.log" 2>&1 &
CONTROLLER_PID=$!
PIDS+=("$CONTROLLER_PID")

export FLEET_CONTROLLER="http://127.0.0.1:$PORT"
deadline=$((SECONDS + HEALTH_DEADLINE))
until curl -fsS "$FLEET_CONTROLLER/healthz" >/dev/null 2>&1; do
    kill -0 "$CONTROLLER_PID" 2>/dev/null || fail "the controller exited before it was healthy"
    ((SECONDS < deadline)) || fail "the controller did not answer /healthz within ${HEALTH_DEADLINE}s"
    sleep 0.2
done
echo "controller is up at $FLEET_CONTROLLER"

# --- model, variants, release, rollout -------------------------------------------------------

step "make the demo model"
python3 scripts/make-demo-model.py "$T/model"

declare -A VARIANT_SHA=()   # sha256 -> variant name, of the files we publish
for d in "${DTYPES[@]}"; do
    sha=$(sha256sum "$T/model/model-$d.safetensors" | cut -d' ' -f1)
    VARIANT_SHA[$sha]="$MODEL-$d"
done

step "fleetctl variant build --input model-fp32.safetensors --recipe int8   (local: quantize by recipe, per-tensor error report)"
# The MLP has no ONNX graph for the default onnxruntime evaluator, so output agreement is skipped here;
# docs/COMPRESSION.md shows the evaluated recipes on all-MiniLM-L6-v2.
fleetctl variant build --input "$T/model/model-fp32.safetensors" --recipe int8 --out "$T/model/built-int8.safetensors" \
    --report "$T/model/built-int8.report.json" --no-evaluate
[[ -s "$T/model/built-int8.safetensors" && -s "$T/model/built-int8.report.json" ]] || fail "variant build wrote no variant or report"

step "fleetctl model add $MODEL"
fleetctl model add "$MODEL"

for d in "${DTYPES[@]}"; do
    step "fleetctl variant add $MODEL model-$d.safetensors --name $MODEL-$d"
    fleetctl variant add "$MODEL" "$T/model/model-$d.safetensors" \
        --name "$MODEL-$d" --format safetensors --dtype "$d"
done

step "fleetctl release create $MODEL --version $VERSION"
fleetctl release create "$MODEL" --version "$VERSION" --keys "$T/keys"

step "fleetctl rollout start $MODEL@$VERSION --all"
fleetctl rollout start "$MODEL@$VERSION" --all

# --- agents ----------------------------------------------------------------------------------

step "start one agent per facts file in fleet/demo/"
mkdir -p "$T/agents"
for f in fleet/demo/*.json; do
    name=$(basename "$f" .json)
    id=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["deviceId"])' "$f")
    mkdir -p "$T/agents/$name"
    mport=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
    METRICS_PORTS+=("$mport")
    "$BIN/fleet-agent" run --controller "$FLEET_CONTROLLER" \
        --state "$T/agents/$name/state" --models "$T/agents/$name/models" \
        --facts "$f" --root "$T/keys/root.json" --poll-seconds 1 \
        --health-command "test -s \"\$EDGEFLEET_MODEL_PATH\"" \
        --metrics-listen "127.0.0.1:$mport" \
        >"$T/agents/$name.log" 2>&1 &
    PIDS+=("$!")
    AGENT_PIDS+=("$!")
    AGENT_NAMES+=("$name")
    AGENT_IDS+=("$id")
    echo "agent $id (pid $!)"
done
((${#AGENT_NAMES[@]} > 0)) || fail "no facts files in fleet/demo/"

# The model is installed when `current` is a symlink to a slot that holds a file.
installed() {
    local link="$T/agents/$1/models/$MODEL/current"
    [[ -L "$link" ]] && [[ -n "$(find "$link/" -maxdepth 1 -type f -print -quit 2>/dev/null)" ]]
}

# Every device id appears in `fleetctl devices list --json`.
listed() {
    fleetctl devices list --json >"$T/devices.json" 2>/dev/null || return 1
    python3 - "$T/devices.json" "${AGENT_IDS[@]}" <<'PY'
import json, sys
def strings(v):
    if isinstance(v, str):
        yield v
    elif isinstance(v, dict):
        for k, x in v.items():
            yield k
            yield from strings(x)
    elif isinstance(v, list):
        for x in v:
            yield from strings(x)
try:
    with open(sys.argv[1]) as f:
        seen = set(strings(json.load(f)))
except ValueError:
    sys.exit(1)
sys.exit(0 if all(i in seen for i in sys.argv[2:]) else 1)
PY
}

step "wait until every device has $MODEL (deadline ${INSTALL_DEADLINE}s)"
deadline=$((SECONDS + INSTALL_DEADLINE))
while :; do
    kill -0 "$CONTROLLER_PID" 2>/dev/null || fail "the controller exited"
    pending=()
    for i in "${!AGENT_NAMES[@]}"; do
        kill -0 "${AGENT_PIDS[$i]}" 2>/dev/null || fail "agent ${AGENT_IDS[$i]} exited"
        installed "${AGENT_NAMES[$i]}" || pending+=("${AGENT_IDS[$i]}")
    done
    if ((${#pending[@]} == 0)) && listed; then
        break
    fi
    if ((SECONDS >= deadline)); then
        fail "not installed within ${INSTALL_DEADLINE}s: ${pending[*]:-(all installed, but not all listed by fleetctl devices list --json)}"
    fi
    sleep 1
done
echo "all ${#AGENT_NAMES[@]} devices run $MODEL"

# --- what happened ---------------------------------------------------------------------------

step "fleetctl devices list"
fleetctl devices list

step "fleetctl devices label ${AGENT_IDS[0]} site=lab   (operator labels; selectors pick devices by label, class, tier, arch)"
fleetctl devices label "${AGENT_IDS[0]}" site=lab
step "fleetctl devices list --selector 'site=lab'"
fleetctl devices list --selector 'site=lab'
step "fleetctl devices list --selector 'arch=aarch64,site!=lab'"
fleetctl devices list --selector 'arch=aarch64,site!=lab'

for id in "${AGENT_IDS[@]}"; do
    step "fleetctl devices explain $id"
    fleetctl devices explain "$id"
done

step "installed files"
mismatch=0
for i in "${!AGENT_NAMES[@]}"; do
    name=${AGENT_NAMES[$i]}
    link="$T/agents/$name/models/$MODEL/current"
    slot=$(readlink -f "$link")
    # The model file is the .safetensors file in the slot (or every file, if there is none).
    mapfile -t files < <(find "$slot" -type f -name '*.safetensors' | sort)
    ((${#files[@]} > 0)) || mapfile -t files < <(find "$slot" -type f | sort)
    echo "${AGENT_IDS[$i]}: current -> $(readlink "$link")"
    for file in "${files[@]}"; do
        sha=$(sha256sum "$file" | cut -d' ' -f1)
        if [[ -n "${VARIANT_SHA[$sha]:-}" ]]; then
            echo "  ${file#"$slot"/}  sha256 $sha  = ${VARIANT_SHA[$sha]}  OK"
        else
            echo "  ${file#"$slot"/}  sha256 $sha  matches no published variant  MISMATCH"
            mismatch=1
        fi
    done
done
((mismatch == 0)) || fail "an installed file differs from every published variant"

# --- runtime metrics: a stand-in inference service per device ----------------------------------

step "start a stand-in inference service per device: it reports latencies to its agent's local endpoint"
# What a real service would do after serving requests (see README, "Runtime metrics from the device").
inference_service() {
    local port=$1 lat i
    while :; do
        lat=""
        for i in 1 2 3 4 5 6 7 8; do lat+="${lat:+,}$((8 + RANDOM % 5)).$((RANDOM % 10))"; done
        curl -s -o /dev/null -X POST "http://127.0.0.1:$port/v1/metrics" \
            -d "{\"model\":\"$MODEL\",\"latenciesMs\":[$lat],\"errors\":0}" || true
        sleep 1
    done
}
for i in "${!AGENT_NAMES[@]}"; do
    inference_service "${METRICS_PORTS[$i]}" &
    PIDS+=("$!")
done
echo "example: curl -s -X POST http://127.0.0.1:${METRICS_PORTS[0]}/v1/metrics -d '{\"model\":\"$MODEL\",\"latenciesMs\":[9.5,11.2],\"errors\":0}'"
curl -s -X POST "http://127.0.0.1:${METRICS_PORTS[0]}/v1/metrics" -d "{\"model\":\"$MODEL\",\"latenciesMs\":[9.5,11.2],\"errors\":0}"
echo


# --- a second release: a fine-tune, sent as deltas, in a staged rollout ----------------------

V2=2.0.0
step "python3 scripts/make-demo-model.py model-v2 --finetune   (the last layer fine-tuned)"
python3 scripts/make-demo-model.py "$T/model-v2" --finetune
declare -A V2_SHA=()
for d in "${DTYPES[@]}"; do
    fleetctl variant add "$MODEL" "$T/model-v2/model-$d.safetensors" \
        --name "$MODEL-v2-$d" --format safetensors --dtype "$d"
    V2_SHA[$(sha256sum "$T/model-v2/model-$d.safetensors" | cut -d' ' -f1)]="$MODEL-v2-$d"
done

step "fleetctl release create $MODEL --version $V2   (plans delta packages from what the devices run)"
fleetctl release create "$MODEL" --version "$V2" --keys "$T/keys" \
    --variants "$(printf "$MODEL-v2-%s," "${DTYPES[@]}" | sed 's/,$//')"

step "wait until the controller has built the delta packages (deadline 120s)"
deadline=$((SECONDS + 120))
until fleetctl release show "$MODEL@$V2" --json 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)["packages"]
deltas = [x for v in d["variants"] for x in v["deltas"]]
sys.exit(0 if deltas and all(x["status"] != "building" for x in deltas) else 1)'; do
    ((SECONDS < deadline)) || fail "delta packages not built within 120s"
    sleep 1
done

step "fleetctl rollout start $MODEL@$V2 --policy fast   (a canary per cell, then everyone)"
ROLLOUT=$(fleetctl rollout start "$MODEL@$V2" --policy fast --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
echo "rollout $ROLLOUT started"

runs_v2() {
    local link="$T/agents/$1/models/$MODEL/current" f
    [[ -L "$link" ]] || return 1
    for f in "$link"/*; do
        [[ -n "${V2_SHA[$(sha256sum "$f" | cut -d' ' -f1)]:-}" ]] && return 0
    done
    return 1
}

step "wait until every device runs $MODEL $V2 (deadline 150s)"
deadline=$((SECONDS + 150))
while :; do
    pending=()
    for i in "${!AGENT_NAMES[@]}"; do
        runs_v2 "${AGENT_NAMES[$i]}" || pending+=("${AGENT_IDS[$i]}")
    done
    ((${#pending[@]} == 0)) && break
    ((SECONDS < deadline)) || { fleetctl rollout status "$ROLLOUT" || true; fail "not on $V2 within 150s: ${pending[*]}"; }
    sleep 1
done
echo "all ${#AGENT_NAMES[@]} devices run $MODEL $V2, each file checked against the published sha256"

step "wait until every cell has baked and the rollout is completed (deadline 90s)"
deadline=$((SECONDS + 90))
until [[ "$(fleetctl rollout status "$ROLLOUT" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["rollout"]["state"])')" == completed ]]; do
    ((SECONDS < deadline)) || { fleetctl rollout status "$ROLLOUT" || true; fail "rollout $ROLLOUT not completed within 90s"; }
    sleep 1
done

step "fleetctl rollout status $ROLLOUT"
fleetctl rollout status "$ROLLOUT"

step "fleetctl release show $MODEL@$V2   (what the rollout sent, compared with full downloads)"
fleetctl release show "$MODEL@$V2"

step "the agent's local endpoint: curl -s http://127.0.0.1:${METRICS_PORTS[0]}/v1/status"
curl -fsS "http://127.0.0.1:${METRICS_PORTS[0]}/v1/status" || fail "the agent's local endpoint did not answer"
echo

step "dashboard: $FLEET_CONTROLLER/  (server-rendered HTML and SVG; saved to $T/dashboard.html)"
curl -fsS "$FLEET_CONTROLLER/" -o "$T/dashboard.html" || fail "the dashboard did not answer"
gates=$(grep -o 'data-metric="[^"]*" data-state="[a-z]*"' "$T/dashboard.html" | sort | uniq -c | sed 's/data-metric=//; s/data-state=//')
[[ -n $gates ]] || fail "the dashboard shows no gates for rollout $ROLLOUT"
echo "gate states on the page (count, gate, state):"
echo "$gates"
grep -q '<polyline' "$T/dashboard.html" || fail "the dashboard has no charts"
echo "charts: $(grep -o '<polyline' "$T/dashboard.html" | wc -l) lines drawn"
echo "(one device per cell: no control cohort is left on the old release, so each latency gate compares the device with its own figures from before the update: the baseline)"
grep -q 'compared with: baseline' "$T/dashboard.html" || fail "the dashboard does not say what the latency gates compared with"

step "Prometheus metrics: curl -s $FLEET_CONTROLLER/metrics | grep edgefleet_gate_observed"
curl -fsS "$FLEET_CONTROLLER/metrics" | grep '^edgefleet_gate_observed' | grep latency | head -n 4 || true

step "fleetctl status"
fleetctl status

step "stop agents and controller"
stop_all
echo "demo finished"
