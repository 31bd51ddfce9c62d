#!/usr/bin/env bash
# Writes PREFIX/nginx.conf from deploy/nginx/edgefleet.conf and makes PREFIX's temporary folders.
#
#   deploy/nginx/render.sh --prefix DIR --listen 127.0.0.1:8080 --artifacts DATA/artifacts/sha256 \
#       --upstream 127.0.0.1:9001 [--upstream 127.0.0.1:9002 ...] [--workers auto] [--access-log off]
#       [--tls-cert controller.crt --tls-key controller.key --client-ca ca.crt]   (mutual TLS in nginx)
# then:  nginx -p DIR/ -c nginx.conf -g 'daemon off;' &
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
prefix="" listen="" artifacts="" workers=auto access_log=off max_body=8g tls_cert="" tls_key="" client_ca=""
upstreams=()
while (($#)); do
    case $1 in
        --prefix) prefix=$2; shift 2 ;;
        --listen) listen=$2; shift 2 ;;
        --artifacts) artifacts=$2; shift 2 ;;
        --upstream) upstreams+=("$2"); shift 2 ;;
        --workers) workers=$2; shift 2 ;;
        --access-log) access_log=$2; shift 2 ;;
        --max-body) max_body=$2; shift 2 ;;
        --tls-cert) tls_cert=$2; shift 2 ;;
        --tls-key) tls_key=$2; shift 2 ;;
        --client-ca) client_ca=$2; shift 2 ;;
        *) echo "render.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ -n $prefix && -n $listen && -n $artifacts && ${#upstreams[@]} -gt 0 ]] ||
    { echo "render.sh: --prefix, --listen, --artifacts and at least one --upstream are needed" >&2; exit 2; }
given=0; for f in "$tls_cert" "$tls_key" "$client_ca"; do [[ -n $f ]] && given=$((given + 1)); done
((given == 0 || given == 3)) || { echo "render.sh: --tls-cert, --tls-key and --client-ca go together" >&2; exit 2; }
absolute() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
tls="" listen_ssl=""
if ((given == 3)); then
    for f in "$tls_cert" "$tls_key" "$client_ca"; do [[ -r $f ]] || { echo "render.sh: cannot read $f" >&2; exit 2; }; done
    listen_ssl=" ssl"
    tls="        # Devices present their client certificate; operators come with tokens (optional)."
    tls+=$'\n'"        ssl_certificate $(absolute "$tls_cert");"
    tls+=$'\n'"        ssl_certificate_key $(absolute "$tls_key");"
    tls+=$'\n'"        ssl_client_certificate $(absolute "$client_ca");"
    tls+=$'\n'"        ssl_verify_client optional;"
    tls+=$'\n'"        ssl_verify_depth 2;"
    tls+=$'\n'"        ssl_protocols TLSv1.2 TLSv1.3;"
fi
prefix=$(cd "$prefix" && pwd)
case $artifacts in /*) ;; *) artifacts="$PWD/$artifacts" ;; esac
[[ $access_log == off ]] || access_log="$prefix/$access_log"
mkdir -p "$prefix"/tmp/{client_body,proxy,fastcgi,uwsgi,scgi}
servers=""
for u in "${upstreams[@]}"; do servers+="        server $u max_fails=3 fail_timeout=5s;"$'\n'; done
servers=${servers%$'\n'}
python3 - "$here/edgefleet.conf" "$prefix/nginx.conf" <<PY
import sys
text = open(sys.argv[1]).read()
for k, v in {"@PREFIX@": """$prefix""", "@LISTEN@": """$listen$listen_ssl""", "@TLS@": """$tls""", "@ARTIFACTS@": """${artifacts%/}""",
             "@WORKERS@": """$workers""", "@ACCESS_LOG@": """$access_log""", "@MAX_BODY@": """$max_body""",
             "@UPSTREAM_SERVERS@": """$servers"""}.items():
    text = text.replace(k, v)
open(sys.argv[2], "w").write(text)
PY
echo "$prefix/nginx.conf"
