#!/usr/bin/env bash
# Cost of hot reload: Turnpike vs nginx vs HAProxy in front of one shared turnpike-echo upstream.
# wrk runs without and with 5 reloads/s (interleaved rounds), then Turnpike's file-write-to-serving
# latency; writes the "<!-- reload:begin -->" ... "<!-- reload:end -->" section of docs/benchmarks.md
# (replaced if present, appended if not; bench/run.sh keeps it).
#
#   bench/reload.sh            full run: 3 rounds x 3 proxies x (without + with) x 10 s + latency (~5 min)
#   bench/reload.sh --quick    smoke run: 1 round x 3 s, 10 latency samples,
#                              report to $BUILD_DIR/bench/benchmarks-reload-quick.md
#
# Environment (all optional):
#   ROUNDS=3 DURATION=10 WARMUP=2      rounds, seconds per measured run, warm-up seconds per proxy
#   RELOAD_RATE=5                      reloads per second during the "with reloads" runs
#   LATENCY_N=50                       file-write-to-serving samples per scenario (--quick: 10)
#   CONNECTIONS=64 THREADS=2           wrk connections and threads
#   PROXIES="turnpike nginx haproxy"   which proxies to measure
#   ECHO_THREADS=1 ECHO_CPUS=          upstream threads; optional taskset CPU list for the upstream
#   BUILD_DIR=build/release            where turnpike and turnpike-echo are built (preset `release`)
#   NO_BUILD=1                         use the binaries already in BUILD_DIR (or TURNPIKE_BIN / ECHO_BIN)
#   OUT=docs/benchmarks.md             report path (only the reload section is written)
#   KEEP=1                             keep the work directory (configs, logs, raw wrk output)
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init reload.sh benchmarks-reload-quick.md "$@"

# --- peers and tools ------------------------------------------------------------------------------
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
[ -x "$PYTHON" ] || need+=(python3)
bench_install reload.sh "${need[@]}"

# --- build ----------------------------------------------------------------------------------------
# Default build dir: `cmake --preset release && cmake --build --preset release`; if the full build
# fails, the two binaries needed here are built on their own. Another BUILD_DIR: those two only.
TURNPIKE_BUILD_ERROR=""
if [ "${NO_BUILD:-0}" != 1 ]; then
  echo "reload.sh: building in $BUILD_DIR"
  FULL_OK=0
  if [ "$BUILD_DIR" = "$ROOT/build/release" ]; then
    BUILD=(cmake --build --preset release)
    mkdir -p "$BUILD_DIR"
    if cmake --preset release >"$BUILD_DIR/reload-bench-build.log" 2>&1 \
        && cmake --build --preset release >>"$BUILD_DIR/reload-bench-build.log" 2>&1; then
      FULL_OK=1
    else
      echo "reload.sh: the full build failed (see $BUILD_DIR/reload-bench-build.log); building the benchmark's targets alone" >&2
    fi
  else
    BUILD=(cmake --build "$BUILD_DIR")
    if [ ! -f "$BUILD_DIR/build.ninja" ]; then
      cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g -DNDEBUG" >/dev/null
    fi
  fi
  if [ "$FULL_OK" != 1 ]; then
    if ! "${BUILD[@]}" --target turnpike-echo >"$BUILD_DIR/reload-bench-build-echo.log" 2>&1; then
      tail -30 "$BUILD_DIR/reload-bench-build-echo.log" >&2
      echo "reload.sh: turnpike-echo (the shared upstream) does not build; nothing can be measured" >&2
      exit 1
    fi
    if ! "${BUILD[@]}" --target turnpike >"$BUILD_DIR/reload-bench-build-turnpike.log" 2>&1; then
      TURNPIKE_BUILD_ERROR="build failed, see $BUILD_DIR/reload-bench-build-turnpike.log: $(grep -m1 -E 'error' "$BUILD_DIR/reload-bench-build-turnpike.log" || tail -1 "$BUILD_DIR/reload-bench-build-turnpike.log")"
      echo "reload.sh: turnpike does not build; measuring the peers only ($TURNPIKE_BUILD_ERROR)" >&2
    fi
  fi
fi
TURNPIKE_BIN="${TURNPIKE_BIN:-$BUILD_DIR/turnpike}"
ECHO_BIN="${ECHO_BIN:-$BUILD_DIR/turnpike-echo}"
if [ ! -x "$ECHO_BIN" ]; then
  echo "reload.sh: no upstream binary at $ECHO_BIN" >&2
  exit 1
fi
if [ -n "$TURNPIKE_BUILD_ERROR" ]; then TURNPIKE_BIN="$BUILD_DIR/.turnpike-not-built"; fi

# --- run ------------------------------------------------------------------------------------------
WORKDIR="$(mktemp -d /tmp/turnpike-reload-bench.XXXXXX)"
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
      # Children first (nginx / HAProxy workers), then the process itself.
      for child in $(pgrep -P "$pid" 2>/dev/null || true); do kill -KILL "$child" 2>/dev/null || true; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done <"$WORKDIR/pids"
  if [ "${KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
    echo "reload.sh: work directory kept: $WORKDIR"
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
export TURNPIKE_BIN ECHO_BIN BUILD_DIR WORKDIR OUT TURNPIKE_BUILD_ERROR
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true   # nginx and HAProxy size their fd needs from maxconn
# Bounded: the driver keeps its own time budget; this is the hard stop above it.
if [ "$QUICK" = 1 ]; then R=${ROUNDS:-1} D=${DURATION:-3} N=${LATENCY_N:-10}; else R=${ROUNDS:-3} D=${DURATION:-10} N=${LATENCY_N:-50}; fi
LIMIT=$(( ( R * (D + 9) * 6 + N * 3 + 300 ) * 2 ))
timeout --signal=TERM --kill-after=30 "$LIMIT" "$PYTHON" "$ROOT/bench/reload_bench.py" "${ARGS[@]}" &
DRIVER_PID=$!
wait "$DRIVER_PID"
