#!/usr/bin/env bash
# `make image`: builds the Dockerfile here without Docker (Debian's podman and runc), from an
# empty image store, and saves the image as an OCI archive.
#
#   hack/build-image.sh              build; the archive is build/gitquorum-image.tar
#   hack/build-image.sh --print      print the archive's path only
#
# The Dockerfile starts FROM python:3.11-slim, which no registry here serves: a stand-in with
# the same parts (Debian 12's Python 3.11 with pip, ca-certificates) is made once with
# debootstrap, cached as a tar under the cache directory, and given to the build through
# `--build-context python:3.11-slim=...`. The Dockerfile itself stays as Docker users build it.
#
# Progress: one line per step with its time; each step's full output goes to a log under
# build/logs/, named on its line, whose last lines are shown when the step fails.
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$PWD
archive="$repo/build/gitquorum-image.tar"
[[ ${1:-} == --print ]] && { echo "$archive"; exit 0; }

tag=localhost/gitquorum:dev
base_tag=localhost/gitquorum-base:python3.11-bookworm
cache_root=${GITQUORUM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gitquorum}
# The recipe's number is in the name: a change to make_base below makes a new cache entry.
base_recipe=2
base_tar="$cache_root/image/base-python3.11-bookworm-$base_recipe.tar"
logs="$repo/build/logs"
store="$repo/build/image-store"
mkdir -p "$logs" "$(dirname "$base_tar")"

now() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 100000)); }
line() {
  local took=$(($(now) - $3))
  printf '%-24s %-52s %4d.%d s%s\n' "$1" "$2" $((took / 10)) $((took % 10)) "${4:+  $4}" >&2
}
# step NAME WHAT LOG COMMAND...: runs COMMAND with its output in LOG; one line when it ends.
step() {
  local name=$1 what=$2 log=$3 started
  shift 3
  started=$(now)
  if ! "$@" >"$log" 2>&1; then
    line "$name" "FAILED: $what" "$started" "log: $log"
    tail -n 25 "$log" >&2
    exit 1
  fi
  line "$name" "$what" "$started" "log: $log"
}

install_tools() {
  local missing=()
  for tool in podman buildah runc debootstrap; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  [[ $(id -u) -eq 0 ]] || { echo "need root to install: ${missing[*]}"; return 1; }
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    podman buildah runc debootstrap uidmap conmon
}

make_base() {
  local root
  root=$(mktemp -d "$repo/build/base-XXXXXX")
  debootstrap --variant=minbase --include=python3,python3-pip,ca-certificates \
    bookworm "$root" http://deb.debian.org/debian
  # As in python:3.11-slim: pip may install into the system Python, `python` is Python 3.
  rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
  ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  # mktemp made the directory 0700, and it becomes the image's /: only root could enter it.
  chmod 0755 "$root"
  tar -C "$root" -cf "$base_tar.partial" .
  mv "$base_tar.partial" "$base_tar"
  rm -rf "$root"
}

# The project's own podman settings and an image store of its own, emptied first.
export CONTAINERS_CONF="$repo/hack/containers/containers.conf"
export CONTAINERS_STORAGE_CONF="$repo/build/storage.conf"
podman_in_store() { podman --root "$store/graph" --runroot "$store/run" --storage-driver vfs "$@"; }
cat >"$CONTAINERS_STORAGE_CONF" <<CONF
[storage]
driver = "vfs"
graphroot = "$store/graph"
runroot = "$store/run"
CONF

step tools "podman, buildah, runc, debootstrap" "$logs/image-tools.log" install_tools
if [[ -f $base_tar ]]; then
  line base "python:3.11-slim stand-in cached" "$(now)" "in: $base_tar"
else
  step base "python:3.11-slim stand-in (debootstrap, once)" "$logs/image-base.log" make_base
fi
empty_store() { rm -rf "$store" && mkdir -p "$store"; }
step store "an empty image store" "$logs/image-store.log" empty_store
# With the environment python:3.11-slim declares: an imported tar has none, and the runtime's
# default PATH lacks /usr/local/bin, where pip puts the gitquorum command.
step import "the stand-in into the store" "$logs/image-import.log" \
  podman_in_store import \
    --change "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV LANG=C.UTF-8" \
    --change 'CMD ["python3"]' \
    "$base_tar" "$base_tag"
# --layers=false: buildah 1.28's layer cache reused a stale `pip install` after a source
# change. The host's CA bundle lets pip reach the package index the way the host does.
step build "the Dockerfile (podman build)" "$logs/image-build.log" \
  podman_in_store build --network=host --layers=false \
    --build-context "python:3.11-slim=container-image://$base_tag" \
    --volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
    --tag "$tag" "$repo"
rm -f "$archive"
step save "an OCI archive" "$logs/image-save.log" \
  podman_in_store save --format oci-archive --output "$archive" "$tag"
size=$(du -m "$archive" | cut -f1)
line image "$tag, ${size} MB" "$(now)" "in: $archive"
