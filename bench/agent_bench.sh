#!/usr/bin/env bash
# The Whisperer on one core, side by side with `tcpdump -w` on the same traffic.
#
#   sudo bench/agent_bench.sh                     # defaults below
#   DURATION=20 CONNS=64 sudo bench/agent_bench.sh
#   SKIP_BUILD=1 sudo bench/agent_bench.sh        # reuse target/release/whisperer
#   BODY=16384 NO_OFFLOAD=1 sudo bench/agent_bench.sh   # MTU-sized packets: the packets/s case
#
# Two network namespaces made here (veth pair, 10.214.0.0/24, IPv6 off): nginx (answering a
# fixed body of $BODY bytes) in "srv", wrk (HTTP/1.1 keep-alive) in "cli". The capture tool runs in
# "srv" on `any` pinned to core $AGENT_CPU; nginx and wrk share core $LOAD_CPU, so the load
# generator, not the capture, sets the traffic. Each run is bounded by $DURATION seconds.
# Files go to a tmpfs so the disk is not what is measured.
#
# Reported per tool: packets/s and HTTP exchanges/s seen, kernel drops, peak RSS
# (/usr/bin/time -v), CPU seconds (user+sys) and CPU per 1k exchanges; for the agent also
# the exchanges it reported and its own drop counters. "capacity" = rate / CPU share, what
# one full core would keep up with if cost stays linear.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
THREADS=${THREADS:-1}
BODY=${BODY:-2}
# The machine is shared: the capture tool and the load run at a higher priority than builds.
NICE=${NICE:--10}
BUFFER_MIB=${BUFFER_MIB:-4}            # kernel ring of both tools (agent --buffer-size, tcpdump -B)
NO_OFFLOAD=${NO_OFFLOAD:-}
AGENT_CPU=${AGENT_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PREFIX=10.214.0
WORK=$(mktemp -d /dev/shm/whisperer-bench.XXXXXX)
NS_SRV=whbench-srv-$$
NS_CLI=whbench-cli-$$
TOOL_PID=

[ "$(id -u)" -eq 0 ] || { echo "needs root (network namespaces, packet capture)" >&2; exit 1; }
for t in nginx wrk tcpdump /usr/bin/time taskset ip curl; do
    command -v "$t" >/dev/null || { echo "missing $t (apt-get install nginx-light wrk tcpdump time util-linux iproute2 curl)" >&2; exit 1; }
done

cleanup() {
    [[ -n "$TOOL_PID" ]] && kill -TERM "$TOOL_PID" 2>/dev/null || true
    for ns in "$NS_SRV" "$NS_CLI"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

if [[ -z "${SKIP_BUILD:-}" ]]; then
    cargo build --release -p whisperer
fi
AGENT=${AGENT:-$PWD/target/release/whisperer}
[ -x "$AGENT" ] || { echo "no $AGENT" >&2; exit 1; }

ip netns add "$NS_SRV"
ip netns add "$NS_CLI"
for ns in "$NS_SRV" "$NS_CLI"; do
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip -n "$ns" link set lo up
done
ip link add whb-s$$ type veth peer name whb-c$$
ip link set whb-s$$ netns "$NS_SRV" name eth0
ip link set whb-c$$ netns "$NS_CLI" name eth0
ip -n "$NS_SRV" addr add $PREFIX.1/24 dev eth0
ip -n "$NS_CLI" addr add $PREFIX.2/24 dev eth0
ip -n "$NS_SRV" link set eth0 up
ip -n "$NS_CLI" link set eth0 up
if [[ -n "$NO_OFFLOAD" ]]; then
    # Without segmentation offloads the veth carries MTU-sized packets, as a NIC would.
    for ns in "$NS_SRV" "$NS_CLI"; do
        ip netns exec "$ns" ethtool -K eth0 tso off gso off gro off >/dev/null
    done
fi
head -c "$BODY" /dev/zero | tr '\0' 'x' > "$WORK/body"
chmod 755 "$WORK" && chmod 644 "$WORK/body"   # nginx workers run as nobody

mkdir -p "$WORK/nginx"
cat > "$WORK/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx;
    proxy_temp_path $WORK/nginx;
    fastcgi_temp_path $WORK/nginx;
    uwsgi_temp_path $WORK/nginx;
    scgi_temp_path $WORK/nginx;
    keepalive_requests 1000000;
    server {
        listen $PREFIX.1:8080;
        location / { root $WORK; try_files /body =404; }
    }
}
EOF
ip netns exec "$NS_SRV" nice -n "$NICE" taskset -c "$LOAD_CPU" nginx -c "$WORK/nginx.conf" &
for _ in $(seq 100); do
    ip netns exec "$NS_CLI" curl -fs -o /dev/null "http://$PREFIX.1:8080/" && break
    sleep 0.1
done
got=$(ip netns exec "$NS_CLI" curl -fs "http://$PREFIX.1:8080/" | wc -c)
[ "$got" -eq "$BODY" ] || { echo "nginx answers $got bytes, not $BODY" >&2; exit 1; }

veth_packets() {
    ip -n "$NS_SRV" -s -j link show eth0 | python3 -c 'import json,sys; s=json.load(sys.stdin)[0]["stats64"]; print(s["rx"]["packets"]+s["tx"]["packets"])'
}

metric() { # name -> value from the agent's /metrics (0 if absent)
    ip netns exec "$NS_SRV" curl -fs "http://127.0.0.1:9099/metrics" | awk -v m="$1" '$1==m {print $2; f=1} END {if (!f) print 0}'
}

# run TOOL -> prints one result line
run() {
    local tool=$1 out="$WORK/$1" timev="$WORK/$1.time" log="$WORK/$1.log"
    mkdir -p "$out"
    case $tool in
    whisperer)
        ip netns exec "$NS_SRV" nice -n "$NICE" taskset -c "$AGENT_CPU" /usr/bin/time -v -o "$timev" \
            "$AGENT" --interface any --out-dir "$out" --rotate-size 64MiB --keep 4 --max-total 256MiB \
            --buffer-size "${BUFFER_MIB}MiB" \
            --metrics-listen 127.0.0.1:9099 --no-names >"$out/lines.jsonl" 2>"$log" &
        TOOL_PID=$!
        for _ in $(seq 100); do grep -q capturing "$log" 2>/dev/null && break; sleep 0.1; done
        ;;
    tcpdump)
        ip netns exec "$NS_SRV" nice -n "$NICE" taskset -c "$AGENT_CPU" /usr/bin/time -v -o "$timev" \
            tcpdump -i any -n -s 262144 -B $((BUFFER_MIB * 1024)) -w "$out/ref.pcap" 2>"$log" &
        TOOL_PID=$!
        for _ in $(seq 100); do grep -q "listening on" "$log" 2>/dev/null && break; sleep 0.1; done
        ;;
    esac
    local p0 p1 wrk_out
    p0=$(veth_packets)
    wrk_out=$(ip netns exec "$NS_CLI" nice -n "$NICE" taskset -c "$LOAD_CPU" wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" "http://$PREFIX.1:8080/")
    p1=$(veth_packets)
    local requests exchanges=0 drops=0 dropped_records=0
    requests=$(echo "$wrk_out" | awk '/requests in/ {print $1}')
    if [[ $tool == whisperer ]]; then
        # Let the agent finish the last batch before reading its counters.
        sleep 1
        exchanges=$(metric whisperer_http_exchanges_total)
        drops=$(metric whisperer_kernel_dropped_packets)
        dropped_records=$(metric 'whisperer_dropped_total{what="record_queue"}')
    fi
    # TOOL_PID is /usr/bin/time (exec'd by ip netns exec and taskset): stop its child, so
    # time writes its report.
    pkill -TERM -P "$TOOL_PID" || true
    wait "$TOOL_PID" || true
    TOOL_PID=
    if [[ $tool == tcpdump ]]; then
        drops=$(awk '/dropped by kernel/ {print $1}' "$log")
        exchanges=$requests
    fi
    local rss cpu wall
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$timev")
    cpu=$(awk -F': ' '/User time/ {u=$2} /System time/ {s=$2} END {printf "%.2f", u+s}' "$timev")
    wall=$DURATION
    python3 - "$tool" "$((p1 - p0))" "$requests" "$exchanges" "$drops" "$dropped_records" "$rss" "$cpu" "$wall" <<'EOF'
import sys
tool, packets, requests, exchanges, drops, rec_drops, rss, cpu, wall = sys.argv[1:]
packets, requests, exchanges = int(packets), int(requests), int(float(exchanges))
cpu, wall, rss = float(cpu), float(wall), int(rss)
share = cpu / wall if wall else 0
pps, xps = packets / wall, exchanges / wall
per_k = 1000 * cpu / exchanges * 1000 if exchanges else 0
print(f"{tool:9} packets/s {pps:9.0f}  exchanges/s {xps:8.0f} (wrk {requests/wall:8.0f})  "
      f"kernel drops {drops:>3}  record drops {rec_drops:>3}  peak RSS {rss/1024:5.1f} MiB  "
      f"CPU {cpu:5.2f} s ({100*share:4.1f}% of a core)  CPU/1k exchanges {per_k:6.2f} ms  "
      f"capacity ~{pps/share if share else 0:9.0f} packets/s ~{xps/share if share else 0:8.0f} exchanges/s")
EOF
}

echo "duration ${DURATION}s, body $BODY bytes, offloads $([[ -n "$NO_OFFLOAD" ]] && echo off || echo on), wrk -t$THREADS -c$CONNS, ring ${BUFFER_MIB} MiB, capture on core $AGENT_CPU, nginx+wrk on core $LOAD_CPU"
run whisperer | tee "$WORK/whisperer.result"
run tcpdump | tee "$WORK/tcpdump.result"
python3 - "$WORK/whisperer.result" "$WORK/tcpdump.result" <<'EOF'
import re, sys
def cpu_per_k(path):
    return float(re.search(r"CPU/1k exchanges\s+([\d.]+)", open(path).read()).group(1))
a, t = cpu_per_k(sys.argv[1]), cpu_per_k(sys.argv[2])
print(f"CPU per exchange, whisperer / tcpdump -w: {a / t if t else float('nan'):.2f}x")
EOF
