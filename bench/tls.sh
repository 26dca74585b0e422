#!/usr/bin/env bash
# TLS termination: Turnpike vs nginx vs HAProxy, each terminating TLS with the same certificate in
# front of one shared turnpike-echo upstream (cleartext HTTP/1.1 keep-alive). Measures HTTPS
# keep-alive throughput (wrk) and full TLS handshakes per second (openssl s_time -new, one request
# per connection, TLS 1.3 and TLS 1.2) in interleaved rounds; writes the
# "<!-- tls:begin -->" ... "<!-- tls:end -->" section of docs/benchmarks.md (replaced if present,
# appended if not; bench/run.sh and bench/reload.sh keep it).
#
#   bench/tls.sh            full run: 3 rounds x 3 proxies x 3 scenarios x 10 s (about 6 minutes)
#   bench/tls.sh --quick    smoke run: 1 round x 3 s, report to $BUILD_DIR/bench/benchmarks-tls-quick.md
#
# Environment (all optional):
#   ROUNDS=3 DURATION=10 WARMUP=2      rounds, seconds per measured run, warm-up seconds per proxy
#   CONNECTIONS=64 THREADS=2           wrk connections and threads (keep-alive scenario)
#   HS_CLIENTS=2                       parallel `openssl s_time` processes (handshake scenarios)
#   TLS12=1                            also measure TLS 1.2 (ECDHE-ECDSA-AES128-GCM-SHA256) handshakes
#   PROXIES="turnpike nginx haproxy"   which proxies to measure
#   ECHO_THREADS=1 ECHO_CPUS=          upstream threads; optional taskset CPU list for the upstream
#   BUILD_DIR=build/release            where turnpike and turnpike-echo are built (preset `release`)
#   NO_BUILD=1                         use the binaries already in BUILD_DIR (or TURNPIKE_BIN / ECHO_BIN)
#   OUT=docs/benchmarks.md             report path (only the TLS section is written)
#   KEEP=1                             keep the work directory (certificates, configs, logs, raw output)
#
# Note: the load generators, the proxy under test and the upstream share this machine's cores.
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init tls.sh benchmarks-tls-quick.md "$@"

# --- peers and tools ------------------------------------------------------------------------------
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ -x "$PYTHON" ] || need+=(python3)
bench_install tls.sh "${need[@]}"

# --- build ----------------------------------------------------------------------------------------
TURNPIKE_BUILD_ERROR=""
if [ "${NO_BUILD:-0}" != 1 ]; then
  if [ ! -f "$BUILD_DIR/build.ninja" ]; then
    if [ "$BUILD_DIR" = "$ROOT/build/release" ]; then
      cmake --preset release >/dev/null
    else
      cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g -DNDEBUG" >/dev/null
    fi
  fi
  echo "tls.sh: building turnpike-echo and turnpike in $BUILD_DIR"
  if ! cmake --build "$BUILD_DIR" --target turnpike-echo >"$BUILD_DIR/tls-bench-build-echo.log" 2>&1; then
    tail -30 "$BUILD_DIR/tls-bench-build-echo.log" >&2
    echo "tls.sh: turnpike-echo (the shared upstream) does not build; nothing can be measured" >&2
    exit 1
  fi
  if ! cmake --build "$BUILD_DIR" --target turnpike >"$BUILD_DIR/tls-bench-build-turnpike.log" 2>&1; then
    TURNPIKE_BUILD_ERROR="build failed, see $BUILD_DIR/tls-bench-build-turnpike.log: $(grep -m1 -E 'error' "$BUILD_DIR/tls-bench-build-turnpike.log" || tail -1 "$BUILD_DIR/tls-bench-build-turnpike.log")"
    echo "tls.sh: turnpike does not build; measuring the peers only ($TURNPIKE_BUILD_ERROR)" >&2
  fi
fi
TURNPIKE_BIN="${TURNPIKE_BIN:-$BUILD_DIR/turnpike}"
ECHO_BIN="${ECHO_BIN:-$BUILD_DIR/turnpike-echo}"
if [ ! -x "$ECHO_BIN" ]; then
  echo "tls.sh: no upstream binary at $ECHO_BIN" >&2
  exit 1
fi
if [ -n "$TURNPIKE_BUILD_ERROR" ]; then TURNPIKE_BIN="$BUILD_DIR/.turnpike-not-built"; fi

# --- run ------------------------------------------------------------------------------------------
WORKDIR="$(mktemp -d /tmp/turnpike-tls-bench.XXXXXX)"
: >"$WORKDIR/pids"
DRIVER_PID=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  # The driver stops its own processes; this catches whatever is left if it was killed outright.
  if [ -n "$DRIVER_PID" ] && kill -0 "$DRIVER_PID" 2>/dev/null; then
    kill -TERM "$DRIVER_PID" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
      kill -0 "$DRIVER_PID" 2>/dev/null || break
      sleep 0.5
    done
    kill -KILL "$DRIVER_PID" 2>/dev/null || true
  fi
  while read -r pid; do
    [ -n "$pid" ] || continue
    if kill -0 "$pid" 2>/dev/null; then
      # Children first (nginx workers), then the process itself.
      for child in $(pgrep -P "$pid" 2>/dev/null || true); do kill -KILL "$child" 2>/dev/null || true; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done <"$WORKDIR/pids"
  if [ "${KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
    echo "tls.sh: work directory kept: $WORKDIR"
  else
    rm -rf "$WORKDIR"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# --- certificates: one EC P-256 CA and one server certificate, shared by all three proxies ------------
CERTS="$WORKDIR/certs"
"$ROOT/bench/certs.sh" "$CERTS" || { echo "tls.sh: could not create the certificates in $CERTS" >&2; exit 1; }

ARGS=()
[ "$QUICK" = 1 ] && ARGS+=(--quick)
export TURNPIKE_BIN ECHO_BIN BUILD_DIR WORKDIR OUT TURNPIKE_BUILD_ERROR CERTS
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true   # nginx and HAProxy size their fd needs from maxconn
# Bounded: the driver keeps its own time budget; this is the hard stop above it.
if [ "$QUICK" = 1 ]; then R=${ROUNDS:-1} D=${DURATION:-3}; else R=${ROUNDS:-3} D=${DURATION:-10}; fi
LIMIT=$(( ( R * (D + 6) * 9 + 300 ) * 2 ))
timeout --signal=TERM --kill-after=30 "$LIMIT" "$PYTHON" "$ROOT/bench/tls_bench.py" "${ARGS[@]}" &
DRIVER_PID=$!
wait "$DRIVER_PID"
