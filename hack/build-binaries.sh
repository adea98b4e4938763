#!/usr/bin/env bash
# Builds the pinned Kubernetes control plane, etcd and helm from the Go module proxy into a
# versioned cache outside the repository. Idempotent: a complete cache is reused instantly.
#
#   hack/build-binaries.sh            build (or reuse) and print the cache directory last
#   hack/build-binaries.sh --print    print the cache directory only
#
# Versions are pinned here and nowhere else; the cache key is the version set, so changing a
# pin builds into a new directory and never mixes binaries of two versions.
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
HELM_VERSION=${HELM_VERSION:-v3.21.4}

cache_root=${GITQUORUM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gitquorum}
out="$cache_root/bin/kube-$KUBE_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION"
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler helm)

if [[ "${1:-}" == "--print" ]]; then echo "$out"; exit 0; fi

complete() { for b in "${binaries[@]}"; do [[ -x "$out/$b" ]] || return 1; done; }
if complete; then
  echo "binaries: cached in $out" >&2
  echo "$out"
  exit 0
fi

say() { printf '[build %4ds] %s\n' "$SECONDS" "$*" >&2; }
die() { echo "build-binaries: $*" >&2; exit 1; }

command -v go >/dev/null || die "Go is not installed (need Go >= 1.26 for Kubernetes $KUBE_VERSION)."
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
proxy=$(go env GOPROXY)
say "checking the Go module proxy ($proxy)"
go list -m -json "k8s.io/kubernetes@$KUBE_VERSION" >/dev/null 2>&1 \
  || die "cannot reach the Go module proxy ($proxy) for k8s.io/kubernetes@$KUBE_VERSION; set GOPROXY to a reachable proxy."

work="$cache_root/build"
mkdir -p "$out" "$work"

# k8s.io/kubernetes replaces its staging modules with local paths, which `go install` refuses.
# A wrapper module that pins every staging module at the matching v0.Y.Z is the known way.
build_kube() {
  local dir="$work/kube-$KUBE_VERSION" minor staging_ver mod
  if [[ -x "$out/kube-apiserver" && -x "$out/kube-controller-manager" && -x "$out/kube-scheduler" ]]; then
    return 0
  fi
  minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  staging_ver="v0.${KUBE_VERSION#v1.}"
  mkdir -p "$dir"
  say "kube: resolving staging modules of k8s.io/kubernetes@$KUBE_VERSION"
  mod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [[ -f "$mod" ]] || die "could not download k8s.io/kubernetes@$KUBE_VERSION's go.mod"
  {
    echo "module gitquorum.local/kubebuild"
    echo
    echo "go 1.26"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#replace \1 => \1 '"$staging_ver"'#p' "$mod"
  } >"$dir/go.mod"
  local pkg="k8s.io/component-base/version" cpkg="k8s.io/client-go/pkg/version"
  local ldflags="-s -w"
  for p in "$pkg" "$cpkg"; do
    ldflags+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  say "kube: downloading modules"
  (cd "$dir" && go mod download k8s.io/kubernetes && go list -deps k8s.io/kubernetes/cmd/kube-apiserver >/dev/null)
  for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
    [[ -x "$out/$cmd" ]] && continue
    say "kube: compiling $cmd"
    (cd "$dir" && go build -trimpath -ldflags "$ldflags" -o "$out/$cmd.partial" "k8s.io/kubernetes/cmd/$cmd")
    mv "$out/$cmd.partial" "$out/$cmd"
    say "kube: $cmd done"
  done
}

# etcd's main package also carries replace directives: a wrapper module of its own.
build_etcd() {
  local dir="$work/etcd-$ETCD_VERSION"
  [[ -x "$out/etcd" ]] && return 0
  mkdir -p "$dir"
  cat >"$dir/go.mod" <<MOD
module gitquorum.local/etcdbuild

go 1.26

require go.etcd.io/etcd/server/v3 $ETCD_VERSION

replace (
	go.etcd.io/etcd/api/v3 => go.etcd.io/etcd/api/v3 $ETCD_VERSION
	go.etcd.io/etcd/client/pkg/v3 => go.etcd.io/etcd/client/pkg/v3 $ETCD_VERSION
	go.etcd.io/etcd/client/v3 => go.etcd.io/etcd/client/v3 $ETCD_VERSION
	go.etcd.io/etcd/pkg/v3 => go.etcd.io/etcd/pkg/v3 $ETCD_VERSION
)
MOD
  say "etcd: compiling $ETCD_VERSION"
  (cd "$dir" && go mod download go.etcd.io/etcd/server/v3 \
     && go build -trimpath -ldflags "-s -w" -o "$out/etcd.partial" go.etcd.io/etcd/server/v3)
  mv "$out/etcd.partial" "$out/etcd"
  say "etcd: done"
}

build_helm() {
  [[ -x "$out/helm" ]] && return 0
  say "helm: compiling $HELM_VERSION"
  GOBIN="$work/helm-$HELM_VERSION" GOFLAGS= go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mv "$work/helm-$HELM_VERSION/helm" "$out/helm"
  say "helm: done"
}

say "building into $out (a cold build took about 6 minutes on 2 cores)"
build_etcd
build_helm
build_kube
complete || die "build finished but binaries are missing in $out"
say "all binaries built; cache size $(du -sh "$out" | cut -f1)"
echo "$out"
