# The prelude every bench/*.sh shares (sourced, not run): arguments, paths and the Debian
# packages a benchmark needs.

# bench_init NAME QUICK_REPORT "$@": cd to the repository; sets ROOT, QUICK (--quick), BUILD_DIR
# (absolute), OUT (absolute; QUICK_REPORT under $BUILD_DIR/bench with --quick, else
# docs/benchmarks.md) and PYTHON. --help prints the script's leading comment block.
bench_init() {
  local name="$1" quick_report="$2"
  shift 2
  ROOT="$(cd "$(dirname "$0")/.." && pwd)"
  cd "$ROOT"
  QUICK=0
  for arg in "$@"; do
    case "$arg" in
      --quick) QUICK=1 ;;
      -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
      *) echo "$name: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
  done
  BUILD_DIR="${BUILD_DIR:-$ROOT/build/release}"
  case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$ROOT/$BUILD_DIR" ;; esac
  if [ "$QUICK" = 1 ]; then
    OUT="${OUT:-$BUILD_DIR/bench/$quick_report}"
  else
    OUT="${OUT:-$ROOT/docs/benchmarks.md}"
  fi
  case "$OUT" in /*) ;; *) OUT="$ROOT/$OUT" ;; esac
  PYTHON=/usr/bin/python3   # Debian's, stdlib only; not whatever python3 is first on PATH
}

# bench_install NAME PACKAGE...: installs the Debian packages listed (none: nothing to do).
bench_install() {
  local name="$1"
  shift
  [ $# -gt 0 ] || return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "$name: installing $*"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "$@"
}
