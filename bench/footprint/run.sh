#!/usr/bin/env bash
# The agent as it is installed on devices, measured: the fleet-agent of the edgefleet-agent
# package (`make package`) run by bench/run.sh, whose footprint step reports its binary size and
# linkage, its RSS idle (IDLE_SECONDS after installing a model, 15 here, as in issue 14) and its
# RSS while installing; the verify, download and swap steps run on it too.
#
#   BIN=.build/release bash bench/footprint/run.sh [PACKAGE.deb]
# Environment: BIN (fleetctl and fleet-controller, default .build/release), and bench/run.sh's.
set -euo pipefail
ORIG_PWD=$PWD
BIN=${BIN:-.build/release}
case $BIN in /*) ;; *) BIN="$ORIG_PWD/$BIN" ;; esac
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
deb=${1:-$(ls -t .build/packages/edgefleet-agent_*.deb 2>/dev/null | head -n1)}
[[ -n $deb && -f $deb ]] || { echo "footprint: no edgefleet-agent package: run make package" >&2; exit 1; }
for exe in fleetctl fleet-controller; do
    [[ -x $BIN/$exe ]] || { echo "footprint: $BIN/$exe is missing (swift build -c release)" >&2; exit 1; }
done
T=$(mktemp -d "${TMPDIR:-/tmp}/edgefleet-footprint.XXXXXX")
trap 'rm -rf "$T"' EXIT
dpkg-deb -x "$deb" "$T/root"
mkdir "$T/bin"
ln -s "$T/root/usr/bin/fleet-agent" "$T/bin/fleet-agent"
ln -s "$BIN/fleetctl" "$T/bin/fleetctl"
ln -s "$BIN/fleet-controller" "$T/bin/fleet-controller"
size=$(stat -c %s "$T/root/usr/bin/fleet-agent")
echo "footprint: measuring fleet-agent from $deb ($size bytes, $(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1e6 }') MB; goal <= 25 MB)"
if grep -c -a -E 'icudt[0-9]+|FoundationInternationalization' "$T/root/usr/bin/fleet-agent" >/dev/null; then
    echo "footprint: the packaged agent carries Foundation/ICU (icudt or FoundationInternationalization strings)"
else
    echo "footprint: no Foundation/ICU strings in the packaged agent"
fi
IDLE_SECONDS=${IDLE_SECONDS:-15} BIN="$T/bin" bash bench/run.sh
