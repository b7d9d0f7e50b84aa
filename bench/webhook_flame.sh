#!/usr/bin/env bash
# Flame graph of the webhook's server core under the load of bench/webhook_peers.sh: the
# server pinned to core 0 with the shipped profile, h2load --h1 with 64 connections POSTing
# tests/fixtures/review-pod-3k7.json from core 1, perf (Debian linux-perf) sampling the
# server's cpu-clock with DWARF call graphs, folded and drawn by inferno
# (`cargo install inferno`). Writes docs/webhook-flamegraph.svg (OUT=... to change).
#
#   SKIP_BUILD=1 BIN=target/release/whisperer-injector SECONDS_LIMIT=6 bench/webhook_flame.sh
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in perf h2load openssl python3 inferno-collapse-perf inferno-flamegraph; do
  command -v "$tool" >/dev/null || {
    echo "$tool missing (apt-get install -y linux-perf nghttp2-client; cargo install inferno)" >&2
    exit 1
  }
done
BIN=${BIN:-target/release/whisperer-injector}
OUT=${OUT:-docs/webhook-flamegraph.svg}
SECONDS_LIMIT=${SECONDS_LIMIT:-6}
PORT=${PORT:-18449}
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p whisperer-injector --bin whisperer-injector
out=$(mktemp -d)
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$out"' EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$out/tls.key" -out "$out/tls.crt" 2>/dev/null
python3 - "$out" <<'PY'
import json, sys, yaml
out = sys.argv[1]
cm = yaml.safe_load(open("manifests/configmap.yaml"))
open(f"{out}/config.yaml", "w").write(cm["data"]["config.yaml"])
review = json.load(open("tests/fixtures/review-pod-3k7.json"))
open(f"{out}/pod.json", "w").write(json.dumps(review, separators=(",", ":")))
PY

taskset -c 0 "$BIN" serve --listen "127.0.0.1:$PORT" --admin-listen 127.0.0.1:0 --reconciler off \
  --dns off --log warn --config "$out/config.yaml" --tls-cert "$out/tls.crt" --tls-key "$out/tls.key" \
  >"$out/server.log" 2>&1 &
server=$!
for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.05; done
h2l() {
  timeout 120 taskset -c 1 h2load --h1 -t 1 -c 64 -d "$out/pod.json" -H 'content-type: application/json' \
    "$@" "https://127.0.0.1:$PORT/mutate"
}
h2l -n 20000 >/dev/null
# perf on core 1 too, so the server core only runs the server.
taskset -c 1 perf record -q -e cpu-clock -F 1999 --call-graph dwarf,16384 -p "$server" \
  -o "$out/perf.data" -- sleep "$SECONDS_LIMIT" &
perf_pid=$!
h2l -D "$SECONDS_LIMIT" | grep -E '^finished in|^status codes' || true
wait "$perf_pid" || true
perf script -i "$out/perf.data" 2>/dev/null | inferno-collapse-perf >"$out/folded.txt"
inferno-flamegraph --title "whisperer-injector /mutate, 3.7 KB review, 64 connections (server core)" \
  --width 1600 <"$out/folded.txt" >"$OUT"
echo "wrote $OUT ($(wc -l <"$out/folded.txt") stacks)"
# The top of the profile, as shares of the server core's samples.
python3 - "$out/folded.txt" <<'PY'
import collections, sys
total = 0
self_time = collections.Counter()
incl = collections.Counter()
for line in open(sys.argv[1]):
    stack, n = line.rsplit(" ", 1)
    n = int(n)
    total += n
    frames = stack.split(";")
    self_time[frames[-1]] += n
    for f in set(frames):
        incl[f] += n
print(f"{total} samples")
print("self (top 15):")
for f, n in self_time.most_common(15):
    print(f"  {100 * n / total:5.1f}%  {f[:110]}")
# Inclusive share of the widest frame whose name contains the key.
print("inclusive, selected:")
for key in ["webhook::handler::mutate", "answer_into", "parse_admitted_pod", "decide_admission_planned",
            "write_patch", "write_review", "nesting_exceeds", "from_slice", "rustls", "ring",
            "writev", "sendmsg", "recvfrom", "read", "epoll_wait"]:
    best = max((v for f, v in incl.items() if key in f), default=0)
    print(f"  {100 * best / total:5.1f}%  {key}")
PY
