#!/usr/bin/env bash
# Builds the helm and kustomize binaries the chart tests (tests/chart.rs) and CI
# (`helm lint --strict charts/whisperer-injector`) run, from the Go module proxy, at the
# versions pinned in ./go.mod (helm.sh/helm/v3, sigs.k8s.io/kustomize/kustomize/v5).
#
# Output: ${WHISPERER_HELM_CACHE:-<repo>/target/helm}/<helm version>/{helm,kustomize}
# Idempotent: does nothing when both binaries are already there.
# See tests/README.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

# One source of truth for the versions: the require lines in go.mod.
mod_version() {
    awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2 } $1 == "require" && $2 == m { print $3 }' "$here/go.mod" | head -n1
}
version="$(mod_version helm.sh/helm/v3)"
kversion="$(mod_version sigs.k8s.io/kustomize/kustomize/v5)"
for v in "$version" "$kversion"; do
    if [[ ! "$v" =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
        echo "build.sh: cannot read the helm and kustomize versions from $here/go.mod (got '$version', '$kversion')" >&2
        exit 1
    fi
done

cache="${WHISPERER_HELM_CACHE:-$repo/target/helm}"
out="$cache/$version"
bins=(helm kustomize)

missing=0
for b in "${bins[@]}"; do
    [[ -x "$out/$b" ]] || missing=1
done
if [[ $missing -eq 0 ]]; then
    echo "helm $version and kustomize $kversion already built in $out"
    exit 0
fi

command -v go >/dev/null || { echo "build.sh: the go toolchain is not on PATH" >&2; exit 1; }

# Stamp the versions the way the upstream release builds do, so `helm version` says v3.x.y
# (helm also reports it as the default kubeVersion/capabilities) and `kustomize version`
# says v5.x.y. Only the link step sees these flags, so the Go build cache stays valid.
# The Kubernetes version helm assumes without a cluster (`helm template`, lint deprecations)
# is that of its client-go, as upstream's Makefile sets it: k8s.io/client-go v0.X.Y -> 1.X.
client_go="$(mod_version k8s.io/client-go)"
k8s_minor="${client_go#v0.}"; k8s_minor="${k8s_minor%%.*}"
ldflags="-X helm.sh/helm/v3/internal/version.version=$version -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done
kldflags="-X sigs.k8s.io/kustomize/api/provenance.version=kustomize/$kversion"

staging="$out.tmp.$$"
trap 'rm -rf "$staging"' EXIT
mkdir -p "$staging"

echo "building helm $version and kustomize $kversion into $out"
start=$SECONDS
(
    cd "$here"
    go build -buildvcs=false -ldflags "$ldflags" -o "$staging/helm" helm.sh/helm/v3/cmd/helm
    go build -buildvcs=false -ldflags "$kldflags" -o "$staging/kustomize" sigs.k8s.io/kustomize/kustomize/v5
)
for b in "${bins[@]}"; do
    [[ -x "$staging/$b" ]] || { echo "build.sh: $b was not produced" >&2; exit 1; }
done
mkdir -p "$out"
for b in "${bins[@]}"; do
    mv -f "$staging/$b" "$out/$b"
done
echo "built in $((SECONDS - start))s: $("$out/helm" version --short), $("$out/kustomize" version)"
