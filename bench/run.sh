#!/usr/bin/env bash
# Load benchmark: mailbeacon against two baselines, in one run, on
# this machine, with the load generator (wrk) on the same cores:
#
#   nginx        Debian's nginx serving the answer as a static file
#   go-baseline  bench/baseline: a bare net/http handler writing the bytes
#   mailbeacon   `mailbeacon serve --demo` (embedded demo directory)
#
# Scenarios: cached autoconfig GETs, cached Autodiscover POX POSTs, and a
# miss-heavy mix (4 of 5 requests for never-seen addresses). For each
# scenario the baselines serve a file of the same size as mailbeacon's
# answer, by GET. Prints requests/s, p50 and p99 latency, the CPU time
# each server process spent per request (utime + stime from /proc; nginx's
# workers included), the count of each HTTP status, and mailbeacon's
# ratios to both baselines, then the same as markdown table rows; then the
# memory of 100,000 cached accounts and the Go benchmarks of the hot paths.
# Every limit is lifted: a run with any status but 200 (or a socket error)
# measured refusals, not work, and is reported INVALID: the script then
# exits 1.
#
# Environment: BENCH_DURATION (5s per run), BENCH_ROUNDS (3: the servers
# take turns, the table shows medians), BENCH_THREADS (2),
# BENCH_CONNECTIONS (64), BENCH_GO (1: run the Go benchmarks too; 0: skip).
# Needs nginx, wrk and curl; as root on Debian it installs what is missing.
# Everything listens on 127.0.0.1 and is stopped when the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${BENCH_DURATION:-5s}
THREADS=${BENCH_THREADS:-2}
CONNS=${BENCH_CONNECTIONS:-64}
ROUNDS=${BENCH_ROUNDS:-3}
RUN_GO=${BENCH_GO:-1}
GO=${GO:-go}

# --- tools -----------------------------------------------------------------
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "bench: missing ${need[*]}: install them (e.g. apt-get install ${need[*]})" >&2
    exit 1
  fi
  echo "bench: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  # The package's own nginx service is not wanted: only the binary.
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

BENCH_TMP_PREFIX=mailbeacon-bench
# shellcheck source=bench/lib.sh
source bench/lib.sh # the script runs from the repository root

wait_http() { # url [log file to show if it does not answer]
  for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "bench: $1 did not answer" >&2
  if [ -n "${2:-}" ] && [ -f "$2" ]; then tail -5 "$2" >&2; fi
  exit 1
}

LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

# --- build and start mailbeacon -------------------------------------------
echo "bench: building"
"$GO" build -o "$tmp/mailbeacon" ./cmd/mailbeacon
"$GO" build -o "$tmp/baseline" ./bench/baseline

# The demo configuration with the rate limits still on (every request pays
# for them) but raised above what one load generator on 127.0.0.1 sends,
# and the bounds on requests in progress off: the defaults would answer
# most of it with 429, as they should.
# bench_config OPS_PORT ACCESS_LOG: the configuration of one instance, its
# operations listener (metrics, health) on a port of its own.
bench_config() {
  cat cmd/mailbeacon/demo.yaml
  bench_limits
  cat <<EOF
operations:
  listen: 127.0.0.1:$1
  access_log: $2
EOF
}

MB_PORT=$(free_port)
MB="http://127.0.0.1:$MB_PORT"
MB_OPS="http://127.0.0.1:$(free_port)"
# The access log stays on, as by default; it goes to a file.
bench_config "${MB_OPS##*:}" true >"$tmp/bench.yaml"
"$tmp/mailbeacon" serve --demo --config "$tmp/bench.yaml" --listen "127.0.0.1:$MB_PORT" 2>"$tmp/mailbeacon.log" &
pids+=($!)
MB_PID=$!
wait_http "$MB_OPS/healthz" "$tmp/mailbeacon.log"
# A second instance without the access log shows what that costs.
MB2_PORT=$(free_port)
MB2="http://127.0.0.1:$MB2_PORT"
MB2_OPS="http://127.0.0.1:$(free_port)"
bench_config "${MB2_OPS##*:}" false >"$tmp/bench-nolog.yaml"
"$tmp/mailbeacon" serve --demo --config "$tmp/bench-nolog.yaml" --listen "127.0.0.1:$MB2_PORT" 2>"$tmp/mailbeacon-nolog.log" &
pids+=($!)
MB2_PID=$!
wait_http "$MB2_OPS/healthz" "$tmp/mailbeacon-nolog.log"

AC_PATH="/mail/config-v1.1.xml?emailaddress=bob@example.com"
curl -fsS -o "$tmp/autoconfig.xml" "$MB$AC_PATH"
cat >"$tmp/pox-request.xml" <<'EOF'
<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>bob@example.com</EMailAddress>
    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
  </Request>
</Autodiscover>
EOF
# Over plain HTTP with no proxy saying so, no request is the redirect
# probe: the POX endpoint answers.
POX_URL="$MB/autodiscover/autodiscover.xml"
curl -fsS -o "$tmp/pox.xml" -H 'Content-Type: text/xml' --data-binary @"$tmp/pox-request.xml" "$POX_URL"
grep -q '<Protocol>' "$tmp/pox.xml" || { echo "bench: unexpected Autodiscover answer:" >&2; cat "$tmp/pox.xml" >&2; exit 1; }
curl -fsS -o "$tmp/miss.xml" "$MB/mail/config-v1.1.xml?emailaddress=warmup-unknown@example.com"
for a in alice bob dave a.example; do
  for m in "$MB" "$MB2"; do curl -fsS -o /dev/null "$m/mail/config-v1.1.xml?emailaddress=$a@example.com"; done
done

# --- baselines --------------------------------------------------------------
mkdir -p "$tmp/www"
cp "$tmp/autoconfig.xml" "$tmp/www/autoconfig.xml"
cp "$tmp/pox.xml" "$tmp/www/pox.xml"
cp "$tmp/miss.xml" "$tmp/www/miss.xml"
# nginx's workers run as an unprivileged user when started as root.
chmod a+rx "$tmp" "$tmp/www"
chmod a+r "$tmp"/www/*.xml

NG_PORT=$(free_port)
mkdir -p "$tmp/nginx"
cat >"$tmp/nginx/nginx.conf" <<EOF
worker_processes auto;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  keepalive_timeout 90s;
  client_body_temp_path $tmp/nginx/body;
  proxy_temp_path $tmp/nginx/proxy;
  fastcgi_temp_path $tmp/nginx/fastcgi;
  uwsgi_temp_path $tmp/nginx/uwsgi;
  scgi_temp_path $tmp/nginx/scgi;
  types { text/xml xml; }
  charset utf-8;
  charset_types text/xml;
  server {
    listen 127.0.0.1:$NG_PORT;
    root $tmp/www;
  }
}
EOF
"$NGINX" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -g 'daemon off;' &
pids+=($!)
NG_PID=$!
NG="http://127.0.0.1:$NG_PORT"
wait_http "$NG/autoconfig.xml" "$tmp/nginx/error.log"

BASE_PORTS=()
BASE_PIDS=()
for f in autoconfig pox miss; do
  p=$(free_port)
  "$tmp/baseline" -listen "127.0.0.1:$p" -file "$tmp/www/$f.xml" &
  pids+=($!)
  BASE_PIDS+=($!)
  wait_http "http://127.0.0.1:$p/"
  BASE_PORTS+=("$p")
done

# --- runs -------------------------------------------------------------------
cat bench/wrk/static.lua bench/wrk/report.lua >"$tmp/static.lua"
cat bench/wrk/pox.lua bench/wrk/report.lua >"$tmp/pox.lua"
cat bench/wrk/miss.lua bench/wrk/report.lua >"$tmp/miss.lua"
export BENCH_POX_BODY="$tmp/pox-request.xml"

# run NAME PID SCRIPT URL [warm]: the measured wrk run (after a short
# warm-up with the fixed GET unless warm is "no"); appends the RESULT
# fields, prefixed with the name, the server's CPU time per request and
# whether every answer was a 200, to the results.
run() {
  local name=$1 pid=$2 script=$3 url=$4 warm=${5:-yes} out c0 c1 cpu valid=1
  if [ "$warm" = yes ]; then
    wrk -t"$THREADS" -c"$CONNS" -d1s -s "$tmp/static.lua" "$url" >/dev/null 2>&1 || true
  fi
  c0=$(cpu_ticks "$pid")
  out=$(BENCH_RUN="$RANDOM$RANDOM" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --timeout 5s -s "$script" "$url" | grep '^RESULT' || true)
  c1=$(cpu_ticks "$pid")
  if [ -z "$out" ]; then
    echo "bench: wrk gave no result for $name" >&2
    exit 1
  fi
  cpu=$(cpu_us_per "$c0" "$c1" "$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$out")")
  statuses_valid "$out" 200 || valid=0
  printf '  %-24s statuses %s, socket errors %s, cpu %s us/request%s\n' "$name" \
    "$(sed -n 's/.* statuses=\([^ ]*\).*/\1/p' <<<"$out")" "$(sed -n 's/.* socket_errors=\([0-9]*\).*/\1/p' <<<"$out")" \
    "$cpu" "$([ "$valid" = 1 ] || echo '  INVALID')"
  echo "$name ${out#RESULT } cpu_us=$cpu valid=$valid" >>"$tmp/results"
}

searches() { # directory searches so far, from mailbeacon's /metrics
  curl -fsS "$1/metrics" | awk '/^mailbeacon_directory_search_duration_seconds_count/ { n += $2 } END { printf "%d\n", n }'
}

# The servers take turns, ROUNDS times, so that whatever else the
# machine does falls on all of them alike; the table shows medians.
: >"$tmp/results"
echo "bench: wrk -t$THREADS -c$CONNS -d$DURATION per run, $ROUNDS rounds of 3 scenarios x 4 servers"
s0=$(searches "$MB_OPS")
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round:"
  run "autoconfig/nginx" "$NG_PID" "$tmp/static.lua" "$NG/autoconfig.xml"
  run "autoconfig/go-baseline" "${BASE_PIDS[0]}" "$tmp/static.lua" "http://127.0.0.1:${BASE_PORTS[0]}/autoconfig.xml"
  run "autoconfig/mailbeacon" "$MB_PID" "$tmp/static.lua" "$MB$AC_PATH"
  run "autoconfig/mb-nolog" "$MB2_PID" "$tmp/static.lua" "$MB2$AC_PATH"
  run "autodiscover/nginx" "$NG_PID" "$tmp/static.lua" "$NG/pox.xml"
  # The same POST as mailbeacon gets: the bare handler reads no body, the
  # server discards it.
  run "autodiscover/go-baseline" "${BASE_PIDS[1]}" "$tmp/pox.lua" "http://127.0.0.1:${BASE_PORTS[1]}/pox.xml"
  # The warm-up is a GET of the POX endpoint (an error document, no lookup).
  run "autodiscover/mailbeacon" "$MB_PID" "$tmp/pox.lua" "$POX_URL"
  run "autodiscover/mb-nolog" "$MB2_PID" "$tmp/pox.lua" "$MB2/autodiscover/autodiscover.xml"
  run "miss-mix/nginx" "$NG_PID" "$tmp/static.lua" "$NG/miss.xml"
  run "miss-mix/go-baseline" "${BASE_PIDS[2]}" "$tmp/static.lua" "http://127.0.0.1:${BASE_PORTS[2]}/miss.xml"
  # No warm-up: it would not add misses, and the cached users are warm.
  run "miss-mix/mailbeacon" "$MB_PID" "$tmp/miss.lua" "$MB/" no
  run "miss-mix/mb-nolog" "$MB2_PID" "$tmp/miss.lua" "$MB2/" no
done
s1=$(searches "$MB_OPS")

# --- table ------------------------------------------------------------------
echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load average at start: $LOAD"
echo "software: $("$GO" version | cut -d' ' -f3), $("$NGINX" -v 2>&1 | cut -d' ' -f3), $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "load: wrk -t$THREADS -c$CONNS -d$DURATION on the same cores, median of $ROUNDS rounds; answer sizes: autoconfig $(wc -c <"$tmp/autoconfig.xml") B, autodiscover $(wc -c <"$tmp/pox.xml") B, miss $(wc -c <"$tmp/miss.xml") B"
echo
invalid=0
awk -v searches="$((s1 - s0))" -v conns="$CONNS" -v rounds="$ROUNDS" -v dur="$DURATION" -v load="$LOAD" '
  function median(key,    n, i, j, t, a) {
    n = cnt[key]
    for (i = 1; i <= n; i++) a[i] = vals[key, i]
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  function add(key, v) { vals[key, ++cnt[key]] = v }
  function all(key,    i, s) { s = ""; for (i = 1; i <= cnt[key]; i++) s = s (i > 1 ? " / " : "") sprintf(key ~ /cpu$/ ? "%.1f" : "%.0f", vals[key, i]); return s }
  function thousands(x,    s) { s = sprintf("%.0f", x); while (s ~ /[0-9][0-9][0-9][0-9]/) sub(/[0-9][0-9][0-9]($|,)/, ",&", s); return s }
  function fig(sc, sv, f, v) { return bad[sc, sv] ? "INVALID" : sprintf(f, v) }
  {
    split($1, nm, "/"); sc = nm[1]; sv = nm[2]
    for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    add(sc SUBSEP sv SUBSEP "rps", v["requests"] / (v["duration_us"] / 1e6))
    add(sc SUBSEP sv SUBSEP "p50", v["p50_us"])
    add(sc SUBSEP sv SUBSEP "p99", v["p99_us"])
    add(sc SUBSEP sv SUBSEP "cpu", v["cpu_us"])
    err[sc, sv] += v["socket_errors"]
    if (v["valid"] != 1) { bad[sc, sv] = 1; anybad = 1 }
    ns2 = split(v["statuses"], st, ",")
    for (i = 1; i <= ns2; i++) { split(st[i], kc, ":"); if (!((sc, sv, kc[1]) in stc)) codes[sc, sv] = codes[sc, sv] " " kc[1]; stc[sc, sv, kc[1]] += kc[2] }
    if (sv == "mailbeacon" && sc == "miss-mix") { done += v["requests"]; miss += v["misses"] }
    if (!(sc in seen)) { seen[sc] = 1; order[++n] = sc }
  }
  function statuses(sc, sv,    c, k, i, s) {
    k = split(codes[sc, sv], c, " "); s = ""
    for (i = 1; i <= k; i++) s = s (i > 1 ? "," : "") c[i] ":" stc[sc, sv, c[i]]
    if (err[sc, sv]) s = s " +" err[sc, sv] " socket errors"
    return s
  }
  END {
    printf "%-13s %-12s %9s %8s %8s %9s %8s %7s %9s %7s  %s\n", "scenario", "server", "req/s", "p50 ms", "p99 ms", "cpu us/r", "vs nginx", "vs Go", "p99 vs Go", "cpu vs Go", "statuses (all rounds)"
    ns = split("nginx go-baseline mailbeacon mb-nolog", svs, " ")
    for (k = 1; k <= n; k++) {
      sc = order[k]
      for (j = 1; j <= ns; j++) {
        sv = svs[j]
        rps[sv] = median(sc SUBSEP sv SUBSEP "rps"); p50[sv] = median(sc SUBSEP sv SUBSEP "p50"); p99[sv] = median(sc SUBSEP sv SUBSEP "p99"); cpu[sv] = median(sc SUBSEP sv SUBSEP "cpu")
      }
      for (j = 1; j <= ns; j++) {
        sv = svs[j]; r1 = r2 = r3 = r4 = ""
        if (sv != "nginx") r1 = sprintf("%.0f%%", 100 * rps[sv] / rps["nginx"])
        if (sv ~ /^m/) {
          r2 = sprintf("%.0f%%", 100 * rps[sv] / rps["go-baseline"])
          r3 = sprintf("%.2fx", p99[sv] / p99["go-baseline"])
          r4 = sprintf("%.2fx", cpu[sv] / cpu["go-baseline"])
        }
        printf "%-13s %-12s %9s %8.2f %8.2f %9.1f %8s %7s %9s %7s  %s\n", sc, sv, fig(sc, sv, "%.0f", rps[sv]), p50[sv] / 1000, p99[sv] / 1000, cpu[sv], r1, r2, r3, r4, statuses(sc, sv)
      }
    }
    printf "\nper round (req/s; cpu us/request):\n"
    for (k = 1; k <= n; k++) for (j = 1; j <= ns; j++) {
      sc = order[k]; sv = svs[j]
      printf "  %-13s %-12s %s; %s\n", sc, sv, all(sc SUBSEP sv SUBSEP "rps"), all(sc SUBSEP sv SUBSEP "cpu")
    }
    printf "\ncached paths against the bare handler, access log on (target: req/s >= 0.85x, cpu/request <= 1.25x, p99 <= 1.5x):\n"
    for (k = 1; k <= 2; k++) {
      sc = k == 1 ? "autoconfig" : "autodiscover"
      r = median(sc SUBSEP "mailbeacon" SUBSEP "rps") / median(sc SUBSEP "go-baseline" SUBSEP "rps")
      c = median(sc SUBSEP "mailbeacon" SUBSEP "cpu") / median(sc SUBSEP "go-baseline" SUBSEP "cpu")
      q = median(sc SUBSEP "mailbeacon" SUBSEP "p99") / median(sc SUBSEP "go-baseline" SUBSEP "p99")
      if (bad[sc, "mailbeacon"] || bad[sc, "go-baseline"]) printf "  %-13s INVALID (statuses other than 200)\n", sc
      else printf "  %-13s req/s %.2fx, cpu/request %.2fx, p99 %.2fx: %s\n", sc, r, c, q, (r >= 0.85 && c <= 1.25 && q <= 1.5) ? "target met" : "target NOT met"
    }
    printf "\nmiss-mix: %d never-seen addresses sent (%d mailbeacon requests completed), %d directory searches", miss, done, searches
    if (searches <= miss && searches >= miss - 2 * conns * cnt["miss-mix" SUBSEP "mailbeacon" SUBSEP "rps"]) print ": one per address"; else print ": NOT one per address"

    printf "\nREADME rows (markdown; median of %d rounds of %s, load average at start %s):\n\n", rounds, dur, load
    print "| scenario | server | req/s | p50 ms | p99 ms | CPU µs/request | vs nginx | vs bare Go | p99 vs bare Go | CPU vs bare Go |"
    print "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    split("cached autoconfig GET|cached Autodiscover POST|miss-heavy mix", title, "|")
    split("nginx|bare Go|mailbeacon|mailbeacon, no access log", label, "|")
    for (k = 1; k <= n; k++) {
      sc = order[k]
      for (j = 1; j <= ns; j++) {
        sv = svs[j]
        rps[sv] = median(sc SUBSEP sv SUBSEP "rps"); p50[sv] = median(sc SUBSEP sv SUBSEP "p50"); p99[sv] = median(sc SUBSEP sv SUBSEP "p99"); cpu[sv] = median(sc SUBSEP sv SUBSEP "cpu")
      }
      for (j = 1; j <= ns; j++) {
        sv = svs[j]; r1 = r2 = r3 = r4 = ""
        if (sv != "nginx") r1 = sprintf("%.0f%%", 100 * rps[sv] / rps["nginx"])
        if (sv ~ /^m/) { r2 = sprintf("%.0f%%", 100 * rps[sv] / rps["go-baseline"]); r3 = sprintf("%.2f×", p99[sv] / p99["go-baseline"]); r4 = sprintf("%.2f×", cpu[sv] / cpu["go-baseline"]) }
        lb = label[j]; if (sv == "nginx" && sc == "autodiscover") lb = "nginx (GET)"
        printf "| %s | %s | %s | %.2f | %.2f | %.1f%s | %s | %s | %s | %s |\n", j == 1 ? title[k] : "", lb, bad[sc, sv] ? "INVALID" : thousands(rps[sv]), p50[sv] / 1000, p99[sv] / 1000, cpu[sv], sv == "nginx" ? " (workers too)" : "", r1, r2, r3, r4
      }
    }
    if (anybad) {
      printf "\nINVALID: a run had a status other than 200 or a socket error (see statuses): refusals are not throughput, the figures must not be used\n"
      exit 3
    }
  }' "$tmp/results" || invalid=1

if grep -q 'level=ERROR' "$tmp/mailbeacon.log"; then
  echo
  echo "mailbeacon logged errors:"
  grep 'level=ERROR' "$tmp/mailbeacon.log" | head -5
fi

if [ "$invalid" = 1 ]; then
  echo "bench: INVALID: a run had a status other than 200 (see above)" >&2
  exit 1
fi

# --- memory of cached accounts ---------------------------------------------
echo
"$GO" run ./bench/cachemem -accounts 100000

# --- memory under a flood of distinct unknown addresses ----------------------
echo
"$GO" run ./bench/unknownflood -addresses 1000000

# --- Go benchmarks of the hot paths -----------------------------------------
if [ "$RUN_GO" = 1 ]; then
  echo
  echo "Go benchmarks (go test -bench, 2 goroutines where parallel):"
  "$GO" test -run '^$' -bench 'Pipeline|Cached|Render|ParsePOX|Limit|ConnState|Resolve|ParseAddress' -benchmem -benchtime 1s ./protocols ./policy |
    grep -E '^Benchmark' || true
  # The whole handler of serve --demo with its access log; cpu-ns/op is the
  # process's CPU time per request, steadier than ns/op on a shared machine.
  "$GO" test -run '^$' -bench 'AccessLog|LogWriter' -benchmem -benchtime 1s ./cmd/mailbeacon |
    grep -E '^Benchmark' || true
fi
