#!/usr/bin/env bash
# The webhook against its peers, in ONE run (issue 12): every server pinned to core 0, h2load
# (Debian nghttp2-client) pinned to core 1, TLS + HTTP/1.1 keep-alive as kube-apiserver calls
# webhooks, POST /mutate with tests/fixtures/review-pod-3k7.json (3.7 KB review that gets the
# full injection of the shipped profile, manifests/configmap.yaml):
#   nginx      Debian nginx answering our answer's bytes as a fixed body (the transport ceiling)
#   ours       this tree
#   prev       this project at PREV_REV (git worktree), built with the same profile
#   kube-rs    bench/peers/kube-rs-admission (kube's admission_controller example: one label)
#   go         bench/peers/go-webhook (net/http + k8s.io/api, the seed's shape, same injection)
# For each: req/s at 64 connections, p99 at 4 connections, non-2xx, peak RSS (/usr/bin/time -v).
# Ours and prev also answer the 1,500-env pod and a generated 1 MB pod (1 connection).
#
#   bench/webhook_peers.sh                   # iteration profile: no LTO, 16 codegen units
#   SHIPPED_PROFILE=1 bench/webhook_peers.sh # the shipped release profile (fat LTO, 1 CGU)
#   ROUNDS=3 N=100000 bench/webhook_peers.sh  # servers take turns; medians in the table
#   PREV_REV=4d67960 N=100000 SERVERS="nginx ours kube-rs" SKIP_BUILD=1 bench/webhook_peers.sh
#
# Every load is bounded in count and time. Loopback only. Builds go to target/peers/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

for tool in h2load nginx go openssl python3 /usr/bin/time taskset; do
  command -v "$tool" >/dev/null || {
    echo "$tool missing (apt-get install -y nghttp2-client nginx openssl time; Go from go.dev)" >&2
    exit 1
  }
done

N=${N:-200000}
N_LAT=${N_LAT:-50000}
# The servers take turns ROUNDS times (a fresh process each round); the table gives each
# server's median over its rounds, so a busy moment on the machine hits all of them alike.
ROUNDS=${ROUNDS:-1}
PREV_REV=${PREV_REV:-595366f}
SERVERS=${SERVERS:-nginx ours prev kube-rs go}
peers=$root/target/peers
mkdir -p "$peers"
out=$(mktemp -d)
server=""
stop_server() {
  [ -n "$server" ] || return 0
  local child
  child=$(pgrep -P "$server" || true)
  [ -n "$child" ] && kill -TERM "$child" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  server=""
}
trap 'stop_server; rm -rf "$out"' EXIT

if [ -n "${SHIPPED_PROFILE:-}" ]; then
  profile="release (fat LTO, 1 codegen unit)"
else
  export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
  profile="release without LTO, 16 codegen units"
fi
# The shipped profile builds into its own target dir: the iteration build stays usable.
ours_target=$root/target
[ -n "${SHIPPED_PROFILE:-}" ] && ours_target=$root/target/shipped
ours_bin=$ours_target/release/whisperer-injector
prev_bin=$peers/prev-target/release/whisperer-injector
kube_bin=$peers/kube-rs/release/kube-rs-admission
go_bin=$peers/go-webhook

if [ -z "${SKIP_BUILD:-}" ]; then
  echo "== building ($profile)"
  cargo build --release -q -p whisperer-injector --bin whisperer-injector --target-dir "$ours_target"
  if [[ " $SERVERS " == *" prev "* ]]; then
    [ -d "$peers/prev-src" ] || git worktree add -q --detach "$peers/prev-src" "$PREV_REV"
    git -C "$peers/prev-src" checkout -q --detach "$PREV_REV"
    cargo build --release -q --manifest-path "$peers/prev-src/Cargo.toml" \
      -p whisperer-injector --bin whisperer-injector --target-dir "$peers/prev-target"
  fi
  if [[ " $SERVERS " == *" kube-rs "* ]]; then
    cargo build --release -q --manifest-path bench/peers/kube-rs-admission/Cargo.toml \
      --target-dir "$peers/kube-rs"
  fi
  if [[ " $SERVERS " == *" go "* ]]; then
    (cd bench/peers/go-webhook && go build -trimpath -o "$go_bin" .)
  fi
fi
echo "machine: $(nproc) cores, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "profile: $profile; prev = $PREV_REV ($(git log -1 --format=%h "$PREV_REV" 2>/dev/null || echo '?')); tree at $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo '+changes'), binary of $(date -ur "$ours_bin" +%FT%TZ 2>/dev/null || echo '?')"

# Inputs: one key pair for every server, the shipped config, the compacted reviews.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$out/tls.key" -out "$out/tls.crt" 2>/dev/null
python3 - "$out" <<'PY'
import json, sys, yaml
out = sys.argv[1]
cm = yaml.safe_load(open("manifests/configmap.yaml"))
open(f"{out}/config.yaml", "w").write(cm["data"]["config.yaml"])
compact = lambda v: json.dumps(v, separators=(",", ":"))
for name, src in [("pod3k7", "review-pod-3k7.json"), ("env1500", "review-pod-1500-env.json")]:
    review = json.load(open(f"tests/fixtures/{src}"))
    open(f"{out}/{name}.json", "w").write(compact(review))
    print(f"{name}: body {len(compact(review))} bytes ({src})")
# 1 MB pod: the 3.7 KB one with 16,500 more env vars on its app container.
review = json.load(open("tests/fixtures/review-pod-3k7.json"))
env = review["request"]["object"]["spec"]["containers"][0].setdefault("env", [])
env += [{"name": f"GENERATED_{i}", "value": f"value-{i}-lorem-ipsum"} for i in range(16500)]
open(f"{out}/pod1m.json", "w").write(compact(review))
print(f"pod1m: body {len(compact(review))} bytes (generated)")
PY

port=18450
start() { # name command...: runs it on core 0 under /usr/bin/time -v, waits for $port
  local name=$1; shift
  /usr/bin/time -v -o "$out/$name.time" taskset -c 0 "$@" >"$out/$name.log" 2>&1 &
  server=$!
  for _ in $(seq 600); do
    (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && return 0
    sleep 0.05
  done
  echo "$name did not listen on $port:" >&2; cat "$out/$name.log" >&2; exit 1
}
cmd_for() { # name -> the server's command line on $port
  case $1 in
    ours | prev)
      local bin=$ours_bin
      [ "$1" = prev ] && bin=$prev_bin
      echo "$bin serve --listen 127.0.0.1:$port --admin-listen 127.0.0.1:0 --reconciler off --dns off --pod-security-check off" \
        "--log warn --config $out/config.yaml --tls-cert $out/tls.crt --tls-key $out/tls.key" ;;
    kube-rs) echo "env ADMISSION_PRIVATE_IP=127.0.0.1 ADMISSION_PORT=$port ADMISSION_TLS_CERT=$out/tls.crt ADMISSION_TLS_KEY=$out/tls.key $kube_bin" ;;
    go) echo "$go_bin -listen 127.0.0.1:$port -cert $out/tls.crt -key $out/tls.key -config $out/config.yaml" ;;
    nginx) echo "nginx -p $out -c $out/nginx.conf" ;;
  esac
}
load() { # name conns requests body [h2load flags]
  local name=$1 c=$2 n=$3 body=$4; shift 4
  timeout 300 taskset -c 1 h2load --h1 -t 1 -c "$c" -n "$n" -d "$out/$body.json" \
    -H 'content-type: application/json' "$@" "https://127.0.0.1:$port/mutate" >"$out/$name.txt" 2>&1 || true
}
rps() { grep -oE '[0-9.]+ req/s' "$out/$1.txt" | head -1 | cut -d' ' -f1; }
# Non-2xx and failed requests together: h2load's "status codes: A 2xx, B 3xx, C 4xx, D 5xx" and "N failed".
bad() { python3 - "$out/$1.txt" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", t)
f = re.search(r"requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, (\d+) failed", t)
print((int(m[2]) + int(m[3]) + int(m[4]) if m else 10**9) + (int(f[1]) if f else 0))
PY
}
pct() { python3 - "$1" "$2" <<'PY'
import sys
d = sorted(int(l.split()[2]) for l in open(sys.argv[1]) if l.strip())
q = float(sys.argv[2])
print(f"{d[min(len(d) - 1, int(q * len(d)))] / 1000:.3f}" if d else "nan")
PY
}

declare -A RPS P99 P50 BAD RSS EXTRA
median() { python3 -c 'import statistics, sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
run_server() { # name round
  local name=$1 round=$2
  port=$((port + 1))
  # shellcheck disable=SC2046
  start "$name" $(cmd_for "$name")
  load "$name-warm" 8 20000 pod3k7
  load "$name-rps" 64 "$N" pod3k7
  load "$name-lat" 4 "$N_LAT" pod3k7 --log-file="$out/$name-lat.log"
  RPS[$name]="${RPS[$name]:-} $(rps "$name-rps")"
  P50[$name]="${P50[$name]:-} $(pct "$out/$name-lat.log" 0.50)"
  P99[$name]="${P99[$name]:-} $(pct "$out/$name-lat.log" 0.99)"
  BAD[$name]=$(( ${BAD[$name]:-0} + $(bad "$name-rps") + $(bad "$name-lat") ))
  if { [ "$name" = ours ] || [ "$name" = prev ]; } && [ "$round" = 1 ]; then
    load "$name-env" 1 2000 env1500 --log-file="$out/$name-env.log"
    load "$name-1m" 1 200 pod1m --log-file="$out/$name-1m.log"
    BAD[$name]=$(( BAD[$name] + $(bad "$name-env") + $(bad "$name-1m") ))
    EXTRA[$name]="1,500-env pod p50 $(pct "$out/$name-env.log" 0.5) / p99 $(pct "$out/$name-env.log" 0.99) ms; 1 MB pod p50 $(pct "$out/$name-1m.log" 0.5) / p99 $(pct "$out/$name-1m.log" 0.99) ms"
  fi
  if [ "$name" = ours ]; then
    curl -sS --cacert "$out/tls.crt" -H 'content-type: application/json' \
      --data-binary @"$out/pod3k7.json" "https://127.0.0.1:$port/mutate" >"$out/answer.json"
    echo "[ours] answer to the 3.7 KB review: $(wc -c <"$out/answer.json") bytes (nginx's fixed body)"
  fi
  stop_server
  local rss
  rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.1f", $2/1024}' "$out/$name.time")
  RSS[$name]=$(python3 -c 'import sys; print(max(float(x) for x in sys.argv[1:]))' "$rss" ${RSS[$name]:-})
  echo "[$name round $round] $(rps "$name-rps") req/s @64, p50 $(pct "$out/$name-lat.log" 0.50) ms / p99 $(pct "$out/$name-lat.log" 0.99) ms @4, non-2xx ${BAD[$name]}, peak RSS $rss MiB ${EXTRA[$name]:-}"
}

# Ours first: its answer to the review is also nginx's fixed body (same bytes on the wire).
order=""
for s in ours $SERVERS; do [[ " $order " == *" $s "* ]] || order="$order $s"; done
for round in $(seq "$ROUNDS"); do
for name in $order; do
  [[ " $SERVERS " == *" $name "* ]] || [ "$name" = ours ] || continue
  if [ "$name" = nginx ]; then
    [ -s "$out/answer.json" ] || { echo "nginx needs ours to run first" >&2; exit 1; }
    body=$(cat "$out/answer.json")
    case $body in *"'"* | *'$'* | *'\'*) echo "answer has characters nginx's return would mangle" >&2; exit 1 ;; esac
    cat >"$out/nginx.conf" <<EOF
daemon off; master_process off; worker_processes 1; error_log $out/nginx-error.log warn; pid $out/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off; keepalive_requests 1000000; keepalive_timeout 120s;
  client_body_temp_path $out/body; proxy_temp_path $out/proxy; fastcgi_temp_path $out/fcgi;
  uwsgi_temp_path $out/uwsgi; scgi_temp_path $out/scgi; client_body_buffer_size 64k;
  server {
    listen 127.0.0.1:$((port + 1)) ssl; ssl_certificate $out/tls.crt; ssl_certificate_key $out/tls.key;
    ssl_protocols TLSv1.3;
    location /mutate { default_type application/json; return 200 '$body'; }
  }
}
EOF
  fi
  run_server "$name" "$round"
done
done
for n in $order; do
  for m in RPS P50 P99; do
    declare -n arr=$m
    [ -n "${arr[$n]:-}" ] && arr[$n]=$(median ${arr[$n]})
    unset -n arr
  done
done

echo
echo "## One run, $(date -u +%Y-%m-%dT%H:%MZ), $profile, median of $ROUNDS round(s)"
echo
python3 - "$order" <<PY
import sys
names = sys.argv[1].split()
rps = {$(for n in $order; do [ -n "${RPS[$n]:-}" ] && printf '"%s": %s, ' "$n" "${RPS[$n]}"; done)}
p99 = {$(for n in $order; do [ -n "${P99[$n]:-}" ] && printf '"%s": %s, ' "$n" "${P99[$n]}"; done)}
p50 = {$(for n in $order; do [ -n "${P50[$n]:-}" ] && printf '"%s": %s, ' "$n" "${P50[$n]}"; done)}
bad = {$(for n in $order; do [ -n "${BAD[$n]:-}" ] && printf '"%s": %s, ' "$n" "${BAD[$n]}"; done)}
rss = {$(for n in $order; do [ -n "${RSS[$n]:-}" ] && printf '"%s": %s, ' "$n" "${RSS[$n]}"; done)}
label = {"nginx": "nginx, fixed body (transport ceiling)", "ours": "whisperer-injector (full injection)",
         "prev": "whisperer-injector at $PREV_REV", "kube-rs": "kube-rs admission_controller (one label)",
         "go": "Go net/http + k8s.io/api (same injection)"}
ratio = lambda n, base: f"{rps[n] / rps[base]:.2f}x" if base in rps and n in rps else "-"
print("| server | req/s @ 64 conns | vs kube-rs | vs nginx | p50 / p99 @ 4 conns | non-2xx | peak RSS |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
order = [n for n in ["nginx", "ours", "prev", "kube-rs", "go"] if n in rps]
for n in order:
    print(f"| {label[n]} | {rps[n]:,.0f} | {ratio(n, 'kube-rs')} | {ratio(n, 'nginx')} | {p50[n]:.3f} / {p99[n]:.3f} ms | {bad[n]} | {rss[n]:.1f} MiB |")
PY
for n in ours prev; do [ -n "${EXTRA[$n]:-}" ] && echo "- $n: ${EXTRA[$n]}"; done
echo
