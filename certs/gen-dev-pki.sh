#!/usr/bin/env bash
# Development PKI for EdgeFleet: a CA, a controller server certificate for 127.0.0.1/localhost,
# and one client certificate per device (CN = device id). FOR DEVELOPMENT ONLY: see README.md.
#
#   certs/gen-dev-pki.sh [OUTDIR [DEVICE_ID... | expired:DEVICE_ID...]]
#
# OUTDIR defaults to certs/dev (git-ignored). Device ids default to the deviceId of every
# fleet/demo/*.json. An existing CA in OUTDIR is reused, so running again with new device ids
# adds their certificates; a certificate is issued again only when it expires within a day.
# `expired:ID` writes devices/ID-expired.crt: a certificate for ID's key (made if missing) that
# expired in 2020, as a device's own certificate looks once it has run out (for tests).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/certs/dev}
shift || true
DEVICES=("$@")
if ((${#DEVICES[@]} == 0)); then
    for f in "$ROOT"/fleet/demo/*.json; do
        [[ -f "$f" ]] || continue
        DEVICES+=("$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["deviceId"])' "$f")")
    done
fi
((${#DEVICES[@]} > 0)) || DEVICES=(device-01 device-02 device-03)

CA_DAYS=365       # short on purpose: this CA is thrown away, not managed
LEAF_DAYS=30

command -v openssl >/dev/null || { echo "gen-dev-pki: openssl is not installed" >&2; exit 1; }

umask 077         # private keys readable by the owner only
mkdir -p "$OUT/devices"
cd "$OUT"

new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# sign CSR CERT EXTFILE
sign() {
    openssl x509 -req -in "$1" -CA ca.crt -CAkey ca.key -CAcreateserial \
        -days "$LEAF_DAYS" -sha256 -extfile "$3" -out "$2" 2>/dev/null
    rm -f "$1" "$3"
}

# still_valid CERT: exists and does not expire within a day.
still_valid() { [[ -f "$1" ]] && openssl x509 -in "$1" -noout -checkend 86400 >/dev/null; }

if [[ -f ca.key && -f ca.crt ]]; then
    if ! openssl x509 -in ca.crt -noout -checkend $((LEAF_DAYS * 86400)) >/dev/null; then
        echo "gen-dev-pki: the CA in $OUT expires within $LEAF_DAYS days; remove $OUT and run again" >&2
        exit 1
    fi
    echo "reusing CA $OUT/ca.crt"
else
    new_key ca.key
    openssl req -x509 -new -key ca.key -sha256 -days "$CA_DAYS" \
        -subj "/O=EdgeFleet Development/CN=EdgeFleet Dev CA" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" \
        -out ca.crt
    echo "created CA $OUT/ca.crt"
fi

if ! still_valid controller.crt; then
    new_key controller.key
    openssl req -new -key controller.key -subj "/O=EdgeFleet Development/CN=localhost" -out controller.csr
    cat >controller.ext <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
authorityKeyIdentifier=keyid
EOF
    sign controller.csr controller.crt controller.ext
    echo "created controller certificate $OUT/controller.crt (localhost, 127.0.0.1, ::1)"
fi

# sign_expired CSR CERT EXTFILE: valid for one day in 2020 (openssl x509 -req cannot backdate).
sign_expired() {
    local db
    db=$(mktemp -d)
    touch "$db/index.txt"
    echo 1000 >"$db/serial"
    printf '%s\n' "[ca]" "default_ca = dev" "[dev]" "database = $db/index.txt" "new_certs_dir = $db" "serial = $db/serial" "default_md = sha256" \
        "unique_subject = no" "policy = any" "[any]" "commonName = supplied" "organizationName = optional" >"$db/ca.cnf"
    openssl ca -batch -config "$db/ca.cnf" -cert ca.crt -keyfile ca.key -notext \
        -startdate 20200101000000Z -enddate 20200102000000Z -extfile "$3" -in "$1" -out "$2" 2>/dev/null
    rm -rf "$db" "$1" "$3"
}

for entry in "${DEVICES[@]}"; do
    expired=0
    id=$entry
    if [[ "$entry" == expired:* ]]; then expired=1; id=${entry#expired:}; fi
    if [[ ! "$id" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]]; then
        echo "gen-dev-pki: bad device id '$id' (letters, digits, . _ - only)" >&2
        exit 1
    fi
    crt="devices/$id.crt"
    ((expired)) && crt="devices/$id-expired.crt"
    ((expired)) || ! still_valid "$crt" || continue
    ((expired)) && [[ -f "devices/$id.key" ]] || new_key "devices/$id.key"
    openssl req -new -key "devices/$id.key" -subj "/O=EdgeFleet Development/CN=$id" -out "devices/$id.csr"
    cat >"devices/$id.ext" <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
authorityKeyIdentifier=keyid
EOF
    if ((expired)); then
        sign_expired "devices/$id.csr" "$crt" "devices/$id.ext"
        echo "created EXPIRED device certificate $OUT/$crt (CN=$id, key devices/$id.key, expired 2020-01-02)"
    else
        sign "devices/$id.csr" "devices/$id.crt" "devices/$id.ext"
        echo "created device certificate $OUT/devices/$id.crt (CN=$id)"
    fi
done

# Certificates are public; keep them world-readable so tools running as other users can load them.
chmod 644 ca.crt controller.crt devices/*.crt
# Every certificate chains to the CA; expired ones (made on purpose) are checked without the clock.
openssl verify -no_check_time -CAfile ca.crt controller.crt devices/*.crt >/dev/null
echo "verified against $OUT/ca.crt"
