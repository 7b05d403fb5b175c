#!/usr/bin/env bash
# The bench's Node 20 base image, made without a container registry:
#
#   base-image.sh [--force]    build hpcs-bench/node:20 unless the current one is up to date
#                              (--force rebuilds the images; delete the cache to redo debootstrap)
#
# 1. rootfs: `debootstrap --variant=minbase bookworm` (+ gnupg, ca-certificates) from the host's
#    own Debian mirror, apt caches emptied, kept as a tarball in $HPCS_STACK_CACHE/base-image and
#    imported as hpcs-bench/debian:bookworm (`docker import`);
# 2. node: the host's node binary and npm (the host is Debian 12 too, so node's shared libraries -
#    libc, libstdc++, libgcc_s - are the rootfs's), copied onto it in the layout of the official
#    node:20 images (/usr/local/bin/node, /usr/local/lib/node_modules/npm).
#
# Each image carries a label with the hash of what it was made from (this script, the suite, the
# mirror, node and npm): an image whose label matches is left alone, so a rerun takes a second. A
# new node only redoes step 2 (seconds); the debootstrap .debs are cached too.
#
# Environment: HPCS_NODE_IMAGE (image name), HPCS_STACK_CACHE, HPCS_DEBIAN_MIRROR (else the
# bookworm entry of /etc/apt/sources.list*), DOCKER_HOST (the engine).
set -euo pipefail

SELF=${BASH_SOURCE[0]}
IMAGE=${HPCS_NODE_IMAGE:-hpcs-bench/node:20}
ROOTFS_IMAGE=hpcs-bench/debian:bookworm
CACHE=${HPCS_STACK_CACHE:-$HOME/.cache/hpcs-stack}/base-image
SUITE=bookworm
INCLUDE=gnupg,ca-certificates
LABEL=org.hpcs.base-stamp

log() { printf '[base-image] %s\n' "$*" >&2; }
die() { printf '[base-image] error: %s\n' "$*" >&2; exit 1; }

# The first `deb` source for $SUITE in the host's apt configuration (one-line or deb822 format).
debian_mirror() {
  if [[ -n ${HPCS_DEBIAN_MIRROR:-} ]]; then echo "$HPCS_DEBIAN_MIRROR"; return; fi
  local f found
  found=$(
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    awk -v s="$SUITE" '$1 == "deb" {
      i = 2; if ($i ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
      if ($(i + 1) == s) print $i }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    awk -v s="$SUITE" 'BEGIN { RS = ""; FS = "\n" } {
      deb = 0; uri = ""; ok = 0
      for (j = 1; j <= NF; j++) {
        n = split($j, w, /[ \t]+/)
        if (w[1] == "Types:") for (k = 2; k <= n; k++) if (w[k] == "deb") deb = 1
        if (w[1] == "URIs:") uri = w[2]
        if (w[1] == "Suites:") for (k = 2; k <= n; k++) if (w[k] == s) ok = 1
      }
      if (deb && ok && uri != "") print uri }' "$f"
  done
  )
  [[ -n $found ]] || die "no 'deb' source for $SUITE in /etc/apt/sources.list*: set HPCS_DEBIAN_MIRROR"
  echo "${found%%$'\n'*}"
}

label_of() {
  docker image inspect -f "{{ index .Config.Labels \"$LABEL\" }}" "$1" 2>/dev/null || true
}

# drop_old ID -> removes an image that was replaced and no tag points at any more (kept while a
# container or a derived image still uses it).
drop_old() {
  [[ -n $1 && $(docker image inspect -f '{{ len .RepoTags }}' "$1" 2>/dev/null) == 0 ]] || return 0
  docker image rm "$1" >/dev/null 2>&1 || true
}

# make_rootfs KEY MIRROR -> $CACHE/rootfs-KEY.tar (a minbase tree with gnupg + ca-certificates).
make_rootfs() {
  local key=$1 mirror=$2 tree=$CACHE/tree.tmp
  [[ -s $CACHE/rootfs-$key.tar ]] && return 0
  [[ $(id -u) == 0 ]] || die "debootstrap needs root (run as root once; later runs reuse $CACHE)"
  command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap"
  log "debootstrap $SUITE (minbase + $INCLUDE) from $mirror"
  rm -rf "$tree"
  mkdir -p "$CACHE/debs"
  debootstrap --variant=minbase --include="$INCLUDE" --cache-dir="$CACHE/debs" \
    "$SUITE" "$tree" "$mirror" >"$CACHE/debootstrap.log" 2>&1 ||
    die "debootstrap failed (see $CACHE/debootstrap.log)"
  [[ -x $tree/usr/bin/apt-get && -d $tree/etc/dpkg/dpkg.cfg.d ]] || die "no Debian tree in $tree"
  # What Debian's slim images drop too: apt's lists and downloaded packages, logs, translations,
  # manuals, documentation but the copyright files (-55 MB). The dpkg filter keeps them out of later
  # installs too (the client Dockerfile's apt-get fallback).
  printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
    'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
    'path-exclude /usr/share/locale/*' 'path-include /usr/share/locale/locale.alias' \
    >"$tree/etc/dpkg/dpkg.cfg.d/hpcs-slim"
  find "$tree/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$tree/usr/share/doc" -mindepth 1 -depth -type d -empty -delete
  find "$tree/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  find "$tree/usr/share/man" "$tree/usr/share/info" "$tree/var/lib/apt/lists" "$tree/var/log" \
    -mindepth 1 -maxdepth 1 -exec rm -rf {} +
  rm -rf "$tree"/var/cache/apt/*.bin "$tree"/var/cache/apt/archives/*.deb "$tree/debootstrap"
  tar --numeric-owner -C "$tree" -cf "$CACHE/rootfs-$key.tar.tmp" .
  mv "$CACHE/rootfs-$key.tar.tmp" "$CACHE/rootfs-$key.tar"
  rm -rf "$tree"
  # Older rootfs tarballs (another mirror or package list) are of no further use.
  find "$CACHE" -maxdepth 1 -name 'rootfs-*.tar' ! -name "rootfs-$key.tar" -delete
}

main() {
  local force=0 mirror arch node npm_dir rootfs_key stamp old old_rootfs=""
  [[ ${1:-} == --force ]] && force=1
  command -v docker >/dev/null || die "docker is missing"
  node=$(command -v node) || die "node is missing on the host"
  node=$(readlink -f "$node")
  npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")") || die "npm is missing on the host"
  [[ -f $npm_dir/package.json ]] || die "cannot find npm's package directory (got $npm_dir)"
  mirror=$(debian_mirror)
  arch=$(dpkg --print-architecture)
  rootfs_key=$(printf '%s\n' "$SUITE" "$mirror" "$INCLUDE" "$arch" "$(sed -n '/^make_rootfs()/,/^}/p' "$SELF")" |
    sha256sum | cut -c1-16)
  stamp=$( (
    cat "$SELF"
    echo "$rootfs_key" "$("$node" --version)" "$(stat -c '%s %Y' "$node")"
    jq -r .version "$npm_dir/package.json"
  ) | sha256sum | cut -c1-16)

  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"
  flock 9
  if ((!force)) && [[ $(label_of "$IMAGE") == "$stamp" ]]; then
    log "$IMAGE is up to date ($stamp)"
    return 0
  fi

  if ((force)) || [[ $(label_of "$ROOTFS_IMAGE") != "$rootfs_key" ]]; then
    make_rootfs "$rootfs_key" "$mirror"
    log "importing $ROOTFS_IMAGE"
    old_rootfs=$(docker image inspect -f '{{ .Id }}' "$ROOTFS_IMAGE" 2>/dev/null || true)
    docker import -c "LABEL $LABEL=$rootfs_key" -c 'CMD ["bash"]' \
      "$CACHE/rootfs-$rootfs_key.tar" "$ROOTFS_IMAGE" >/dev/null
  fi

  log "adding node $("$node" --version) and npm $(jq -r .version "$npm_dir/package.json") -> $IMAGE"
  STAGE=$(mktemp -d)
  trap 'rm -rf "$STAGE"' EXIT
  mkdir -p "$STAGE/ctx/usr/local/bin" "$STAGE/ctx/usr/local/lib/node_modules"
  cp "$node" "$STAGE/ctx/usr/local/bin/node"
  cp -a "$npm_dir" "$STAGE/ctx/usr/local/lib/node_modules/npm"
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$STAGE/ctx/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$STAGE/ctx/usr/local/bin/npx"
  cat >"$STAGE/ctx/Dockerfile" <<EOF
FROM $ROOTFS_IMAGE
COPY usr /usr
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL $LABEL=$stamp
CMD ["node"]
EOF
  old=$(docker image inspect -f '{{ .Id }}' "$IMAGE" 2>/dev/null || true)
  docker build -q -t "$IMAGE" "$STAGE/ctx" >/dev/null 2>"$STAGE/build.log" ||
    die "docker build of $IMAGE failed: $(tail -5 "$STAGE/build.log")"
  drop_old "$old"
  drop_old "$old_rootfs"
  docker run --rm --network none "$IMAGE" sh -c 'node -e "process.exit(0)" && npm --version && gpg --version' \
    >/dev/null 2>"$STAGE/smoke.log" || die "$IMAGE does not run node, npm and gpg: $(tail -5 "$STAGE/smoke.log")"
  log "$IMAGE ready ($(docker image inspect -f '{{ .Size }}' "$IMAGE" | numfmt --to=iec))"
}

main "$@"
