#!/usr/bin/env bash
# Webhook throughput, latency and memory on loopback, as kube-apiserver calls it:
# TLS + HTTP/1.1 keep-alive, POST /mutate with a realistic ~4 KB pod review.
# Server pinned to core 0, load generator (h2load) to core 1. Every run is bounded in
# request count and in time (timeout). Results go to stdout; docs/benchmarks.md quotes them.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v h2load >/dev/null || { echo "h2load missing: apt-get install -y nghttp2-client" >&2; exit 1; }

PORT=${PORT:-18443}
N=${N:-200000}
out=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$out"' EXIT

[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p whisperer-injector
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
for name, src in [("pod4k", "review-pod-optin.json"), ("env1500", "review-pod-1500-env.json")]:
    review = json.load(open(f"tests/fixtures/{src}"))
    body = json.dumps(review, separators=(",", ":"))
    open(f"{out}/{name}.json", "w").write(body)
    print(f"{name}: body {len(body)} bytes, pod {len(json.dumps(review['request']['object'], separators=(',', ':')))} bytes")
PY

# taskset execs the server, so $! is the server itself: its /proc entry gives peak RSS.
taskset -c 0 ./target/release/whisperer-injector serve --listen "127.0.0.1:$PORT" --admin-listen 127.0.0.1:0 \
  --reconciler off --dns off --log warn >/dev/null 2>"$out/server.log" &
server=$!
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break
  sleep 0.1
done

load() { # name conns requests body [extra h2load flags]
  local name=$1 c=$2 n=$3 body=$4; shift 4
  timeout 300 taskset -c 1 h2load --h1 -t 1 -c "$c" -n "$n" -d "$out/$body.json" \
    -H 'content-type: application/json' "$@" "https://127.0.0.1:$PORT/mutate" >"$out/$name.txt"
  grep -E '^finished in|^requests:|^status codes:|^time for request:' "$out/$name.txt" | sed "s/^/[$name] /"
}

rps() { grep -oE '[0-9.]+ req/s' "$out/$1.txt" | cut -d' ' -f1; }

percentiles() { # h2load --log-file: start(us) status duration(us)
  python3 - "$1" <<'PY'
import sys
d = sorted(int(l.split()[2]) for l in open(sys.argv[1]) if l.strip())
pick = lambda q: d[min(len(d) - 1, int(q * len(d)))] / 1000
print(f"n={len(d)} p50={pick(0.50):.3f}ms p99={pick(0.99):.3f}ms p999={pick(0.999):.3f}ms max={d[-1]/1000:.3f}ms")
PY
}

load warmup 8 20000 pod4k >/dev/null
echo "== baseline: GET /healthz, 64 connections, $N requests (the TLS + HTTP/1.1 floor)"
timeout 300 taskset -c 1 h2load --h1 -t 1 -c 64 -n "$N" "https://127.0.0.1:$PORT/healthz" >"$out/base64.txt"
grep -E '^finished in' "$out/base64.txt" | sed 's/^/[base64] /'
echo "== throughput: 64 connections, $N requests, 4 KB pod"
load rps64 64 "$N" pod4k
python3 -c "import sys; print(f'[rps64] /mutate = {float(sys.argv[1])/float(sys.argv[2]):.2f} x the /healthz baseline')" "$(rps rps64)" "$(rps base64)"
echo "== latency: 4 connections, 50000 requests, 4 KB pod"
load lat4 4 50000 pod4k --log-file="$out/lat4.log"
echo "[lat4] $(percentiles "$out/lat4.log")"
echo "== latency: 1 connection, 2000 requests, pod with 1,500 env vars"
load env1500 1 2000 env1500 --log-file="$out/env1500.log"
echo "[env1500] $(percentiles "$out/env1500.log")"

echo "== server"
grep -E '^(VmHWM|VmRSS)' "/proc/$server/status" | sed 's/^/[server] /'
awk '{printf "[server] cpu %.1fs (user+sys)\n", ($14+$15)/100}' "/proc/$server/stat"
kill -TERM "$server"
wait "$server" || true
