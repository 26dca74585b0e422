#!/usr/bin/env bash
# Installs dependencies, builds, starts three demo echo backends and Turnpike on
# config/demo.yaml, and prints a few requests to try. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target turnpike turnpike-echo
bin=build/release
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
"$bin/turnpike-echo" --listen 127.0.0.1:9001 --name users-1 & pids+=($!)
"$bin/turnpike-echo" --listen 127.0.0.1:9002 --name users-2 & pids+=($!)
"$bin/turnpike-echo" --listen 127.0.0.1:9003 --name orders & pids+=($!)
"$bin/turnpike" -c config/demo.yaml & pids+=($!)
for _ in $(seq 50); do curl -sf http://127.0.0.1:9901/ready >/dev/null 2>&1 && break; sleep 0.1; done
cat <<'TRY'

Turnpike is running on http://127.0.0.1:8080 (admin on 127.0.0.1:9901). Try:
  curl -i http://127.0.0.1:8080/users/7
  curl -i -X POST -d '{"name":"ada"}' http://127.0.0.1:8080/users
  curl -i http://127.0.0.1:8080/orders/42
  curl -i http://127.0.0.1:8080/healthz
  curl -i -H 'x-api-key: demo-key' http://127.0.0.1:8080/account     # 401 without the key
  for i in $(seq 15); do curl -s -o /dev/null -w '%{http_code} ' -H 'x-api-key: demo-key' http://127.0.0.1:8080/account; done; echo   # 429s past the burst
  curl -i http://127.0.0.1:8080/old/page
  curl -i http://127.0.0.1:8080/nowhere
  curl -s 'http://127.0.0.1:9901/explain?method=GET&path=/users/7' 
  build/release/turnpike explain -c config/demo.yaml GET http://localhost/orders/1
Ctrl-C stops the demo.
TRY
wait "${pids[-1]}"
