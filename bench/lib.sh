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
