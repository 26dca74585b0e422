#!/usr/bin/env bash
# The benchmark certificates: one EC P-256 CA and one EC P-256 server certificate (ECDSA-SHA256,
# SAN DNS:bench.test, IP:127.0.0.1), shared by all three proxies, made with the openssl CLI.
# Used by bench/run.sh, bench/tls.sh and bench/h2.sh.
#
#   bench/certs.sh DIR    writes DIR/{ca.key,ca.pem,server.key,server.pem,server-combined.pem}
#                         (server-combined.pem: certificate and key in one file, for HAProxy's `crt`)
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: bench/certs.sh DIR" >&2; exit 2; }
mkdir -p "$1"
cd "$1"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
openssl req -x509 -new -key ca.key -sha256 -days 30 -subj "/CN=Turnpike bench CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out server.key 2>/dev/null
openssl req -new -key server.key -subj "/CN=bench.test" -out server.csr
printf '%s\n' "subjectAltName=DNS:bench.test,IP:127.0.0.1" "basicConstraints=critical,CA:FALSE" \
  "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -sha256 \
  -extfile server.ext -out server.pem 2>/dev/null
cat server.pem server.key >server-combined.pem
openssl verify -CAfile ca.pem server.pem >/dev/null
