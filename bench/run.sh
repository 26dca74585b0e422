#!/usr/bin/env bash
# Side-by-side benchmark: Turnpike vs nginx vs HAProxy in front of one shared turnpike-echo upstream,
# for every shape of traffic users send, in interleaved rounds; writes the worst Turnpike/peer ratio,
# one table per metric (a row per scenario) and the raw numbers to docs/benchmarks.md (keeping the
# other scripts' marked sections). Scenarios (SCENARIOS selects a subset, by these names):
#   small   GET /, a ~400-byte JSON answer, HTTP/1.1 keep-alive (wrk)
#   16k     GET /bytes/16384, HTTP/1.1 keep-alive (wrk)
#   256k    GET /bytes/262144, HTTP/1.1 keep-alive (wrk)
#   upload  POST /upload with a 1 MiB body (wrk -s bench/wrk-upload.lua), HTTP/1.1 keep-alive
#   h2c     cleartext HTTP/2 with prior knowledge, 16 connections x 10 streams (h2load -c16 -m10)
#   https   TLS 1.3, HTTP/1.1 keep-alive (wrk https://)
#   close   a new connection per request: `Connection: close` each time (wrk -s bench/wrk-close.lua)
#
#   bench/run.sh            full run: 3 rounds x 7 scenarios x 3 proxies x 10 s (about 14 minutes)
#   bench/run.sh --quick    smoke run: 1 round x 3 s (about 2 minutes), report to $BUILD_DIR/bench/benchmarks-quick.md
#   PROFILE=upload bench/run.sh
#                           no comparison: profiles Turnpike alone under one scenario's load (or several,
#                           PROFILE="small upload") with `perf record`, or callgrind where perf cannot
#                           sample, and writes the top functions, with µs per request, to
#                           $PROFILE_DIR/profile-<scenario>.txt (see bench/profile_bench.py)
#
# Environment (all optional):
#   ROUNDS=3 DURATION=10 WARMUP=2      rounds, seconds per measured run, warm-up seconds per proxy and scenario
#   SCENARIOS="small 16k 256k upload h2c https close"   which scenarios (default: all)
#   PROXIES="turnpike nginx haproxy"   which proxies to measure
#   CONNECTIONS=64 THREADS=2           wrk connections and threads (all scenarios but h2c)
#   H2_CONNECTIONS=16 H2_STREAMS=10 H2_THREADS=2 RUN_WARMUP=1   h2load -c, -m, -t, --warm-up-time (h2c)
#   BENCH_PATH=/                       request path of small, h2c, https and close
#   ECHO_THREADS=1 ECHO_CPUS=          upstream threads; optional taskset CPU list for the upstream
#   BUILD_DIR=build/release            where turnpike and turnpike-echo are built (preset `release`)
#   NO_BUILD=1                         use the binaries already in BUILD_DIR (or TURNPIKE_BIN / ECHO_BIN)
#   OUT=docs/benchmarks.md             report path
#   KEEP=1                             keep the work directory (configs, logs, raw wrk/h2load output)
#   PROFILE=<scenario ...>             profile mode (above); with PROFILE_TOOL=auto|perf|callgrind,
#                                      PROFILE_DIR=$BUILD_DIR/bench, PROFILE_FREQ=499 (perf Hz),
#                                      PROFILE_CALLGRAPH=dwarf|fp|none (perf), PROFILE_REQUESTS=2000 (callgrind)
#
# Note: the load generator, the proxy under test and the upstream share this machine's cores; see the report's Method.
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init run.sh benchmarks-quick.md "$@"

# --- peers and tools ------------------------------------------------------------------------------
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v readelf >/dev/null 2>&1 || need+=(binutils)
[ -x "$PYTHON" ] || need+=(python3)
if [ -n "${PROFILE:-}" ]; then
  case "${PROFILE_TOOL:-auto}" in
    callgrind) command -v valgrind >/dev/null 2>&1 || need+=(valgrind) ;;
    *) command -v perf >/dev/null 2>&1 || need+=(linux-perf)
       # perf falls back to callgrind when it cannot sample here
       command -v valgrind >/dev/null 2>&1 || need+=(valgrind) ;;
  esac
fi
bench_install run.sh "${need[@]}"

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
  echo "run.sh: building turnpike-echo and turnpike in $BUILD_DIR"
  if ! cmake --build "$BUILD_DIR" --target turnpike-echo >"$BUILD_DIR/bench-build-echo.log" 2>&1; then
    tail -30 "$BUILD_DIR/bench-build-echo.log" >&2
    echo "run.sh: turnpike-echo (the shared upstream) does not build; nothing can be measured" >&2
    exit 1
  fi
  if ! cmake --build "$BUILD_DIR" --target turnpike >"$BUILD_DIR/bench-build-turnpike.log" 2>&1; then
    TURNPIKE_BUILD_ERROR="build failed, see $BUILD_DIR/bench-build-turnpike.log: $(grep -m1 -E 'error' "$BUILD_DIR/bench-build-turnpike.log" || tail -1 "$BUILD_DIR/bench-build-turnpike.log")"
    echo "run.sh: turnpike does not build; measuring the peers only ($TURNPIKE_BUILD_ERROR)" >&2
  fi
fi
TURNPIKE_BIN="${TURNPIKE_BIN:-$BUILD_DIR/turnpike}"
ECHO_BIN="${ECHO_BIN:-$BUILD_DIR/turnpike-echo}"
if [ ! -x "$ECHO_BIN" ]; then
  echo "run.sh: no upstream binary at $ECHO_BIN" >&2
  exit 1
fi
if [ -n "$TURNPIKE_BUILD_ERROR" ]; then TURNPIKE_BIN="$BUILD_DIR/.turnpike-not-built"; fi

# --- run ------------------------------------------------------------------------------------------
WORKDIR="$(mktemp -d /tmp/turnpike-bench.XXXXXX)"
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
    echo "run.sh: work directory kept: $WORKDIR"
  else
    rm -rf "$WORKDIR"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# --- certificates for the TLS listeners (the https scenario): as bench/tls.sh and bench/h2.sh -------
CERTS="$WORKDIR/certs"
"$ROOT/bench/certs.sh" "$CERTS" || { echo "run.sh: could not create the certificates in $CERTS" >&2; exit 1; }

ARGS=()
[ "$QUICK" = 1 ] && ARGS+=(--quick)
PROFILE_DIR="${PROFILE_DIR:-$BUILD_DIR/bench}"
case "$PROFILE_DIR" in /*) ;; *) PROFILE_DIR="$ROOT/$PROFILE_DIR" ;; esac
export TURNPIKE_BIN ECHO_BIN BUILD_DIR WORKDIR OUT TURNPIKE_BUILD_ERROR CERTS PROFILE_DIR
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true   # nginx and HAProxy size their fd needs from maxconn
# Bounded: the driver keeps its own time budget (skips runs past it); this is the hard stop above it.
if [ "$QUICK" = 1 ]; then R=${ROUNDS:-1} D=${DURATION:-3} W=${WARMUP:-1}; else R=${ROUNDS:-3} D=${DURATION:-10} W=${WARMUP:-2}; fi
NS=$(echo ${SCENARIOS:-small 16k 256k upload h2c https close} | tr ',' ' ' | wc -w)
[ "$NS" -gt 0 ] || NS=7
[ "${SCENARIOS:-all}" = all ] && NS=7
LIMIT=$(( ( R * (D + 6) * NS * 3 + NS * 3 * (W + 4) + 300 ) * 2 ))
if [ -n "${PROFILE:-}" ]; then
  NP=$(echo $PROFILE | tr ',' ' ' | wc -w)
  LIMIT=$(( ( NP * (D + W + 240) + 300 ) * 2 ))   # callgrind: slow start-up, slow requests, slow dump
fi
timeout --signal=TERM --kill-after=30 "$LIMIT" "$PYTHON" "$ROOT/bench/bench.py" "${ARGS[@]}" &
DRIVER_PID=$!
wait "$DRIVER_PID"
