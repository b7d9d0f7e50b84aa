#!/usr/bin/env bash
# Attach fan-out on a simulated cluster (kube-controller-manager + kube-scheduler + kwok, see
# tests/support/kwok.rs): (a) a serial `kubectl debug` loop vs one Attachment over the same
# pods, (b) Attachment -> every replica attached for 1,000 and 10,000 replicas and the
# reconciler's memory, (c) a 1,000-replica rollout under an Attachment, (d) a 5,000-pod burst
# through the webhook with its p99 as the API server measures it. Prints markdown tables.
#
#   bench/attach_fanout.sh
#   SIZES=1000 ROLLOUT=1000 BURST=0 bench/attach_fanout.sh           # a smaller run
#   VARIANTS='default;--patch-qps 200 --reconcile-concurrency 8' bench/attach_fanout.sh   # before/after
#   SKIP_BUILD=1 bench/attach_fanout.sh                             # reuse the built example
#   bench/attach_fanout.sh --apiserver-profile /tmp/prof             # + kube-apiserver CPU profiles
#   VARIANTS="serve@$PWD/target/shipped/release/whisperer-injector" ...  # the product's serve as reconciler
#   BENCH_CONTROLLER_WRAP="taskset -c 1" ...   # the reconciler under a wrapper (one CPU, heaptrack -o F)
#   BENCH_SERVE_DNS=on ...                     # serve@ with its DNS proxy on, as the Deployment runs it
#
# Needs tests/controlplane/build.sh (kube-apiserver, kube-controller-manager, kube-scheduler,
# etcd, kubectl) and tests/kwok/build.sh. The example is built with the release profile minus
# fat LTO (PROFILE_LTO=fat for the shipped profile; it takes 8-38 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=${NODES:-10}
DEBUG_PODS=${DEBUG_PODS:-200}
SIZES=${SIZES:-1000,10000}
VARIANTS=${VARIANTS:-default}
ROLLOUT=${ROLLOUT:-1000}
BURST=${BURST:-5000}
BURST_CONCURRENCY=${BURST_CONCURRENCY:-32}

tests/controlplane/build.sh
tests/kwok/build.sh

BIN=target/release/examples/attach_fanout
if [[ -z "${SKIP_BUILD:-}" || ! -x "$BIN" ]]; then
    CARGO_PROFILE_RELEASE_LTO=${PROFILE_LTO:-false} \
        CARGO_PROFILE_RELEASE_CODEGEN_UNITS=${PROFILE_CODEGEN_UNITS:-16} \
        cargo build --release --example attach_fanout
fi
# The API server, etcd, kube-controller-manager, kube-scheduler and kwok have many files open
# with 10,000+ pods watched.
ulimit -n 65536 2>/dev/null || true
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
exec "$BIN" drive --nodes "$NODES" --debug-pods "$DEBUG_PODS" --sizes "$SIZES" \
    --variants "$VARIANTS" --rollout "$ROLLOUT" --burst "$BURST" --burst-concurrency "$BURST_CONCURRENCY" "$@"
