#!/usr/bin/env bash
# Builds kwok (sigs.k8s.io/kwok/cmd/kwok) at the version pinned in ./go.mod,
# from the Go module proxy. kwok simulates nodes and the pod lifecycle
# (scheduled pods get IPs and turn Running) for tests/support/kwok.rs.
#
# Output: ${WHISPERER_KWOK_CACHE:-<repo>/target/kwok}/<kwok version>/
#   kwok                 the binary
#   default-stages.yaml  the node and pod Stages kwokctl gives kwok by default (node-initialize,
#                        node-heartbeat-with-lease, pod-ready, pod-complete, pod-delete), copied
#                        from this kwok version's module source; the plain kwok binary has no
#                        built-in Stages. Our own Stages are in ./stages/.
# Idempotent: does nothing when both are already there.
# See tests/README.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

# One source of truth for the version: the require line in go.mod.
version="$(awk '$1 == "require" && $2 == "sigs.k8s.io/kwok" { print $3 } $1 == "sigs.k8s.io/kwok" && $2 ~ /^v/ { print $2 }' "$here/go.mod" | head -n1)"
if [[ ! "$version" =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    echo "build.sh: cannot read the sigs.k8s.io/kwok version from $here/go.mod (got '$version')" >&2
    exit 1
fi

cache="${WHISPERER_KWOK_CACHE:-$repo/target/kwok}"
out="$cache/$version"
if [[ -x "$out/kwok" && -f "$out/default-stages.yaml" ]]; then
    echo "kwok $version already built in $out"
    exit 0
fi

command -v go >/dev/null || { echo "build.sh: the go toolchain is not on PATH" >&2; exit 1; }

staging="$out.tmp.$$"
trap 'rm -rf "$staging"' EXIT
mkdir -p "$staging"

echo "building kwok $version into $out"
start=$SECONDS
(
    cd "$here"
    # Stamped as the upstream release does (hack/releases.sh), so `kwok --version`
    # and the node's kubeletVersion say which kwok this is.
    go build -buildvcs=false -ldflags "-X sigs.k8s.io/kwok/pkg/consts.Version=${version#v}" \
        -o "$staging/kwok" sigs.k8s.io/kwok/cmd/kwok
)
src="$(cd "$here" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    echo "---"
    echo "# from sigs.k8s.io/kwok@$version kustomize/stage/$f"
    cat "$src/kustomize/stage/$f"
done >"$staging/default-stages.yaml"
mkdir -p "$out"
mv -f "$staging/kwok" "$out/kwok"
mv -f "$staging/default-stages.yaml" "$out/default-stages.yaml"
echo "built in $((SECONDS - start))s: kwok, default-stages.yaml"
