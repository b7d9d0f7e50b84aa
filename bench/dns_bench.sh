#!/usr/bin/env bash
# PTR queries per second answered from the proxy's table, on one core.
#
#   bench/dns_bench.sh                 # defaults below
#   PODS=50000 SECONDS_LIMIT=20 bench/dns_bench.sh
#   SKIP_BUILD=1 bench/dns_bench.sh    # reuse target/release/examples/dns_serve
#
# The server (examples/dns_serve.rs: N synthetic pods, no API server, current-thread runtime)
# is pinned to core 0 with taskset, dnsperf to core 1. Loopback only; bounded in time
# (-l) and in passes over the query file (-n); the server is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

PODS=${PODS:-10000}
SECONDS_LIMIT=${SECONDS_LIMIT:-15}
MAX_PASSES=${MAX_PASSES:-200}          # passes over the PODS-query file
OUTSTANDING=${OUTSTANDING:-200}        # dnsperf -q
CLIENTS=${CLIENTS:-4}                  # dnsperf -c (source ports)
PORT=${PORT:-15353}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
WORK=$(mktemp -d)
SERVER_PID=

cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

if ! command -v dnsperf >/dev/null; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        apt-get install -y -qq dnsperf >/dev/null
    else
        echo "dnsperf is missing: apt-get install dnsperf" >&2
        exit 1
    fi
fi

BIN=target/release/examples/dns_serve
if [[ -z "${SKIP_BUILD:-}" || ! -x "$BIN" ]]; then
    cargo build --release --example dns_serve
fi

# One PTR query per synthetic pod (same IP scheme as examples/dns_serve.rs).
awk -v n="$PODS" 'BEGIN {
    for (i = 0; i < n; i++) {
        k = i + 1
        printf "%d.%d.%d.10.in-addr.arpa PTR\n", k % 256, int(k / 256) % 256, int(k / 65536) % 256
    }
}' >"$WORK/queries.txt"

taskset -c "$SERVER_CPU" "$BIN" "127.0.0.1:$PORT" "$PODS" 2>"$WORK/server.log" &
SERVER_PID=$!
for _ in $(seq 1 100); do
    grep -q listening "$WORK/server.log" && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
    sleep 0.1
done
grep -q listening "$WORK/server.log" || { echo "server did not start" >&2; exit 1; }

echo "== server: taskset -c $SERVER_CPU $BIN 127.0.0.1:$PORT $PODS"
echo "== load:   taskset -c $LOAD_CPU dnsperf -s 127.0.0.1 -p $PORT -d queries.txt -l $SECONDS_LIMIT -n $MAX_PASSES -c $CLIENTS -q $OUTSTANDING"
taskset -c "$LOAD_CPU" dnsperf -s 127.0.0.1 -p "$PORT" -d "$WORK/queries.txt" \
    -l "$SECONDS_LIMIT" -n "$MAX_PASSES" -c "$CLIENTS" -q "$OUTSTANDING" | tee "$WORK/dnsperf.txt"

kill -TERM "$SERVER_PID"
wait "$SERVER_PID" || true
SERVER_PID=
echo "== server metrics"
grep '^whisperer_dns_' "$WORK/server.log" || true

qps=$(awk '/Queries per second/ {print $4}' "$WORK/dnsperf.txt")
noerror=$(awk '/Response codes:/ {print $4}' "$WORK/dnsperf.txt")
lost=$(awk '/Queries lost:/ {print $3}' "$WORK/dnsperf.txt")
echo "RESULT: ${qps:-?} PTR qps (server on 1 core, ${PODS} pods; NOERROR ${noerror:-?}, lost ${lost:-?})"
