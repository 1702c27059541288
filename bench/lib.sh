# Shared by bench/run.sh and bench/domains.sh (sourced): a temporary
# directory removed on exit with every process started into pids, and a
# free port on 127.0.0.1. Set BENCH_TMP_PREFIX before sourcing.
tmp=$(mktemp -d "/tmp/${BENCH_TMP_PREFIX:-mailbeacon-bench}.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port on 127.0.0.1 where nothing listens.
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return
    fi
  done
  echo "bench: no free port" >&2
  exit 1
}

# The limits block of a benchmarked mailbeacon: every per-client and
# global limit lifted, as one load generator on 127.0.0.1 would otherwise
# (rightly) be answered 429 or 503, and a refusal is not work.
bench_limits() {
  cat <<LIMITS
limits:
  requests_per_second: 10000000
  burst: 10000000
  unknown_per_minute: 600000000
  unknown_burst: 10000000
  unknown_total_per_second: 0
  max_per_client: 0
  max_concurrent: 0
LIMITS
}

# CPU time (utime + stime, in clock ticks) of the processes given and of
# their children (nginx's workers), from /proc.
TCK=$(getconf CLK_TCK)
cpu_ticks() {
  local p total=0 t
  for p in "$@" $(for q in "$@"; do pgrep -P "$q" || true; done); do
    t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)
    total=$((total + t))
  done
  echo "$total"
}

# cpu_us_per TICKS0 TICKS1 N: microseconds of CPU per unit of work.
cpu_us_per() {
  awk -v a="$1" -v b="$2" -v n="$3" -v t="$TCK" 'BEGIN { if (n > 0) printf "%.1f", (b - a) * 1e6 / t / n; else print "nan" }'
}

# statuses_valid RESULT [EXPECTED]: true when the run had no socket error
# and every answer's status is among EXPECTED (comma-separated, "200" if
# not given). A run with any other status measured refusals or errors.
statuses_valid() {
  local result=$1 expected=${2:-200} s st
  st=$(sed -n 's/.* statuses=\([^ ]*\).*/\1/p' <<<"$result")
  [ -n "$st" ] && [ "$st" != none ] || return 1
  [ "$(sed -n 's/.* socket_errors=\([0-9]*\).*/\1/p' <<<"$result")" = 0 ] || return 1
  for s in ${st//,/ }; do
    case ",$expected," in *",${s%%:*},"*) ;; *) return 1 ;; esac
  done
}
