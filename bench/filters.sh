#!/usr/bin/env bash
# The filter chain's cost: a plain proxy route vs api_key + rate_limit(local) + headers vs
# jwt(RS256) + rate_limit(redis), on one Turnpike, with nginx on the plain route for context; wrk in
# interleaved rounds, medians and ratios to the plain route in docs/benchmarks.md (its
# "<!-- filters:begin -->" section). See bench/filters_bench.py for the method.
#
#   bench/filters.sh            full run: 3 rounds x 4 scenarios x 10 s (about 3 minutes)
#   bench/filters.sh --quick    smoke run: 1 round x 3 s, report to $BUILD_DIR/bench/benchmarks-filters-quick.md
#
# Environment (all optional): ROUNDS, DURATION, CONNECTIONS=64, THREADS=2, BUILD_DIR=build/release,
# NO_BUILD=1 (use the binaries in BUILD_DIR), OUT=docs/benchmarks.md, KEEP=1 (keep the work dir).
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init filters.sh benchmarks-filters-quick.md "$@"
mkdir -p "$(dirname "$OUT")"

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
/usr/bin/python3 -c 'import jwt, cryptography' 2>/dev/null || need+=(python3-jwt python3-cryptography)
bench_install filters.sh "${need[@]}"

if [ "${NO_BUILD:-0}" != 1 ]; then
  [ -f "$BUILD_DIR/build.ninja" ] || cmake --preset release >/dev/null
  cmake --build "$BUILD_DIR" --target turnpike turnpike-echo
fi
export TURNPIKE_BIN="${TURNPIKE_BIN:-$BUILD_DIR/turnpike}" ECHO_BIN="${ECHO_BIN:-$BUILD_DIR/turnpike-echo}"
WORKDIR="$(mktemp -d /tmp/turnpike-filters-bench.XXXXXX)"
: >"$WORKDIR/pids"
export WORKDIR OUT
cleanup() {
  while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$WORKDIR/pids"
  if [ "${KEEP:-0}" = 1 ]; then echo "filters.sh: work directory kept: $WORKDIR"; else rm -rf "$WORKDIR"; fi
}
trap cleanup EXIT
ARGS=()
[ "$QUICK" = 1 ] && ARGS+=(--quick)
timeout --signal=TERM --kill-after=30 1200 /usr/bin/python3 "$ROOT/bench/filters_bench.py" "${ARGS[@]}"
