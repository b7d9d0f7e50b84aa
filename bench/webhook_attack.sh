#!/usr/bin/env bash
# Memory and liveness of the webhook under a resource attack, on loopback only:
#   - IDLE (2,000) connections, half HTTP/1.1 and half HTTP/2, each after one request, held
#     open (h2 ones answer the server's PINGs, so only the idle timeout could close them);
#   - ATTACKERS (64) clients sending ~3 MiB AdmissionReviews in a loop for DURATION seconds;
#   - meanwhile one healthy kube-apiserver-like client (h2load, HTTP/1.1 keep-alive, the 4 KB
#     pod review at RATE req/s), whose latency is reported.
# Server pinned to core 0 with the default limits; attacker and healthy client on core 1.
# Prints the server's peak RSS (VmHWM), RSS samples, what the attack got back, and the
# server's own counters from the admin listener. Bounded in count and time throughout.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v h2load >/dev/null || { echo "h2load missing: apt-get install -y nghttp2-client" >&2; exit 1; }

PORT=${PORT:-18444}
ADMIN=${ADMIN:-19444}
IDLE=${IDLE:-2000}
ATTACKERS=${ATTACKERS:-64}
DURATION=${DURATION:-20}
RATE=${RATE:-100}
BIN=${BIN:-target/release/whisperer-injector}
SERVER_FLAGS=${SERVER_FLAGS:-}   # e.g. "--max-buffered-body-bytes 8MiB"; default limits otherwise
out=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$out"' EXIT

# Both ends of every connection live on this machine: far above the usual 1024 descriptors.
need=$((2 * (IDLE + ATTACKERS) + 512))
hard=$(ulimit -Hn)
[ "$hard" = unlimited ] || [ "$hard" -ge "$need" ] || { echo "need $need file descriptors, hard limit is $hard" >&2; exit 1; }
ulimit -n "$need"

[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p whisperer-injector
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
review = json.load(open("tests/fixtures/review-pod-optin.json"))
open(f"{out}/pod4k.json", "w").write(json.dumps(review, separators=(",", ":")))
# A pod just under the 3 MiB cap: a large annotation, which the engine reads (so it is
# parsed and held, the worst case for memory per review).
big = json.loads(json.dumps(review))
base = len(json.dumps(big, separators=(",", ":")))
big["request"]["object"]["metadata"].setdefault("annotations", {})["bench.whisperer.dev/pad"] = \
    "x" * (3 * 1024 * 1024 - base - 1024)
body = json.dumps(big, separators=(",", ":"))
assert len(body) <= 3 * 1024 * 1024, len(body)
open(f"{out}/big.json", "w").write(body)
print(f"healthy review {base} bytes; attack review {len(body)} bytes")
PY

# taskset execs the server, so $! is the server itself.
taskset -c 0 "$BIN" serve --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN" \
  --reconciler off --dns off --log warn $SERVER_FLAGS >/dev/null 2>"$out/server.log" &
server=$!
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break
  sleep 0.1
done
rss() { awk -v k="$1:" '$1 == k {printf "%.1f", $2/1024}' "/proc/$server/status"; }
echo "== server pid $server: RSS $(rss VmRSS) MB after start"

# Sample RSS twice a second while the attack runs.
( while kill -0 "$server" 2>/dev/null; do rss VmRSS >>"$out/rss.txt"; echo >>"$out/rss.txt"; sleep 0.5; done ) &
sampler=$!

timeout $((DURATION + 120)) taskset -c 1 python3 - "$PORT" "$IDLE" "$ATTACKERS" "$DURATION" "$out" <<'PY' &
import asyncio, ssl, sys, time, collections
port, idle_n, attackers, duration, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
big = open(f"{out}/big.json", "rb").read()
head = (f"POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
        f"content-length: {len(big)}\r\n\r\n").encode()

def ctx(alpn):
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    c.set_alpn_protocols([alpn])
    return c
H1, H2 = ctx("http/1.1"), ctx("h2")

async def read_response(r):
    status = int((await r.readline()).split()[1])
    length = 0
    while (line := await r.readline()) not in (b"\r\n", b""):
        k, _, v = line.decode().partition(":")
        if k.lower() == "content-length":
            length = int(v)
    await r.readexactly(length)
    return status

alive = collections.Counter()
async def idle_h1():
    r, w = await asyncio.open_connection("127.0.0.1", port, ssl=H1)
    w.write(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
    assert await read_response(r) == 200
    alive["h1"] += 1
    await r.read()          # returns when the server closes
    alive["h1"] -= 1

def frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload

async def idle_h2():
    r, w = await asyncio.open_connection("127.0.0.1", port, ssl=H2)
    block = bytes([0x82, 0x87, 0x04, 8]) + b"/healthz" + bytes([0x01, 9]) + b"localhost"
    w.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) + frame(1, 5, 1, block))
    counted = False
    try:
        while True:
            h = await r.readexactly(9)
            n, kind, flags = int.from_bytes(h[:3], "big"), h[3], h[4]
            payload = await r.readexactly(n)
            if kind == 4 and not flags & 1:
                w.write(frame(4, 1, 0))                      # SETTINGS ACK
            elif kind == 6 and not flags & 1:
                w.write(frame(6, 1, 0, payload))             # PING ACK
            elif kind in (0, 1) and flags & 1 and not counted:
                counted = True                               # response ended
                alive["h2"] += 1
            elif kind == 7:
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    if counted:
        alive["h2"] -= 1

results = collections.Counter()
async def attacker(stop_at):
    r = w = None
    while time.monotonic() < stop_at:
        try:
            if w is None:
                r, w = await asyncio.open_connection("127.0.0.1", port, ssl=H1)
            w.write(head + big)
            status = await read_response(r)
            results[status] += 1
            if status != 200:                    # body not read: the server closes
                w.close(); w = None
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, IndexError, ValueError):
            results["reset"] += 1
            w = None
            await asyncio.sleep(0.01)

async def main():
    idle = []
    for i in range(idle_n):
        idle.append(asyncio.create_task(idle_h1() if i % 2 == 0 else idle_h2()))
        if i % 100 == 99:
            await asyncio.sleep(0.05)
    t0 = time.monotonic()
    while alive["h1"] + alive["h2"] < idle_n and time.monotonic() - t0 < 30:
        await asyncio.sleep(0.1)
    print(f"[attack] idle connections open: h1 {alive['h1']}, h2 {alive['h2']}", flush=True)
    open(f"{out}/idle-ready", "w").write("1")
    stop_at = time.monotonic() + duration
    await asyncio.gather(*(attacker(stop_at) for _ in range(attackers)))
    print(f"[attack] {attackers} clients x {duration:.0f}s of 3 MiB reviews: " +
          ", ".join(f"{k}: {v}" for k, v in sorted(results.items(), key=str)), flush=True)
    print(f"[attack] idle connections still open: h1 {alive['h1']}, h2 {alive['h2']}", flush=True)
    for t in idle:
        t.cancel()

asyncio.run(main())
PY
attack=$!

for _ in $(seq 600); do [ -e "$out/idle-ready" ] && break; sleep 0.1; done
echo "== server RSS with the idle connections: $(rss VmRSS) MB"
sleep 1   # let the attackers' first bodies arrive
n=$((RATE * (DURATION - 3)))
timeout $((DURATION + 30)) taskset -c 1 h2load --h1 -t 1 -c 1 -n "$n" --rps "$RATE" -d "$out/pod4k.json" \
  -H 'content-type: application/json' --log-file="$out/healthy.log" \
  "https://127.0.0.1:$PORT/mutate" >"$out/healthy.txt"
grep -E '^requests:|^status codes:' "$out/healthy.txt" | sed 's/^/[healthy] /'
python3 - "$out/healthy.log" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
d = sorted(int(r[2]) for r in rows)
bad = sum(1 for r in rows if not r[1].startswith("2"))
pick = lambda q: d[min(len(d) - 1, int(q * len(d)))] / 1000
print(f"[healthy] n={len(d)} non-2xx={bad} p50={pick(0.5):.2f}ms p99={pick(0.99):.2f}ms max={d[-1]/1000:.2f}ms")
PY
wait "$attack"

kill -0 "$server" 2>/dev/null && echo "== server alive after the attack" || { echo "== SERVER DIED"; cat "$out/server.log"; exit 1; }
python3 - "$ADMIN" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
for line in text.splitlines():
    if line.startswith(("whisperer_webhook_requests_total", "whisperer_connections")):
        print("[metrics]", line)
PY
kill "$sampler" 2>/dev/null || true
peak=$(rss VmHWM)
max_sampled=$(sort -n "$out/rss.txt" | tail -1)
echo "== server peak RSS (VmHWM): $peak MB; highest sampled VmRSS $max_sampled MB; now $(rss VmRSS) MB"
awk '{printf "[server] cpu %.1fs (user+sys)\n", ($14+$15)/100}' "/proc/$server/stat"
kill -TERM "$server"
wait "$server" || true
server=
