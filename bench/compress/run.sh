#!/usr/bin/env bash
# Variants of all-MiniLM-L6-v2 (ONNX, ~90 MB) against onnxruntime's quantizers on the same file, in one
# run: build time of `fleetctl variant build` against quantize_dynamic, then size, agreement with the
# fp32 outputs and inference speed (batch 1, one thread) of the int8 and int4 recipes next to fp32,
# quantize_dynamic (per-channel) and MatMulNBitsQuantizer outputs. Prints the ratios and the goals.
# See bench/compress/README.md.
#
#   BIN=.build/release bash bench/compress/run.sh
# Environment: BIN (directory with a release fleetctl), RUNS (build timings, default 3), ROUNDS
# (inference rounds, default 20), BENCH_STRICT=1 (exit 3 on a missed goal), KEEP_TMP=1 (keep the work
# directory).
set -euo pipefail
ORIG_PWD=$PWD
BIN=${BIN:-.build/release}
case $BIN in /*) ;; *) BIN="$ORIG_PWD/$BIN" ;; esac
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
REPO=$PWD
[[ -x $BIN/fleetctl ]] || { echo "bench/compress: no fleetctl in $BIN; build it with: swift build -c release --product fleetctl" >&2; exit 1; }
command -v /usr/bin/time >/dev/null || { echo "bench/compress: needs /usr/bin/time (Debian package time)" >&2; exit 1; }
make -s venv >&2
# onnxruntime's MatMulNBitsQuantizer imports onnx_ir, which its wheel does not pull in; `python -m pip` installs into
# this venv even when it was copied from another (its pip script would name the original's python).
"$REPO/.venv/bin/python" -c 'import onnx_ir' 2>/dev/null || "$REPO/.venv/bin/python" -m pip install -q onnx-ir >&2
WORK=$(mktemp -d "${TMPDIR:-/tmp}/efcompress.XXXXXX")
[[ ${KEEP_TMP:-0} == 1 ]] && echo "bench/compress: keeping $WORK" >&2 || trap 'rm -rf "$WORK"' EXIT
"$REPO/.venv/bin/python" "$REPO/bench/compress/bench.py" --fleetctl "$BIN/fleetctl" --workdir "$WORK" --runs "${RUNS:-3}" --rounds "${ROUNDS:-20}"
