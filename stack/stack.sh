#!/usr/bin/env bash
# The test bench: real SPIRE, Vault, sshd, Slurm+MUNGE and dockerd on loopback.
#
#   stack.sh up       install what is missing, build/cached Go binaries, start everything (idempotent)
#   stack.sh down     stop exactly what `up` started (by pid); `down --purge` also wipes the state dir
#   stack.sh status   one line per component; exit 1 if any is down
#   stack.sh env      print the path of env.json
#
# One bench per machine: the daemons bind fixed loopback ports, so the state lives in one
# machine-wide directory (HPCS_STACK_DIR, default /var/lib/hpcs-stack) whichever clone runs it.
# Go binaries are cached in HPCS_STACK_CACHE (default ~/.cache/hpcs-stack) keyed by go.sum.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${HPCS_STACK_DIR:-/var/lib/hpcs-stack}
CACHE=${HPCS_STACK_CACHE:-$HOME/.cache/hpcs-stack}
BIN=$CACHE/bin
RUN=$STATE/run
LOGS=$STATE/logs

TRUST_DOMAIN=hpcs.test
HOST_SHORT=$(hostname -s)
SPIRE_PORT=8081
SPIRE_HEALTH_PORT=8082
OIDC_PORT=8443
OIDC_HEALTH_PORT=8444
VAULT_PORT=8200
SSH_PORT=2222
SLURMCTLD_PORT=6817
SLURMD_PORT=6818
DOCKER_SOCK=/var/run/docker.sock
SLURM_CONF=/etc/slurm/slurm.conf
TEST_USERS=(alice bob)
TEST_IMAGE=hpcs-bench/busybox:1

APT_PACKAGES=(gocryptfs fuse3 gnupg slurm-wlm munge openssh-server docker.io docker-compose runc crun
  squashfs-tools squashfuse shellcheck busybox-static jq openssl curl iproute2 procps debootstrap
  ansible ansible-lint)

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- processes

# pid_of NAME -> prints the pid if NAME's pidfile points at a live process running the expected binary.
pid_of() {
  local name=$1 pidfile=$RUN/$1.pid pid exe
  [[ -s $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [[ $exe == *"$(<"$RUN/$name.exe")"* ]] || return 1
  echo "$pid"
}

# start NAME CMD... -> runs CMD in the foreground of its own session, records its pid.
start() {
  local name=$1; shift
  if pid_of "$name" >/dev/null; then return 0; fi
  log "starting $name"
  # The binary the pid must run (START_EXE when CMD is a wrapper that execs it).
  echo "${START_EXE:-$(basename "$1")}" >"$RUN/$name.exe"
  setsid "$@" </dev/null >>"$LOGS/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
}

stop() {
  local name=$1 pid i
  if pid=$(pid_of "$name"); then
    log "stopping $name ($pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$RUN/$name.pid" "$RUN/$name.exe"
}

# wait_for DESC TIMEOUT_S CMD... -> polls CMD with backoff (0.1 s doubling to 2 s) until it succeeds.
wait_for() {
  local desc=$1 timeout=$2 delay=0.1 start=$SECONDS; shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS - start >= timeout)); then
      die "$desc not ready after ${timeout}s (see $LOGS)"
    fi
    sleep "$delay"
    delay=$(awk -v d="$delay" 'BEGIN { d *= 2; if (d > 2) d = 2; print d }')
  done
}

# ---------------------------------------------------------------- install and build

install_packages() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$LOGS/apt.log" 2>&1 ||
    die "apt-get install failed (see $LOGS/apt.log)"
}

# all_tools_built GO.MOD -> true when every `tool` package of the module has its binary in $BIN.
all_tools_built() {
  local t
  while read -r t; do
    [[ -x $BIN/$(basename "$t") ]] || return 1
  done < <(awk '/^tool \(/ { b = 1; next } b && /^\)/ { b = 0 } b { print $1 } /^tool [^(]/ { print $2 }' "$1")
}

# Each stack/go/<module> pins upstream tools with go.mod `tool` lines. A build is redone only
# when its go.mod/go.sum change (the stamp holds their hash).
build_go() {
  local mod hash stamp
  mkdir -p "$BIN"
  for mod in "$HERE"/go/*/; do
    mod=${mod%/}
    hash=$(cat "$mod/go.mod" "$mod/go.sum" | sha256sum | cut -c1-16)
    stamp=$BIN/.$(basename "$mod").stamp
    if [[ -f $stamp && $(<"$stamp") == "$hash" ]] && all_tools_built "$mod/go.mod"; then continue; fi
    log "building $(basename "$mod") tools (first time only; SPIRE and Vault take several minutes)"
    (cd "$mod" && GOBIN=$BIN go install -trimpath tool) >"$LOGS/go-$(basename "$mod").log" 2>&1 ||
      die "go build of $(basename "$mod") failed (see $LOGS/go-$(basename "$mod").log)"
    echo "$hash" >"$stamp"
  done
}

# ---------------------------------------------------------------- users, keys, certificates

ensure_users() {
  local u g
  for g in shared proj-a proj-b; do getent group "$g" >/dev/null || groupadd "$g"; done
  for u in "${TEST_USERS[@]}"; do
    getent passwd "$u" >/dev/null || useradd -m -s /bin/bash "$u"
    # '*' = no password, but not "locked": sshd without PAM refuses locked ('!') accounts.
    usermod -p '*' "$u"
  done
  usermod -a -G shared,proj-a alice
  usermod -a -G shared,proj-b bob
  mkdir -p "$STATE/ssh/authorized_keys" "$STATE/ssh/users"
  for u in "${TEST_USERS[@]}"; do
    mkdir -p "$STATE/ssh/users/$u"
    [[ -f $STATE/ssh/users/$u/id_ed25519 ]] ||
      ssh-keygen -q -t ed25519 -N '' -C "$u@hpcs-bench" -f "$STATE/ssh/users/$u/id_ed25519"
    install -m 0644 "$STATE/ssh/users/$u/id_ed25519.pub" "$STATE/ssh/authorized_keys/$u"
    # A shared "scratch" filesystem per user, as on a cluster's login/compute nodes.
    install -d -o "$u" -g "$u" -m 0700 "$STATE/scratch/$u"
  done
  chmod 0755 "$STATE/scratch"
}

# A private test CA and one loopback serving certificate (localhost, 127.0.0.1) for every
# TLS endpoint of the bench (OIDC discovery, Vault, later the hpcs server).
ensure_certs() {
  local d=$STATE/pki
  mkdir -p "$d"
  if [[ ! -f $d/ca.crt ]]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
      -subj "/CN=hpcs bench CA" -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  fi
  if [[ ! -f $d/localhost.crt ]]; then
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
      -keyout "$d/localhost.key" -out "$d/localhost.csr" 2>/dev/null
    openssl x509 -req -in "$d/localhost.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
      -days 3650 -out "$d/localhost.crt" \
      -extfile <(printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n') 2>/dev/null
    rm -f "$d/localhost.csr"
  fi
  chmod 0600 "$d"/*.key
}

# ---------------------------------------------------------------- components

spire_up() {
  local d=$STATE/spire/server
  mkdir -p "$d/data"
  cat >"$d/server.conf" <<EOF
server {
  bind_address = "127.0.0.1"
  bind_port = "$SPIRE_PORT"
  socket_path = "$d/api.sock"
  trust_domain = "$TRUST_DOMAIN"
  data_dir = "$d/data"
  log_level = "INFO"
  ca_ttl = "168h"
  default_x509_svid_ttl = "1h"
  default_jwt_svid_ttl = "5m"
  jwt_issuer = "https://localhost:$OIDC_PORT"
  # Per-job agents attest seconds after the hpcs server created their aliases: with the default 5 s
  # entry-cache reload their first sync can miss them (npm run bench -- job). Recommended for sites
  # running agent-model = per-job too (README).
  experimental {
    cache_reload_interval = "1s"
  }
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = "$d/data/datastore.sqlite3"
    }
  }
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "disk" {
    plugin_data {
      keys_path = "$d/data/keys.json"
    }
  }
}
health_checks {
  listener_enabled = true
  bind_address = "127.0.0.1"
  bind_port = "$SPIRE_HEALTH_PORT"
  live_path = "/live"
  ready_path = "/ready"
}
EOF
  start spire-server "$BIN/spire-server" run -config "$d/server.conf"
  wait_for "spire-server" 60 "$BIN/spire-server" healthcheck -socketPath "$d/api.sock"
  "$BIN/spire-server" bundle show -socketPath "$d/api.sock" >"$STATE/spire/bundle.pem"
}

oidc_up() {
  local d=$STATE/spire/oidc
  mkdir -p "$d"
  cat >"$d/oidc.conf" <<EOF
log_level = "info"
domains = ["localhost", "127.0.0.1"]
jwt_issuer = "https://localhost:$OIDC_PORT"
server_api {
  address = "unix://$STATE/spire/server/api.sock"
  poll_interval = "5s"
}
serving_cert_file {
  cert_file_path = "$STATE/pki/localhost.crt"
  key_file_path = "$STATE/pki/localhost.key"
  addr = "127.0.0.1:$OIDC_PORT"
}
health_checks {
  bind_port = "$OIDC_HEALTH_PORT"
  live_path = "/live"
  ready_path = "/ready"
}
EOF
  start oidc-discovery-provider "$BIN/oidc-discovery-provider" -config "$d/oidc.conf"
  wait_for "oidc-discovery-provider" 60 curl -fsS --cacert "$STATE/pki/ca.crt" "https://localhost:$OIDC_PORT/keys"
}

vault_cli() {
  VAULT_ADDR=https://127.0.0.1:$VAULT_PORT VAULT_CACERT=$STATE/pki/ca.crt \
    VAULT_TOKEN=$(jq -r .root_token "$STATE/vault/init.json" 2>/dev/null || true) "$BIN/vault" "$@"
}

vault_up() {
  local d=$STATE/vault
  mkdir -p "$d"
  # init.json holds the unseal key and root token: if it is lost, the data is useless.
  if [[ ! -s $d/init.json ]]; then rm -rf "$d/data"; fi
  mkdir -p "$d/data"
  cat >"$d/vault.hcl" <<EOF
storage "file" {
  path = "$d/data"
}
listener "tcp" {
  address = "127.0.0.1:$VAULT_PORT"
  tls_cert_file = "$STATE/pki/localhost.crt"
  tls_key_file = "$STATE/pki/localhost.key"
}
api_addr = "https://127.0.0.1:$VAULT_PORT"
disable_mlock = true
ui = false
EOF
  start vault "$BIN/vault" server -config "$d/vault.hcl"
  # sys/health answers (501 uninitialised, 503 sealed, 200 active) once the listener is up.
  wait_for "vault listener" 60 curl -sS --cacert "$STATE/pki/ca.crt" -o /dev/null "https://127.0.0.1:$VAULT_PORT/v1/sys/health"
  if [[ ! -s $d/init.json ]]; then
    log "initialising vault (1 key share; key and root token in $d/init.json, mode 0600)"
    (umask 077 && vault_cli operator init -key-shares=1 -key-threshold=1 -format=json >"$d/init.json.tmp")
    mv "$d/init.json.tmp" "$d/init.json"
  fi
  # `vault status` exits 2 while sealed, so read the answer rather than the exit code.
  if [[ $( (vault_cli status -format=json || true) | jq -r .sealed) == true ]]; then
    vault_cli operator unseal "$(jq -r '.unseal_keys_b64[0]' "$d/init.json")" >/dev/null
  fi
  wait_for "vault active" 60 vault_cli read -format=json sys/health
  vault_cli secrets list -format=json | jq -e '."kv/"' >/dev/null ||
    vault_cli secrets enable -path=kv -version=2 kv >/dev/null
  vault_cli auth list -format=json | jq -e '."jwt/"' >/dev/null ||
    vault_cli auth enable jwt >/dev/null
  # Vault fetches the discovery document when the config is written: the provider must be up.
  vault_cli write auth/jwt/config \
    oidc_discovery_url="https://localhost:$OIDC_PORT" \
    oidc_discovery_ca_pem=@"$STATE/pki/ca.crt" \
    bound_issuer="https://localhost:$OIDC_PORT" >/dev/null
}

sshd_up() {
  local d=$STATE/ssh
  mkdir -p "$d" /run/sshd
  [[ -f $d/ssh_host_ed25519_key ]] || ssh-keygen -q -t ed25519 -N '' -f "$d/ssh_host_ed25519_key"
  cat >"$d/sshd_config" <<EOF
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $d/ssh_host_ed25519_key
PidFile none
AuthorizedKeysFile $d/authorized_keys/%u
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers ${TEST_USERS[*]}
UsePAM no
X11Forwarding no
PrintMotd no
AcceptEnv LANG LC_*
SetEnv SLURM_CONF=$SLURM_CONF
Subsystem sftp internal-sftp
EOF
  /usr/sbin/sshd -t -f "$d/sshd_config" || die "sshd config invalid"
  printf '[127.0.0.1]:%s %s\n' "$SSH_PORT" "$(cut -d' ' -f1,2 "$d/ssh_host_ed25519_key.pub")" >"$d/known_hosts"
  start sshd /usr/sbin/sshd -D -e -f "$d/sshd_config"
  wait_for "sshd" 30 bash -c "exec 3<>/dev/tcp/127.0.0.1/$SSH_PORT"
}

# What udev does on a desktop: /dev/fuse usable by every user, so jobs can mount gocryptfs (fusermount3
# is setuid). Containers and minimal images often leave it root-only.
fuse_up() {
  [[ -c /dev/fuse ]] || mknod -m 0666 /dev/fuse c 10 229
  chmod 0666 /dev/fuse
}

munge_up() {
  install -d -o munge -g munge -m 0755 /run/munge
  [[ -s /etc/munge/munge.key ]] || { mungekey --create --keyfile /etc/munge/munge.key && chown munge:munge /etc/munge/munge.key; }
  # setpriv execs munged itself, so the recorded pid is the daemon's.
  START_EXE=munged start munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged -F
  wait_for "munged" 30 bash -c 'munge -n | unmunge'
}

slurm_up() {
  local d=$STATE/slurm node
  mkdir -p "$d/ctld" "$d/d" /etc/slurm
  node=$(slurmd -C | head -1 | sed 's/ UpTime=.*//')
  cat >"$SLURM_CONF.tmp" <<EOF
# Written by hpcs-ts stack/stack.sh (the test bench). Removed by 'stack.sh down'.
ClusterName=hpcs-bench
SlurmctldHost=$HOST_SHORT(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$SLURMCTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$d/ctld
SlurmdSpoolDir=$d/d
SlurmctldPidFile=$RUN/slurmctld.pidfile
SlurmdPidFile=$RUN/slurmd.pidfile
SlurmctldLogFile=$LOGS/slurmctld.daemon.log
SlurmdLogFile=$LOGS/slurmd.daemon.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
InactiveLimit=0
KillWait=10
MinJobAge=300
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$HOST_SHORT Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$SLURM_CONF.tmp" "$SLURM_CONF"
  start slurmctld /usr/sbin/slurmctld -D -f "$SLURM_CONF"
  wait_for "slurmctld" 60 scontrol ping
  start slurmd /usr/sbin/slurmd -D -f "$SLURM_CONF"
  wait_for "slurmd" 60 bash -c "sinfo -h -n $HOST_SHORT -o %t | grep -Eq '^(idle|mix|alloc)'"
}

docker_up() {
  if [[ ! -f $RUN/dockerd.pid ]] && docker -H "unix://$DOCKER_SOCK" info >/dev/null 2>&1; then
    log "a Docker engine not started by the stack already serves $DOCKER_SOCK: using it"
  else
    mkdir -p "$CACHE/docker" "$STATE/docker"
    start dockerd /usr/sbin/dockerd -H "unix://$DOCKER_SOCK" --data-root "$CACHE/docker" \
      --exec-root "$STATE/docker/exec" --pidfile "$STATE/docker/dockerd.pid"
    wait_for "dockerd" 60 docker -H "unix://$DOCKER_SOCK" info
  fi
  # No registry is reachable: the bench's base image is made from Debian's static busybox.
  if ! docker image inspect "$TEST_IMAGE" >/dev/null 2>&1; then
    local root
    root=$(mktemp -d)
    mkdir -p "$root/bin" "$root/tmp" "$root/etc"
    cp /bin/busybox "$root/bin/busybox"
    for c in sh ls cat echo id env sleep mkdir rm sha256sum tar printf true false; do ln -s busybox "$root/bin/$c"; done
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
    tar -C "$root" -c . | docker import -c 'CMD ["/bin/sh"]' - "$TEST_IMAGE" >/dev/null
    rm -rf "$root"
  fi
}

write_env() {
  local tmp=$STATE/env.json.tmp
  (umask 077 && jq -n \
    --arg state "$STATE" --arg bin "$BIN" --arg td "$TRUST_DOMAIN" --arg host "$HOST_SHORT" \
    --arg spirePort "$SPIRE_PORT" --arg oidcPort "$OIDC_PORT" --arg vaultPort "$VAULT_PORT" \
    --arg sshPort "$SSH_PORT" --arg slurmConf "$SLURM_CONF" --arg dockerSock "$DOCKER_SOCK" \
    --arg image "$TEST_IMAGE" --arg rootToken "$(jq -r .root_token "$STATE/vault/init.json")" \
    --argjson users "$(printf '%s\n' "${TEST_USERS[@]}" | jq -R . | jq -s .)" \
    '{
      state_dir: $state, bin_dir: $bin, trust_domain: $td, hostname: $host,
      ca_cert: "\($state)/pki/ca.crt",
      tls: { cert: "\($state)/pki/localhost.crt", key: "\($state)/pki/localhost.key" },
      spire: {
        server_address: "127.0.0.1", server_port: ($spirePort | tonumber),
        admin_socket: "\($state)/spire/server/api.sock",
        bundle: "\($state)/spire/bundle.pem",
        server_bin: "\($bin)/spire-server", agent_bin: "\($bin)/spire-agent",
        jwt_issuer: "https://localhost:\($oidcPort)"
      },
      oidc: { url: "https://localhost:\($oidcPort)" },
      vault: { url: "https://127.0.0.1:\($vaultPort)", root_token: $rootToken,
               kv_mount: "kv", jwt_mount: "jwt", bin: "\($bin)/vault" },
      ssh: { host: "127.0.0.1", port: ($sshPort | tonumber), known_hosts: "\($state)/ssh/known_hosts",
             users: ($users | map({ key: ., value: {
               name: ., key: "\($state)/ssh/users/\(.)/id_ed25519",
               scratch: "\($state)/scratch/\(.)" } }) | from_entries) },
      slurm: { conf: $slurmConf, partition: "debug", node: $host },
      munge: { socket: "/run/munge/munge.socket.2" },
      docker: { socket: $dockerSock, test_image: $image },
      tools: { siftool: "\($bin)/siftool", helm: "\($bin)/helm" }
    }' >"$tmp")
  mv "$tmp" "$STATE/env.json"
  mkdir -p "$HERE/../.stack"
  ln -sfn "$STATE/env.json" "$HERE/../.stack/env.json"
}

# ---------------------------------------------------------------- commands

COMPONENTS=(spire-server oidc-discovery-provider vault sshd munged slurmctld slurmd dockerd)

cmd_up() {
  [[ $(id -u) == 0 ]] || die "the bench needs root (it installs packages, creates users, starts daemons)"
  local t0=$SECONDS
  mkdir -p "$STATE" "$RUN" "$LOGS"
  chmod 0755 "$STATE"
  install_packages
  build_go
  ensure_users
  ensure_certs
  spire_up
  oidc_up
  vault_up
  sshd_up
  fuse_up
  munge_up
  slurm_up
  docker_up
  bash "$HERE/base-image.sh" # hpcs-bench/node:20 for the client image (cached: a second when current)
  write_env
  log "up in $((SECONDS - t0))s; env: $STATE/env.json"
}

cmd_down() {
  local c
  for c in dockerd slurmd slurmctld munged sshd vault oidc-discovery-provider spire-server; do stop "$c"; done
  if [[ -f $SLURM_CONF ]] && grep -q 'hpcs-ts stack/stack.sh' "$SLURM_CONF"; then rm -f "$SLURM_CONF"; fi
  rm -f "$HERE/../.stack/env.json"
  if [[ ${1:-} == --purge ]]; then
    log "purging $STATE"
    rm -rf "$STATE"
  fi
}

check() {
  case $1 in
    spire-server) "$BIN/spire-server" healthcheck -socketPath "$STATE/spire/server/api.sock" ;;
    oidc-discovery-provider) curl -fsS --cacert "$STATE/pki/ca.crt" "https://localhost:$OIDC_PORT/keys" ;;
    vault) vault_cli status -format=json | jq -e '.sealed == false' ;;
    sshd) pid_of sshd && bash -c "exec 3<>/dev/tcp/127.0.0.1/$SSH_PORT" ;;
    munged) munge -n | unmunge ;;
    slurmctld) scontrol ping | grep -q UP ;;
    slurmd) sinfo -h -n "$HOST_SHORT" -o %t | grep -Eq '^(idle|mix|alloc)' ;;
    dockerd) docker -H "unix://$DOCKER_SOCK" info ;;
  esac
}

cmd_status() {
  local c bad=0 t
  for c in "${COMPONENTS[@]}"; do
    if check "$c" >/dev/null 2>&1; then printf '%-26s up\n' "$c"; else printf '%-26s down\n' "$c"; bad=1; fi
  done
  for t in gocryptfs gpg runc crun mksquashfs squashfuse shellcheck "$BIN/siftool" "$BIN/helm" ansible-playbook ansible-lint; do
    if command -v "$t" >/dev/null; then printf '%-26s installed\n' "$(basename "$t")"; else printf '%-26s missing\n' "$(basename "$t")"; bad=1; fi
  done
  return $bad
}

# Sourcing (for debugging one component) defines the functions without running a command.
[[ ${BASH_SOURCE[0]} == "$0" ]] || return 0

case ${1:-} in
  up) cmd_up ;;
  down) shift; cmd_down "$@" ;;
  status) cmd_status ;;
  env) echo "$STATE/env.json" ;;
  *) echo "usage: stack.sh up | down [--purge] | status | env" >&2; exit 2 ;;
esac
