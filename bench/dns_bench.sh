#!/usr/bin/env bash
# PTR queries per second answered from the proxy's table, on one core.
#
#   bench/dns_bench.sh                          # the current tree, defaults below
#   PODS=50000 SECONDS_LIMIT=20 bench/dns_bench.sh
#   SKIP_BUILD=1 bench/dns_bench.sh             # reuse target/release/examples/dns_serve
#   BASELINE_REV=<git rev> bench/dns_bench.sh   # before/after in one run, as a ratio
#   BASELINE_BIN=/path/dns_serve bench/dns_bench.sh
#
# The server (examples/dns_serve.rs: N synthetic pods, no API server, current-thread runtime)
# is pinned to core 0 with taskset, dnsperf to core 1. Loopback only; bounded in time
# (-l) and in passes over the query file (-n); the server is stopped after each round.
#
# With a baseline, the two servers take turns (ROUNDS rounds each, alternating, so load from
# elsewhere on the machine hits both alike) and the medians are compared. BASELINE_REV is
# built from `git archive` of that revision into a temporary directory, sharing this tree's
# target directory so dependencies are not rebuilt (the release profile uses fat LTO: a few
# minutes per build).
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
ROUNDS=${ROUNDS:-3}
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
if [[ -n "${BASELINE_REV:-}" && -z "${BASELINE_BIN:-}" ]]; then
    src="$WORK/baseline-src"
    mkdir -p "$src"
    git archive "$BASELINE_REV" | tar -x -C "$src"
    # Cargo takes the other tree's build of the crate for fresh (its sources did not change
    # since), so drop it before each of the two builds.
    cargo clean --release -p whisperer-injector
    CARGO_TARGET_DIR="$(pwd)/target" cargo build --release --example dns_serve \
        --manifest-path "$src/Cargo.toml"
    BASELINE_BIN="$WORK/dns_serve.baseline"
    cp "$BIN" "$BASELINE_BIN"
    cargo clean --release -p whisperer-injector
    SKIP_BUILD=
fi
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

# run_round LABEL BINARY: one server start, one dnsperf run; appends "LABEL QPS" to results.
run_round() {
    local label=$1 bin=$2 log="$WORK/server-$1.log"
    taskset -c "$SERVER_CPU" "$bin" "127.0.0.1:$PORT" "$PODS" 2>"$log" &
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        grep -q listening "$log" && break
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$log" >&2; exit 1; }
        sleep 0.1
    done
    grep -q listening "$log" || { echo "server did not start" >&2; exit 1; }
    echo "== $label server: taskset -c $SERVER_CPU $bin 127.0.0.1:$PORT $PODS"
    echo "== load: taskset -c $LOAD_CPU dnsperf -s 127.0.0.1 -p $PORT -d queries.txt -l $SECONDS_LIMIT -n $MAX_PASSES -c $CLIENTS -q $OUTSTANDING"
    taskset -c "$LOAD_CPU" dnsperf -s 127.0.0.1 -p "$PORT" -d "$WORK/queries.txt" \
        -l "$SECONDS_LIMIT" -n "$MAX_PASSES" -c "$CLIENTS" -q "$OUTSTANDING" >"$WORK/dnsperf.txt"
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" || true
    SERVER_PID=
    local qps noerror lost
    qps=$(awk '/Queries per second/ {print $4}' "$WORK/dnsperf.txt")
    noerror=$(awk '/Response codes:/ {print $4}' "$WORK/dnsperf.txt")
    lost=$(awk '/Queries lost:/ {print $3}' "$WORK/dnsperf.txt")
    echo "   $label: ${qps:-?} qps (NOERROR ${noerror:-?}, lost ${lost:-?})"
    grep -E '^whisperer_dns_(queries|refused)_total' "$log" | sed 's/^/   /' || true
    echo "$label ${qps:-0}" >>"$WORK/results.txt"
}

median() { # LABEL
    awk -v l="$1" '$1 == l {print $2}' "$WORK/results.txt" | sort -n |
        awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

echo "== load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ -n "${BASELINE_BIN:-}" ]]; then
    for round in $(seq 1 "$ROUNDS"); do
        echo "== round $round of $ROUNDS"
        run_round baseline "$BASELINE_BIN"
        run_round current "$BIN"
    done
    base=$(median baseline)
    cur=$(median current)
    ratio=$(awk -v c="$cur" -v b="$base" 'BEGIN { printf "%.3f", (b > 0) ? c / b : 0 }')
    echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "RESULT: current ${cur} PTR qps vs baseline ${base} (medians of ${ROUNDS}, server on 1 core, ${PODS} pods): ratio ${ratio}"
else
    run_round current "$BIN"
    echo "RESULT: $(median current) PTR qps (server on 1 core, ${PODS} pods)"
fi
