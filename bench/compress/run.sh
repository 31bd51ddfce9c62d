#!/usr/bin/env bash
# The int8 variant of all-MiniLM-L6-v2 (ONNX, ~90 MB): `fleetctl variant build` against onnxruntime's
# quantize_dynamic on the same file, in one run. Prints times, peak memory, sizes, agreement with the
# fp32 outputs, the ratios and the goals (>= 5x faster, equal or better agreement, peak memory under
# 2x the model). See bench/compress/README.md.
#
#   BIN=.build/release bash bench/compress/run.sh
# Environment: BIN (directory with a release fleetctl), RUNS (default 3), BENCH_STRICT=1 (exit 3 on a
# missed goal), KEEP_TMP=1 (keep the work directory).
set -euo pipefail
ORIG_PWD=$PWD
BIN=${BIN:-.build/release}
case $BIN in /*) ;; *) BIN="$ORIG_PWD/$BIN" ;; esac
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
REPO=$PWD
[[ -x $BIN/fleetctl ]] || { echo "bench/compress: no fleetctl in $BIN; build it with: swift build -c release --product fleetctl" >&2; exit 1; }
command -v /usr/bin/time >/dev/null || { echo "bench/compress: needs /usr/bin/time (Debian package time)" >&2; exit 1; }
make -s venv >&2
WORK=$(mktemp -d "${TMPDIR:-/tmp}/efcompress.XXXXXX")
[[ ${KEEP_TMP:-0} == 1 ]] && echo "bench/compress: keeping $WORK" >&2 || trap 'rm -rf "$WORK"' EXIT
"$REPO/.venv/bin/python" "$REPO/bench/compress/bench.py" --fleetctl "$BIN/fleetctl" --workdir "$WORK" --runs "${RUNS:-3}"
