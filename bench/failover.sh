#!/usr/bin/env bash
# Failover side by side: Turnpike vs nginx vs HAProxy, each in front of three turnpike-echo
# endpoints and configured as well as its documentation allows, under wrk load while one endpoint
# is killed, frozen (SIGSTOP) or answers 503, and then comes back. Reports per proxy the failed
# requests, the p99 latency during the event, and how long until the bad endpoint gets no traffic
# and until the restored one gets traffic again; writes the "<!-- failover:begin -->" ...
# "<!-- failover:end -->" section of docs/benchmarks.md (replaced if present, appended if not;
# bench/run.sh keeps it). Details: bench/failover_bench.py.
#
#   bench/failover.sh            3 rounds x 3 scenarios x 3 proxies x 19 s (about 9 minutes)
#   bench/failover.sh --quick    1 round, shorter runs; report to $BUILD_DIR/bench/benchmarks-failover-quick.md
#
# Environment (all optional):
#   ROUNDS=3                           rounds
#   CONNECTIONS=16 THREADS=2           wrk connections and threads
#   PROXIES="turnpike nginx haproxy"   which proxies
#   SCENARIOS="kill freeze 503"        which scenarios
#   BUILD_DIR=build/release            where turnpike and turnpike-echo are built (preset `release`)
#   NO_BUILD=1                         use the binaries already there (or TURNPIKE_BIN / ECHO_BIN)
#   OUT=docs/benchmarks.md             report path (only the failover section is written)
#   KEEP=1                             keep the work directory (configs, logs)
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init failover.sh benchmarks-failover-quick.md "$@"

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
[ -x "$PYTHON" ] || need+=(python3)
bench_install failover.sh "${need[@]}"

if [ "${NO_BUILD:-0}" != 1 ]; then
  [ -f "$BUILD_DIR/build.ninja" ] || cmake --preset release >/dev/null
  echo "failover.sh: building turnpike-echo and turnpike in $BUILD_DIR"
  cmake --build "$BUILD_DIR" --target turnpike-echo turnpike >"$BUILD_DIR/failover-bench-build.log" 2>&1 || {
    tail -30 "$BUILD_DIR/failover-bench-build.log" >&2
    echo "failover.sh: build failed" >&2
    exit 1
  }
fi
TURNPIKE_BIN="${TURNPIKE_BIN:-$BUILD_DIR/turnpike}"
ECHO_BIN="${ECHO_BIN:-$BUILD_DIR/turnpike-echo}"

WORKDIR="$(mktemp -d /tmp/turnpike-failover-bench.XXXXXX)"
: >"$WORKDIR/pids"
DRIVER_PID=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  if [ -n "$DRIVER_PID" ] && kill -0 "$DRIVER_PID" 2>/dev/null; then
    kill -TERM "$DRIVER_PID" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$DRIVER_PID" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$DRIVER_PID" 2>/dev/null || true
  fi
  # Whatever the driver left (it stops its own processes by PID): continued, then killed.
  while read -r pid; do
    [ -n "$pid" ] || continue
    if kill -0 "$pid" 2>/dev/null; then
      for child in $(pgrep -P "$pid" 2>/dev/null || true); do kill -KILL "$child" 2>/dev/null || true; done
      kill -CONT "$pid" 2>/dev/null || true
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done <"$WORKDIR/pids"
  if [ "${KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
    echo "failover.sh: work directory kept: $WORKDIR"
  else
    rm -rf "$WORKDIR"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

ARGS=()
[ "$QUICK" = 1 ] && ARGS+=(--quick)
export TURNPIKE_BIN ECHO_BIN WORKDIR OUT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
R=${ROUNDS:-3}; [ "$QUICK" = 1 ] && R=${ROUNDS:-1}
LIMIT=$(( R * 3 * 3 * 40 + 120 ))   # a hard stop above the driver's own timeline
timeout --signal=TERM --kill-after=30 "$LIMIT" "$PYTHON" "$ROOT/bench/failover_bench.py" "${ARGS[@]}" &
DRIVER_PID=$!
wait "$DRIVER_PID"
