#!/usr/bin/env bash
# Builds the client image from the working tree, with docker's layer cache kept warm:
#
#   compose/build-image.sh [-t TAG] [--base IMAGE] [--no-npm-cache] [SPIRE_AGENT]
#
#   -t TAG          image name (default $HPCS_CLIENT_IMAGE, else hpcs/client:latest)
#   --base IMAGE    BASE build argument (default $HPCS_BASE_IMAGE, else node:20-bookworm-slim;
#                   the test bench: hpcs-bench/node:20, made by stack/base-image.sh)
#   --no-npm-cache, SPIRE_AGENT   as for compose/stage-build-inputs.sh, which runs first
#
# The build stage is tagged TAG-build (TAG's tag + "-build"), so that its npm ci layer stays cached
# and is not "dangling" (a rebuild after `docker image prune` still takes seconds); the images a
# rebuild replaces (old TAG, old TAG-build) are removed. The same image comes out of
# `docker-compose build`; this script only adds the staging and the cleanup.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TAG=${HPCS_CLIENT_IMAGE:-hpcs/client:latest}
BASE=${HPCS_BASE_IMAGE:-node:20-bookworm-slim}
STAGE_ARGS=()

die() { printf '[build-image] error: %s\n' "$*" >&2; exit 1; }

while (($#)); do
  case $1 in
    -t) TAG=${2:?-t needs an image name}; shift 2 ;;
    --base) BASE=${2:?--base needs an image name}; shift 2 ;;
    --no-npm-cache) STAGE_ARGS=(--no-npm-cache "${STAGE_ARGS[@]}"); shift ;;
    -*) die "unknown option $1 (see the header of $0)" ;;
    *) STAGE_ARGS+=("$1"); shift ;;
  esac
done
[[ $TAG == *:* && ${TAG##*:} != */* ]] || TAG=$TAG:latest
BUILD_TAG=$TAG-build

image_id() { docker image inspect -f '{{ .Id }}' "$1" 2>/dev/null || true; }

# drop_old ID -> removes a replaced image no tag points at any more (kept while something uses it).
drop_old() {
  [[ -n $1 && $(docker image inspect -f '{{ len .RepoTags }}' "$1" 2>/dev/null) == 0 ]] || return 0
  docker image rm "$1" >/dev/null 2>&1 || true
}

bash "$ROOT/compose/stage-build-inputs.sh" "${STAGE_ARGS[@]}"

old=$(image_id "$TAG")
old_build=$(image_id "$BUILD_TAG")
cd "$ROOT"
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
docker build --force-rm -f client/Dockerfile --build-arg BASE="$BASE" -t "$TAG" . >"$LOG" 2>&1 ||
  die "docker build failed:"$'\n'"$(tail -n 30 "$LOG")"
# The classic builder prints each step's image: the one before the second FROM is the build stage.
# (BuildKit keeps its cache elsewhere and prints no such ids: nothing to tag then.)
build_id=$(awk '/^Step [0-9]+\/[0-9]+ : FROM / && n++ == 1 { print id; exit }
  /^ ---> [0-9a-f]+$/ { id = $2 }' "$LOG")
[[ -z $build_id ]] || docker tag "$build_id" "$BUILD_TAG"
[[ $old == "$(image_id "$TAG")" ]] || drop_old "$old"
[[ $old_build == "$(image_id "$BUILD_TAG")" ]] || drop_old "$old_build"
printf '[build-image] %s (%s, base %s)\n' "$TAG" \
  "$(docker image inspect -f '{{ .Size }}' "$TAG" | numfmt --to=iec)" "$BASE" >&2
