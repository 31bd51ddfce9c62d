# Process helpers shared by scripts/demo.sh and bench/run.sh (sourced, not run).
# A script appends every process it starts to PIDS, and only those are ever stopped.

# SIGTERM, then up to 10 s for a clean exit, then SIGKILL; reaps the process either way.
stop_pid() {
    local pid=$1 i
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# Stops what PIDS lists, last started first (agents before the controller).
stop_all() {
    local i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${PIDS[$i]}"
    done
    PIDS=()
}
