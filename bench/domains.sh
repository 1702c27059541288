#!/usr/bin/env bash
# Scale benchmark of hosted domains from the directory (domain_source):
#
#  1. generates an iRedMail-style directory, BENCH_DOMAINS mailDomain
#     entries (100,000) with BENCH_USERS users each (10: 1,000,000 users),
#     and loads it into a throwaway slapd with slapadd, indexed as a
#     deployment would be (objectClass, mail, shadowAddress, uid,
#     domainName, domainAliasName: eq);
#  2. starts `mailbeacon serve` against it with no domains list;
#  3. measures, in the same run, on the same slapd: the raw go-ldap search
#     rate (bench/domainscale raw: the user search alone, and the domain
#     search plus the user search, as a request for a new domain costs),
#     and mailbeacon's autoconfig rate under wrk for requests of new
#     domains, of cached answers, of new users of cached domains, and a mix
#     of cached and new domains; and for each run the CPU time (utime +
#     stime) per request or search of every process involved: mailbeacon,
#     slapd and the raw client;
#  4. asks mailbeacon once for every domain and prints its resident memory.
#
# Every limit of mailbeacon is lifted (bench/lib.sh: bench_limits): a run
# with any status but 200, a socket error or a failed raw search measured
# refusals or errors, not work: the script prints INVALID and exits 1.
#
# Environment: BENCH_DOMAINS, BENCH_USERS, BENCH_DURATION (10s per run),
# BENCH_THREADS (2), BENCH_CONNECTIONS (64), BENCH_LDAP_CONNS (16: the
# raw client's connections and mailbeacon's ldap.pool_size).
# Needs slapd and slapadd (apt-get install slapd), wrk and curl.
# Everything listens on 127.0.0.1 and is stopped when the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."

DOMAINS=${BENCH_DOMAINS:-100000}
USERS=${BENCH_USERS:-10}
DURATION=${BENCH_DURATION:-10s}
THREADS=${BENCH_THREADS:-2}
CONNS=${BENCH_CONNECTIONS:-64}
LDAP_CONNS=${BENCH_LDAP_CONNS:-16}
GO=${GO:-go}
SLAPD=$(command -v slapd || echo /usr/sbin/slapd)
SLAPADD=$(command -v slapadd || echo /usr/sbin/slapadd)
SCHEMA=/etc/ldap/schema
for f in "$SLAPD" "$SLAPADD" "$SCHEMA/core.schema"; do
  [ -e "$f" ] || { echo "bench: $f missing: apt-get install slapd" >&2; exit 1; }
done
command -v wrk >/dev/null || { echo "bench: wrk missing: apt-get install wrk" >&2; exit 1; }
if [ "$THREADS" != 2 ]; then echo "bench: the wrk script assumes 2 threads" >&2; exit 1; fi
STRIDE=$((DOMAINS / 5)) # per wrk thread: newdomain uses [0, 2*STRIDE), mixed [2*STRIDE, 4*STRIDE)

BENCH_TMP_PREFIX=mailbeacon-domains
# shellcheck source=bench/lib.sh
source bench/lib.sh # the script runs from the repository root
secs() { date +%s.%N; }
since() { echo "$(secs) - $1" | bc; }
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

echo "bench: building"
"$GO" build -o "$tmp/mailbeacon" ./cmd/mailbeacon
"$GO" build -o "$tmp/domainscale" ./bench/domainscale

t=$(secs)
"$tmp/domainscale" ldif -domains "$DOMAINS" -users "$USERS" >"$tmp/data.ldif"
echo "bench: LDIF of $DOMAINS domains and $((DOMAINS * USERS)) users: $(du -h "$tmp/data.ldif" | cut -f1), $(since "$t") s"

mkdir "$tmp/db"
cp ldapsource/ldaptest/mailbeacon.schema "$tmp/"
MODULES=""
for d in /usr/lib/ldap /usr/lib64/openldap /usr/lib/openldap /usr/libexec/openldap; do
  if [ -e "$d/back_mdb.la" ] || [ -e "$d/back_mdb.so" ]; then MODULES="modulepath $d
moduleload back_mdb"; break; fi
done
cat >"$tmp/slapd.conf" <<EOF
$MODULES
include $SCHEMA/core.schema
include $SCHEMA/cosine.schema
include $SCHEMA/inetorgperson.schema
include $tmp/mailbeacon.schema
pidfile $tmp/slapd.pid
loglevel none
sizelimit 10
database mdb
maxsize 17179869184
suffix "dc=example,dc=com"
directory $tmp/db
index objectClass,uid,mail,shadowAddress,domainName,domainAliasName eq
access to attrs=userPassword
    by anonymous auth
    by * none
access to *
    by dn.exact="cn=mailbeacon,ou=services,dc=example,dc=com" read
    by * none
EOF
t=$(secs)
"$SLAPADD" -q -f "$tmp/slapd.conf" -l "$tmp/data.ldif"
echo "bench: slapadd: $(since "$t") s, database $(du -sh "$tmp/db" | cut -f1)"
rm "$tmp/data.ldif"

LDAP_PORT=$(free_port)
LDAP_URL="ldap://127.0.0.1:$LDAP_PORT"
"$SLAPD" -d 0 -h "$LDAP_URL/" -f "$tmp/slapd.conf" 2>"$tmp/slapd.log" &
pids+=($!)
SLAPD_PID=$!
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$LDAP_PORT") 2>/dev/null && break; sleep 0.1; done

MB_PORT=$(free_port)
MB="http://127.0.0.1:$MB_PORT"
cat >"$tmp/mailbeacon.yaml" <<EOF
ldap:
  urls: ["$LDAP_URL"]
  bind_dn: cn=mailbeacon,ou=services,dc=example,dc=com
  bind_password: bench-service-password
  base_dn: dc=example,dc=com
  pool_size: $LDAP_CONNS
policy:
  preset: iredmail
  login: "{uid}"
domain_source:
  preset: iredmail
  base_dn: o=domains,dc=example,dc=com
  template:
    provider: "{cn}"
    services:
      - {type: imap, host: "mail.{domain}", port: 993, socket: tls}
      - {type: smtp, host: "mail.{domain}", host_attribute: mtaTransport, port: 465, socket: tls}
      - {type: smtp, host: "mail.{domain}", port: 587, socket: starttls}
EOF
bench_limits >>"$tmp/mailbeacon.yaml"
"$tmp/mailbeacon" serve --config "$tmp/mailbeacon.yaml" --listen "127.0.0.1:$MB_PORT" 2>"$tmp/mailbeacon.log" &
pids+=($!)
MB_PID=$!
for _ in $(seq 1 100); do curl -fsS -o /dev/null "$MB/healthz" 2>/dev/null && break; sleep 0.1; done
curl -fsS "$MB/mail/config-v1.1.xml?emailaddress=u1@d$((DOMAINS - 1)).example" | grep -q "<hostname>mail.d$((DOMAINS - 1)).example</hostname>" ||
  { echo "bench: mailbeacon does not answer for a directory domain" >&2; tail -5 "$tmp/mailbeacon.log" >&2; exit 1; }
curl -sS -o /dev/null -w "%{http_code}" "$MB/mail/config-v1.1.xml?emailaddress=u1@nowhere.example" | grep -q 404 ||
  { echo "bench: an unknown domain was not refused" >&2; exit 1; }
rss() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }
RSS0=$(rss "$MB_PID")

invalid=0 # set to 1 by the checks after the runs
# raw MODE OFFSET: the raw client's RESULT line, with slapd's CPU time per
# iteration (slapd_us) added.
raw() {
  local out c0 c1
  c0=$(cpu_ticks "$SLAPD_PID")
  out=$("$tmp/domainscale" raw -url "$LDAP_URL" -mode "$1" -offset "$2" -domains "$DOMAINS" -c "$LDAP_CONNS" -d "$DURATION") || true
  c1=$(cpu_ticks "$SLAPD_PID")
  echo "$out slapd_us=$(cpu_us_per "$c0" "$c1" "$(field iterations "$out")")"
}
cat bench/wrk/domains.lua bench/wrk/report.lua >"$tmp/domains.lua"
# mbrun MODE: wrk's RESULT line, with mailbeacon's and slapd's CPU time per
# request (mb_us, slapd_us) added.
mbrun() {
  local out m0 m1 s0 s1 n
  m0=$(cpu_ticks "$MB_PID")
  s0=$(cpu_ticks "$SLAPD_PID")
  out=$(env BENCH_MODE="$1" BENCH_STRIDE="$STRIDE" BENCH_OFFSET=0 BENCH_OFFSET2=$((2 * STRIDE)) BENCH_SEEN="${SEEN:-1000}" \
    wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" -s "$tmp/domains.lua" "$MB/" | grep '^RESULT')
  m1=$(cpu_ticks "$MB_PID")
  s1=$(cpu_ticks "$SLAPD_PID")
  n=$(field requests "$out")
  echo "$out mb_us=$(cpu_us_per "$m0" "$m1" "$n") slapd_us=$(cpu_us_per "$s0" "$s1" "$n")"
}
rate() { awk -v r="$(field requests "$1")" -v d="$(field duration_us "$1")" 'BEGIN {printf "%.0f", r / (d / 1e6)}'; }
# shows NAME RESULT: one line of what a run did.
shows() {
  if [ -n "$(field statuses "$2")" ]; then
    printf '  %-10s %6s req/s, statuses %s, socket errors %s; CPU per request: mailbeacon %s us, slapd %s us\n' "$1" "$(rate "$2")" \
      "$(field statuses "$2")" "$(field socket_errors "$2")" "$(field mb_us "$2")" "$(field slapd_us "$2")"
  else
    printf '  %-10s %6s searches/s (iterations), errors %s; CPU per iteration: raw client %s us, slapd %s us\n' "$1" "$(field rate "$2")" \
      "$(field errors "$2")" "$(raw_us "$2")" "$(field slapd_us "$2")"
  fi
}
raw_us() { awk -v c="$(field cpu_us "$1")" -v n="$(field iterations "$1")" 'BEGIN { if (n > 0) printf "%.1f", c / n; else print "nan" }'; }

LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
echo "bench: raw go-ldap, user search ($LDAP_CONNS connections, $DURATION)"
RAW_USER=$(raw user $((9 * DOMAINS)))
shows raw-user "$RAW_USER"
echo "bench: raw go-ldap, domain + user search"
RAW_BOTH=$(raw both $((8 * DOMAINS + 4 * STRIDE)))
shows raw-both "$RAW_BOTH"
echo "bench: mailbeacon, new domains (wrk -t$THREADS -c$CONNS, $DURATION)"
NEWDOM=$(mbrun newdomain)
shows newdomain "$NEWDOM"
# cached and newuser ask u0 and u1.. of the domains each thread asked in
# newdomain.
SEEN=$(($(field requests "$NEWDOM") / THREADS / 2))
[ "$SEEN" -gt 0 ] || SEEN=1
[ "$SEEN" -le "$STRIDE" ] || SEEN=$STRIDE
export SEEN
echo "bench: mailbeacon, cached answers"
CACHED=$(mbrun cached)
shows cached "$CACHED"
echo "bench: mailbeacon, new users of cached domains"
NEWUSER=$(mbrun newuser)
shows newuser "$NEWUSER"
echo "bench: mailbeacon, mixed: half cached, half new domains"
MIXED=$(mbrun mixed)
shows mixed "$MIXED"
echo "bench: asking mailbeacon for every domain once"
FILL=$("$tmp/domainscale" fill -url "$MB" -domains "$DOMAINS" -c "$LDAP_CONNS") || invalid=1
RSS1=$(rss "$MB_PID")
SLAPD_RSS=$(rss "$SLAPD_PID")
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
for r in "$NEWDOM" "$CACHED" "$NEWUSER" "$MIXED"; do statuses_valid "$r" 200 || invalid=1; done
for r in "$RAW_USER" "$RAW_BOTH"; do [ "$(field errors "$r")" = 0 ] || invalid=1; done

r_user=$(field rate "$RAW_USER")
r_both=$(field rate "$RAW_BOTH")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
# row TITLE MB_RESULT [RAW_RESULT]: a markdown row of the table.
row() {
  local raw_rate="" raw_client="" raw_slapd="" r=""
  if [ -n "${3:-}" ]; then
    raw_rate=$(field rate "$3"); raw_client=$(raw_us "$3"); raw_slapd=$(field slapd_us "$3"); r=$(ratio "$(rate "$2")" "$raw_rate")
  fi
  echo "| $1 | $(rate "$2") | $raw_rate | $r | $(field mb_us "$2") | $(field slapd_us "$2") | $raw_client | $raw_slapd |"
}
# target NAME MISS_RESULT RAW_RESULT: CPU per miss against 1.5 x (the raw
# client's CPU per search + mailbeacon's CPU per cached answer).
target() {
  awk -v name="$1" -v m="$(field mb_us "$2")" -v r="$(raw_us "$3")" -v c="$(field mb_us "$CACHED")" 'BEGIN {
    b = 1.5 * (r + c)
    printf "  %-10s mailbeacon %.1f us per miss, 1.5 x (raw client %.1f + cached answer %.1f) = %.1f: %.2fx of the bound, %s\n",
      name, m, r, c, b, m / b, m <= b ? "target met" : "target NOT met"
  }'
}

if [ "$invalid" = 1 ]; then
  echo
  echo "statuses: newdomain $(field statuses "$NEWDOM"), cached $(field statuses "$CACHED"), newuser $(field statuses "$NEWUSER"), mixed $(field statuses "$MIXED"); raw search errors: user $(field errors "$RAW_USER"), both $(field errors "$RAW_BOTH")"
  echo "fill: $FILL"
  echo "INVALID: a run had a status other than 200, a socket error or a failed search (requests past the directory's domains are 404s: raise BENCH_DOMAINS or shorten BENCH_DURATION); no figure is reported"
  exit 1
fi

echo
echo "Machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); load average before: $LOAD, after: $LOAD1"
echo "Directory: $DOMAINS domains, $((DOMAINS * USERS)) users; slapd $("$SLAPD" -VV 2>&1 | sed -n 's/.*slapd \([0-9.]*\).*/\1/p' | head -1), mdb"
echo "Load: wrk -t$THREADS -c$CONNS, $DURATION a run; raw client and ldap.pool_size: $LDAP_CONNS connections"
echo
echo "| scenario | mailbeacon req/s | raw go-ldap /s (same searches) | ratio | mailbeacon CPU µs/request | slapd CPU µs/request | raw client CPU µs/search | slapd CPU µs/raw search |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
row "new domain (domain + user search)" "$NEWDOM" "$RAW_BOTH"
row "new user, cached domain (user search)" "$NEWUSER" "$RAW_USER"
row "cached answer" "$CACHED"
row "mixed: half cached, half new domains" "$MIXED"
echo
echo "CPU per miss (target: at most 1.5 x (raw client per search + mailbeacon per cached answer)):"
target newuser "$NEWUSER" "$RAW_USER"
target newdomain "$NEWDOM" "$RAW_BOTH"
echo
echo "statuses: newdomain $(field statuses "$NEWDOM"), cached $(field statuses "$CACHED"), newuser $(field statuses "$NEWUSER"), mixed $(field statuses "$MIXED"); raw search errors: user $(field errors "$RAW_USER"), both $(field errors "$RAW_BOTH")"
echo "fill: $FILL"
echo "mailbeacon resident memory: ${RSS0} MB at start, ${RSS1} MB after answering all $DOMAINS domains (slapd: ${SLAPD_RSS} MB)"
