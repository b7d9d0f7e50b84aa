#!/usr/bin/env bash
# The webhook alone: bench/webhook_peers.sh with this tree's server only (same load, fixture,
# shipped profile and figures: req/s at 64 connections, p99 at 4, the 1,500-env and 1 MB
# pods, peak RSS). SERVERS="nginx ours prev kube-rs go" for the peers; see that script.
set -euo pipefail
SERVERS=${SERVERS:-ours} exec "$(dirname "$0")/webhook_peers.sh" "$@"
