#!/usr/bin/env bash
# Attachment reconciler: time from creating an Attachment to every pod of a Deployment
# attached (100 and 1,000 pods), and the controller process's memory with 10,000 pods.
#
#   bench/reconciler_bench.sh                       # defaults below
#   SIZES=100,1000 QPS=50,200 TOTAL_PODS=10000 bench/reconciler_bench.sh
#   SKIP_BUILD=1 bench/reconciler_bench.sh          # reuse target/release/examples/reconciler_bench
#
# examples/reconciler_bench.rs starts etcd + kube-apiserver + kube-controller-manager on
# loopback (tests/support; build them with tests/controlplane/build.sh or point
# WHISPERER_CP_BIN at them), acts as kubelet (binds pods to a Node object, writes Running
# status), and runs the reconciler as a separate child process so /proc/<pid>/status
# (VmRSS, VmHWM) is the controller's alone. Everything is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-100,1000}
QPS=${QPS:-50,200}
TOTAL_PODS=${TOTAL_PODS:-10000}
CONCURRENCY=${CONCURRENCY:-8}

BIN=target/release/examples/reconciler_bench
if [[ -z "${SKIP_BUILD:-}" || ! -x "$BIN" ]]; then
    cargo build --release --example reconciler_bench
fi
exec "$BIN" drive --sizes "$SIZES" --qps "$QPS" --total-pods "$TOTAL_PODS" --concurrency "$CONCURRENCY"
