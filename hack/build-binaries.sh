#!/usr/bin/env bash
# Builds the pinned Kubernetes control plane, etcd and helm, versitygw (the testbed's S3 object
# store) and Flux's source-controller (a real GitOps client for the end-to-end tests), from the
# Go module proxy into a versioned cache outside the repository.
# Idempotent: a complete cache is reused instantly.
#
#   hack/build-binaries.sh                      build (or reuse) all; print the kube directory last
#   hack/build-binaries.sh --print              print the kube directory only
#   hack/build-binaries.sh --versitygw          build (or reuse) versitygw only; print its path
#   hack/build-binaries.sh --print-versitygw    print versitygw's path only
#   hack/build-binaries.sh --flux               build (or reuse) source-controller only; print
#                                               its directory (the binary and Flux's CRDs)
#   hack/build-binaries.sh --print-flux         print source-controller's directory only
#
# Progress goes to stderr, one line per component with the time it took; each component's
# full output (go's download and compiler lines) goes to a log under the cache, named on its
# line, and the log's last lines are shown when the component fails.
#
# Versions are pinned here and nowhere else; the cache key is the version set, so changing a
# pin builds into a new directory and never mixes binaries of two versions.
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
HELM_VERSION=${HELM_VERSION:-v3.21.4}
VERSITYGW_VERSION=${VERSITYGW_VERSION:-v1.8.0}
FLUX_SOURCE_CONTROLLER_VERSION=${FLUX_SOURCE_CONTROLLER_VERSION:-v1.9.6}

cache_root=${GITQUORUM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gitquorum}
out="$cache_root/bin/kube-$KUBE_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION"
logs="$cache_root/logs"
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler helm)
# A directory of its own: versitygw's pin changes apart from Kubernetes', and adding it did not
# rebuild the control plane.
versitygw="$cache_root/bin/versitygw-$VERSITYGW_VERSION/versitygw"
# Likewise for Flux: the binary and the CRDs of the same module version, side by side.
flux="$cache_root/bin/flux-source-controller-$FLUX_SOURCE_CONTROLLER_VERSION"

only_versitygw= only_flux=
case "${1:-}" in
  --print) echo "$out"; exit 0 ;;
  --print-versitygw) echo "$versitygw"; exit 0 ;;
  --print-flux) echo "$flux"; exit 0 ;;
  --versitygw) only_versitygw=1 ;;
  --flux) only_flux=1 ;;
esac

# Tenths of a second since the epoch; EPOCHREALTIME has microseconds behind a locale's point.
now() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 100000)); }
started=$(now)
# line NAME WHAT START [WHERE]: a progress line in the columns the Makefile's setup uses, with
# the time since START (none when START is empty) and where to look.
line() {
  local took
  if [[ -n $3 ]]; then
    took=$(($(now) - $3))
    printf '%-24s %-52s %4d.%d s%s\n' "$1" "$2" $((took / 10)) $((took % 10)) "${4:+  $4}" >&2
  else
    printf '%-24s %-52s %7s%s\n' "$1" "$2" "" "${4:+  $4}" >&2
  fi
}
die() { echo "build-binaries: $*" >&2; exit 1; }

kube_complete() { for b in "${binaries[@]}"; do [[ -x "$out/$b" ]] || return 1; done; }
# The CRDs are copied before the binary is moved into place, so the binary marks a whole cache.
flux_complete() { [[ -x "$flux/source-controller" ]]; }
if [[ -n $only_versitygw && -x $versitygw ]]; then
  line versitygw "$VERSITYGW_VERSION cached" "$started" "in: $versitygw"
  echo "$versitygw"
  exit 0
fi
if [[ -n $only_flux ]] && flux_complete; then
  line source-controller "$FLUX_SOURCE_CONTROLLER_VERSION cached" "$started" "in: $flux"
  echo "$flux"
  exit 0
fi
if [[ -z $only_versitygw$only_flux && -x $versitygw ]] && flux_complete && kube_complete; then
  line binaries "all ${#binaries[@]} cached" "$started" "in: $out"
  echo "$out"
  exit 0
fi

# step NAME WHAT COMMAND...: runs COMMAND (a function or a program) in a subshell with errexit
# on and its output in $logs/NAME.log, then prints its line; on failure, the log's tail.
step() {
  local name=$1 what=$2 log="$logs/$1.log" start status
  shift 2
  start=$(now)
  set +e
  (set -e; "$@") >"$log" 2>&1
  status=$?
  set -e
  if ((status != 0)); then
    echo "$name: failed (exit $status); the last lines of $log:" >&2
    tail -n 30 "$log" | sed 's/^/    /' >&2
    exit "$status"
  fi
  line "$name" "$what" "$start" "log: $log"
}

command -v go >/dev/null || die "Go is not installed (need Go >= 1.26 for Kubernetes $KUBE_VERSION)."
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
proxy=$(go env GOPROXY)
work="$cache_root/build"
mkdir -p "$work" "$logs"

# versitygw has no replace directives, but `go install` cannot name its output: a wrapper
# module, like etcd's, builds it straight into its cache directory.
build_versitygw() {
  local dir="$work/versitygw-$VERSITYGW_VERSION" bindir
  bindir=$(dirname "$versitygw")
  mkdir -p "$dir" "$bindir"
  cat >"$dir/go.mod" <<MOD
module gitquorum.local/versitygwbuild

go 1.26

require github.com/versity/versitygw $VERSITYGW_VERSION
MOD
  cd "$dir"
  go mod download github.com/versity/versitygw
  go build -v -trimpath -ldflags "-s -w" -o "$versitygw.partial" \
    github.com/versity/versitygw/cmd/versitygw
  mv "$versitygw.partial" "$versitygw"
}

if [[ -n $only_versitygw ]]; then
  step versitygw "$VERSITYGW_VERSION built (about 45 s)" build_versitygw
  echo "$versitygw"
  exit 0
fi

# source-controller's module replaces its api submodule with ./api and pins a go-digest fork,
# which `go install` refuses: a wrapper module requires the api at the same version and
# repeats the go-digest replace. The main package is the module root. The Go module proxy
# answers 403 for github.com/fluxcd/pkg/artifact v0.18.3 (the version v1.9.6 requires); v0.18.0,
# the newest it serves, has the same API, so the wrapper pins that.
build_flux() {
  local dir="$work/flux-source-controller-$FLUX_SOURCE_CONTROLLER_VERSION" mod
  mkdir -p "$dir" "$flux"
  cat >"$dir/go.mod" <<MOD
module gitquorum.local/fluxbuild

go 1.26

require (
	github.com/fluxcd/source-controller $FLUX_SOURCE_CONTROLLER_VERSION
	github.com/fluxcd/source-controller/api $FLUX_SOURCE_CONTROLLER_VERSION
)

replace (
	github.com/fluxcd/pkg/artifact => github.com/fluxcd/pkg/artifact v0.18.0
	github.com/opencontainers/go-digest => github.com/opencontainers/go-digest v1.0.1-0.20220411205349-bde1400a84be
)
MOD
  cd "$dir"
  go mod download github.com/fluxcd/source-controller
  mod="$(go env GOMODCACHE)/github.com/fluxcd/source-controller@$FLUX_SOURCE_CONTROLLER_VERSION"
  mkdir -p "$flux/crds"
  cp "$mod"/config/crd/bases/*.yaml "$flux/crds/"
  chmod u+w "$flux"/crds/*.yaml
  go build -v -trimpath -ldflags "-s -w" -o "$flux/source-controller.partial" \
    github.com/fluxcd/source-controller
  mv "$flux/source-controller.partial" "$flux/source-controller"
}

if [[ -n $only_flux ]]; then
  step source-controller "$FLUX_SOURCE_CONTROLLER_VERSION built (cold: about 4 minutes)" build_flux
  echo "$flux"
  exit 0
fi

if ! kube_complete; then
  line binaries "building (cold: about 6 minutes on 2 cores)" "" "in: $out"
  start=$(now)
  go list -m -json "k8s.io/kubernetes@$KUBE_VERSION" >"$logs/go-proxy.log" 2>&1 \
    || die "cannot reach the Go module proxy ($proxy) for k8s.io/kubernetes@$KUBE_VERSION; set GOPROXY to a reachable proxy (details: $logs/go-proxy.log)."
  line go-proxy "$proxy answers" "$start" "log: $logs/go-proxy.log"
fi
mkdir -p "$out"

# etcd's main package carries replace directives, which `go install` refuses: a wrapper module.
build_etcd() {
  local dir="$work/etcd-$ETCD_VERSION"
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
  cd "$dir"
  go mod download go.etcd.io/etcd/server/v3
  go build -v -trimpath -ldflags "-s -w" -o "$out/etcd.partial" go.etcd.io/etcd/server/v3
  mv "$out/etcd.partial" "$out/etcd"
}

build_helm() {
  GOBIN="$work/helm-$HELM_VERSION" GOFLAGS= go install -v -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mv "$work/helm-$HELM_VERSION/helm" "$out/helm"
}

# k8s.io/kubernetes replaces its staging modules with local paths, which `go install` refuses.
# A wrapper module that pins every staging module at the matching v0.Y.Z is the known way.
kube_dir="$work/kube-$KUBE_VERSION"
kube_modules() {
  local staging_ver="v0.${KUBE_VERSION#v1.}" mod
  mkdir -p "$kube_dir"
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
  } >"$kube_dir/go.mod"
  cd "$kube_dir"
  go mod download k8s.io/kubernetes
  go list -deps k8s.io/kubernetes/cmd/kube-apiserver >/dev/null
}

kube_ldflags() {
  local minor=${KUBE_VERSION#v1.} flags="-s -w" p
  minor=${minor%%.*}
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    flags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$flags"
}

build_kube() {
  local cmd=$1
  cd "$kube_dir"
  go build -v -trimpath -ldflags "$(kube_ldflags)" -o "$out/$cmd.partial" "k8s.io/kubernetes/cmd/$cmd"
  mv "$out/$cmd.partial" "$out/$cmd"
}

[[ -x "$out/etcd" ]] || step etcd "$ETCD_VERSION built" build_etcd
[[ -x "$out/helm" ]] || step helm "$HELM_VERSION built" build_helm
kube=(kube-apiserver kube-controller-manager kube-scheduler)
missing=()
for cmd in "${kube[@]}"; do [[ -x "$out/$cmd" ]] || missing+=("$cmd"); done
if ((${#missing[@]})); then
  step kube-modules "k8s.io/kubernetes $KUBE_VERSION and its staging modules" kube_modules
  for cmd in "${missing[@]}"; do step "$cmd" "$KUBE_VERSION built" build_kube "$cmd"; done
fi
[[ -x $versitygw ]] || step versitygw "$VERSITYGW_VERSION built" build_versitygw
flux_complete || step source-controller "$FLUX_SOURCE_CONTROLLER_VERSION built" build_flux
kube_complete || die "build finished but binaries are missing in $out"
line binaries "all ${#binaries[@]} built ($(du -sh "$out" | cut -f1))" "$started" "in: $out"
echo "$out"
