#!/usr/bin/env bash
# Puts what the client image build cannot download into the build context (compose/.build/):
#
#   compose/stage-build-inputs.sh [--no-npm-cache] [SPIRE_AGENT]
#
#   spire-agent   SPIRE_AGENT, else $SPIRE_AGENT_BIN, else `spire-agent` on PATH, else the bench's
#                 ${HPCS_STACK_CACHE:-~/.cache/hpcs-stack}/bin/spire-agent; debug symbols stripped
#                 (-30 MB) when `strip` is there. client/Dockerfile copies it (ARG SPIRE_AGENT).
#   npm-cache/    an npm cache holding exactly the packages of package-lock.json, filled here with
#                 this machine's npm (its registry, proxy and CA settings); the image build then
#                 runs `npm ci --offline` against it and needs no registry or TLS trust of its own.
#                 Refilled only when package-lock.json changes. --no-npm-cache empties it: the build
#                 runs a plain online `npm ci` instead.
#
# Then: docker-compose -f compose/docker-compose.yml build   (or docker build -f client/Dockerfile .)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/compose/.build

log() { printf '[stage] %s\n' "$*" >&2; }
die() { printf '[stage] error: %s\n' "$*" >&2; exit 1; }

find_agent() {
  local c
  for c in "${1:-}" "${SPIRE_AGENT_BIN:-}" "$(command -v spire-agent || true)" \
    "${HPCS_STACK_CACHE:-$HOME/.cache/hpcs-stack}/bin/spire-agent"; do
    if [[ -n $c && -x $c ]]; then echo "$c"; return 0; fi
  done
  die "no spire-agent binary: pass its path, set SPIRE_AGENT_BIN, or put it on PATH (a SPIRE release tarball's bin/spire-agent, or GOBIN=. go install github.com/spiffe/spire/cmd/spire-agent@v1.13.3)"
}

stage_agent() {
  local src tmp stamp
  src=$(find_agent "${1:-}")
  src=$(readlink -f "$src")
  mkdir -p "$OUT/spire"
  # Staged before from the same file: nothing to do (stripping takes a second or two).
  stamp="$src $(stat -c '%s %Y' "$src")"
  if [[ -x $OUT/spire/spire-agent && $(cat "$OUT/spire/.source" 2>/dev/null) == "$stamp" ]]; then
    log "spire-agent current ($src)"
    return 0
  fi
  tmp=$OUT/spire/spire-agent.tmp
  if command -v strip >/dev/null && strip -o "$tmp" "$src" 2>/dev/null && "$tmp" --version >/dev/null 2>&1; then :; else
    cp "$src" "$tmp"
  fi
  "$tmp" --version >/dev/null 2>&1 || die "$src does not run here (spire-agent --version failed)"
  # Replaced only when different: same bytes keep docker's COPY layer cache.
  if cmp -s "$tmp" "$OUT/spire/spire-agent"; then rm -f "$tmp"; else mv "$tmp" "$OUT/spire/spire-agent"; fi
  echo "$stamp" >"$OUT/spire/.source"
  log "spire-agent $("$OUT/spire/spire-agent" --version 2>&1) from $src"
}

stage_npm_cache() {
  local want have work
  want=$(sha256sum "$ROOT/package-lock.json" | cut -c1-16)
  have=$(cat "$OUT/npm-cache/.lock-hash" 2>/dev/null || true)
  [[ $want == "$have" ]] && { log "npm cache current"; return 0; }
  command -v npm >/dev/null || die "npm is missing: install Node 20, or pass --no-npm-cache to let the image build run npm ci online"
  log "filling the npm cache for package-lock.json"
  rm -rf "$OUT/npm-cache" "$OUT/npm-cache.tmp"
  work=$(mktemp -d)
  cp "$ROOT/package.json" "$ROOT/package-lock.json" "$work/"
  (cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error --cache "$OUT/npm-cache.tmp") >&2 ||
    { rm -rf "$work"; die "npm ci failed: the npm cache could not be filled"; }
  rm -rf "$work" "$OUT/npm-cache.tmp/_logs" "$OUT/npm-cache.tmp/_update-notifier-last-checked"
  echo "$want" >"$OUT/npm-cache.tmp/.lock-hash"
  mv "$OUT/npm-cache.tmp" "$OUT/npm-cache"
}

main() {
  local npm_cache=1
  if [[ ${1:-} == --no-npm-cache ]]; then npm_cache=0; shift; fi
  mkdir -p "$OUT"
  stage_agent "${1:-}"
  if ((npm_cache)); then
    stage_npm_cache
  else
    rm -rf "$OUT/npm-cache"
    log "no npm cache: the image build runs npm ci online"
  fi
}

main "$@"
