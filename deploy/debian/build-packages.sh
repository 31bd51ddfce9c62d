#!/usr/bin/env bash
# Builds edgefleet-agent_VERSION_ARCH.deb and edgefleet-controller_VERSION_ARCH.deb with dpkg-deb.
#
#   deploy/debian/build-packages.sh --agent BIN --controller BIN --fleetctl BIN --out DIR \
#       [--version V] [--compress xz|gzip|none] [--only agent|controller]
#
# `make package` calls it with the static stripped agent of `make agent` and release builds of
# the controller and fleetctl; the package tests call it with the same agent.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
agent="" controller="" fleetctl="" out="" version="" compress=xz only=""
while (($#)); do
    case $1 in
        --agent) agent=$2; shift 2 ;;
        --controller) controller=$2; shift 2 ;;
        --fleetctl) fleetctl=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --version) version=$2; shift 2 ;;
        --compress) compress=$2; shift 2 ;;
        --only) only=$2; shift 2 ;;
        *) echo "build-packages.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ -n $out ]] || { echo "build-packages.sh: --out DIR is needed" >&2; exit 2; }
[[ $only == controller || -x $agent ]] || { echo "build-packages.sh: --agent BIN is needed (make agent)" >&2; exit 2; }
[[ $only == agent || ( -x $controller && -x $fleetctl ) ]] || { echo "build-packages.sh: --controller and --fleetctl BIN are needed" >&2; exit 2; }
if [[ -z $version ]]; then
    version=$(sed -n 's/.*static let version = "\(.*\)".*/\1/p' "$repo/Sources/FleetAgent/Agent.swift" | head -n1)
fi
arch=$(dpkg --print-architecture)
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Depends: the Debian packages that own the shared libraries the binaries name (DT_NEEDED),
# found where the dynamic loader finds them.
depends() {
    local b lib path p resolved pkgs=""
    for b in "$@"; do
        resolved=$(ldd "$b")
        for lib in $(readelf -d "$b" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
            path=$(awk -v l="$lib" '$1 == l && $3 ~ /^\// { print $3 }' <<<"$resolved")
            [[ -n $path ]] || continue
            p=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null || dpkg -S "$path" 2>/dev/null || true)
            p=${p%%:*}
            [[ -n $p ]] && pkgs+="$p"$'\n'
        done
    done
    # libc6 with the newest glibc the binaries need: their symbol versions, and 2.36 for packed
    # relative relocations (GLIBC_ABI_DT_RELR, the agent as `make agent` links it).
    local glibc
    glibc=$(for b in "$@"; do
        readelf -V "$b" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/^GLIBC_//'
        if readelf -V "$b" | grep -q 'GLIBC_ABI_DT_RELR'; then echo 2.36; fi
    done | sort -V | tail -n1)
    printf '%s' "$pkgs" | sort -u | sed "s/^libc6\$/libc6 (>= ${glibc:-0})/" | paste -sd, | sed 's/,/, /g'
}

# A maintainer script from its template: name=value pairs replace @NAME@.
render() {
    local template=$1 target=$2; shift 2
    cp "$template" "$target"
    local kv
    for kv in "$@"; do
        local k=${kv%%=*} v=${kv#*=}
        python3 - "$target" "@$k@" "$v" <<'PY'
import sys
p, k, v = sys.argv[1:]
text = open(p).read().replace(k, v)
open(p, "w").write(text)
PY
    done
    grep -q '@[A-Z_]*@' "$target" && { echo "build-packages.sh: $target has unfilled @NAMES@" >&2; exit 1; }
    return 0
}

finish() {
    local pkg=$1 root=$2 deps=$3
    local size
    size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
    render "$here/$pkg/control.in" "$root/DEBIAN/control" VERSION="$version" ARCH="$arch" INSTALLED_SIZE="$size" DEPENDS="$deps"
    find "$root/etc" -type f | sed "s|^$root||" | sort > "$root/DEBIAN/conffiles"
    chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
    dpkg-deb --root-owner-group -Z"$compress" --build "$root" "$out/${pkg}_${version}_${arch}.deb" >/dev/null
    echo "$out/${pkg}_${version}_${arch}.deb"
}

common_scripts() {
    local pkg=$1 root=$2; shift 2
    for s in postinst prerm postrm; do render "$here/$s.in" "$root/DEBIAN/$s" PACKAGE="$pkg" "$@"; done
}

if [[ $only != controller ]]; then
    r=$work/agent
    install -d "$r/DEBIAN" "$r/usr/bin" "$r/lib/systemd/system" "$r/etc/edgefleet" "$r/usr/share/doc/edgefleet-agent"
    install -m 0755 "$agent" "$r/usr/bin/fleet-agent"
    install -m 0644 "$repo/deploy/systemd/edgefleet-agent.service" "$r/lib/systemd/system/"
    install -m 0640 "$here/edgefleet-agent/agent.yaml" "$r/etc/edgefleet/agent.yaml"
    install -m 0644 "$here/copyright" "$r/usr/share/doc/edgefleet-agent/copyright"
    common_scripts edgefleet-agent "$r" USER=edgefleet HOME=/var/lib/edgefleet SERVICE=edgefleet-agent.service \
        COMMENT="EdgeFleet agent" DIRS="/var/lib/edgefleet /var/lib/edgefleet/state /var/lib/edgefleet/models" \
        PRIVATE="/etc/edgefleet/agent.yaml" PRIVATE_MODE=0640 \
        READY='[ -e /etc/edgefleet/root.json ] || [ -e /var/lib/edgefleet/state/trust.json ]' \
        NOT_READY="set controller: in /etc/edgefleet/agent.yaml, put the fleet's root.json in /etc/edgefleet, check with 'fleet-agent doctor', then 'systemctl start edgefleet-agent'"
    finish edgefleet-agent "$r" "$(depends "$agent")"
fi

if [[ $only != agent ]]; then
    r=$work/controller
    install -d "$r/DEBIAN" "$r/usr/bin" "$r/lib/systemd/system" "$r/etc/edgefleet/fleet/policies" \
        "$r/usr/share/edgefleet/nginx" "$r/usr/share/doc/edgefleet-controller"
    install -m 0755 "$controller" "$r/usr/bin/fleet-controller"
    install -m 0755 "$fleetctl" "$r/usr/bin/fleetctl"
    install -m 0644 "$repo/deploy/systemd/edgefleet-controller.service" "$r/lib/systemd/system/"
    install -m 0640 "$here/edgefleet-controller/controller.yaml" "$r/etc/edgefleet/controller.yaml"
    install -m 0644 "$repo"/fleet/*.yaml "$r/etc/edgefleet/fleet/"
    install -m 0644 "$repo"/fleet/policies/*.yaml "$r/etc/edgefleet/fleet/policies/"
    install -m 0644 "$repo/deploy/nginx/edgefleet.conf" "$r/usr/share/edgefleet/nginx/"
    install -m 0755 "$repo/deploy/nginx/render.sh" "$r/usr/share/edgefleet/nginx/"
    install -m 0644 "$here/copyright" "$r/usr/share/doc/edgefleet-controller/copyright"
    common_scripts edgefleet-controller "$r" USER=edgefleet-controller HOME=/var/lib/edgefleet-controller \
        SERVICE=edgefleet-controller.service COMMENT="EdgeFleet controller" \
        DIRS="/var/lib/edgefleet-controller" PRIVATE="/etc/edgefleet/controller.yaml" PRIVATE_MODE=0640 \
        READY='[ -e /etc/edgefleet/keys/online/director.key ]' \
        NOT_READY="copy the online keys from 'fleetctl keys init' to /etc/edgefleet/keys/online (group edgefleet-controller), then 'systemctl start edgefleet-controller'"
    finish edgefleet-controller "$r" "$(depends "$controller" "$fleetctl")"
fi
