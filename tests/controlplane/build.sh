#!/usr/bin/env bash
# Builds the upstream control plane the integration tests run on loopback:
# kube-apiserver, kube-controller-manager, kube-scheduler (k8s.io/kubernetes)
# and etcd (go.etcd.io/etcd/server/v3), at the versions pinned in ./go.mod; and
# kubectl of the same release, which the benchmarks drive (bench/attach_fanout.sh).
#
# Output: ${WHISPERER_CP_CACHE:-<repo>/target/controlplane}/<kubernetes version>/
#         {kube-apiserver,kube-controller-manager,kube-scheduler,etcd,kubectl}
# Idempotent: builds only the binaries that are missing (none: does nothing).
# See tests/README.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

# One source of truth for the version: the require line in go.mod.
version="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 } $1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2 }' "$here/go.mod" | head -n1)"
if [[ ! "$version" =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    echo "build.sh: cannot read the k8s.io/kubernetes version from $here/go.mod (got '$version')" >&2
    exit 1
fi

cache="${WHISPERER_CP_CACHE:-$repo/target/controlplane}"
out="$cache/$version"
bins=(kube-apiserver kube-controller-manager kube-scheduler etcd kubectl)

# Go package of each binary; `go build -o dir/` names a binary after the last
# path element, except etcd's (".../server/v3" gives "server").
declare -A pkgs=(
    [kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
    [kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
    [kube-scheduler]=k8s.io/kubernetes/cmd/kube-scheduler
    [etcd]=go.etcd.io/etcd/server/v3
    [kubectl]=k8s.io/kubernetes/cmd/kubectl
)
missing=()
for b in "${bins[@]}"; do
    [[ -x "$out/$b" ]] || missing+=("$b")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "control plane $version already built in $out"
    exit 0
fi

command -v go >/dev/null || { echo "build.sh: the go toolchain is not on PATH" >&2; exit 1; }

major="${version#v}"; major="${major%%.*}"
minor="${version#v*.}"; minor="${minor%%.*}"
# Stamp the version the way the upstream release build does, so /version and
# the components' logs say v1.35.4 instead of v0.0.0-master. Only the link step
# sees these flags, so the Go build cache stays valid across runs.
pkg=k8s.io/component-base/version
ldflags="-X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"

staging="$out.tmp.$$"
trap 'rm -rf "$staging"' EXIT
mkdir -p "$staging"

echo "building ${missing[*]} ($version) into $out"
start=$SECONDS
targets=()
for b in "${missing[@]}"; do targets+=("${pkgs[$b]}"); done
(
    cd "$here"
    go build -buildvcs=false -ldflags "$ldflags" -o "$staging/" "${targets[@]}"
)
[[ -e "$staging/server" ]] && mv "$staging/server" "$staging/etcd"
for b in "${missing[@]}"; do
    [[ -x "$staging/$b" ]] || { echo "build.sh: $b was not produced" >&2; exit 1; }
done
mkdir -p "$out"
for b in "${missing[@]}"; do
    mv -f "$staging/$b" "$out/$b"
done
echo "built in $((SECONDS - start))s: ${missing[*]}"
