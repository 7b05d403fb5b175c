#!/bin/bash
# shellcheck disable=SC2154,SC2317 # HPCS_* come from the rendered header; clean-up runs from traps
#
# hpcs job runtime: the body of every job script `hpcs job-prep` submits. client/job-prep/
# job-script.ts (renderJobScript) writes `#!/bin/bash`, the validated #SBATCH lines and the job's
# values as readonly single-quoted variables and arrays, then appends this file unchanged. Nothing
# here interprets a value as code: values are only ever expanded inside double quotes.
#
# Steps (DESIGN.md flows 4 and 5):
#   1. MUNGE-attest this node and user to the hpcs server (POST /v1/nodes/token), start a per-job
#      spire-agent (join_token attestor, memory keys, unix workload attestor) in a private 0700
#      node-local dir; the join token is only in its config file there, never on argv.
#   2. A JWT-SVID per artifact identity (retried ~30 s while entries propagate), Vault login with the
#      artifact's role, its passphrase read (data.data.passphrase); the Vault token is revoked.
#   3. Every artifact's sha256 checked against its info file before anything is decrypted.
#   4. Two gocryptfs volumes (cipher dirs under the job dir on shared storage, mounted in the private
#      dir; random passwords on stdin, held only in shell variables); data decrypted with gpg
#      straight into the input volume, the SIF into the private dir (node-local memory).
#   5. The app: apptainer/singularity `run` of the SIF when the node has one (runtime auto), else
#      runc/crun on the SIF's squashfs partition unpacked into the private dir, with a rootless OCI
#      config rendered at submission time (only the mount points and uid/gid are filled in here).
#   6. The output volume tarred and encrypted to the job's public key (also when the app failed):
#      <workdir>/output/<job name>-<job id>.tar.gpg (.part, then renamed).
#   7. On every exit path (EXIT, TERM from scancel/time limit, INT): app stopped, output encrypted
#      if the app ran, volumes unmounted, agent stopped, POST /v1/nodes/end-job, private dir wiped.
#
# Secrets (join token, SVIDs, Vault tokens, passphrases, volume passwords) live in shell variables
# and reach programs only through pipes, process substitution or the agent's 0600 config in the
# private dir; never argv, never shared storage, never the log.
#
# Log lines start with "hpcs-job:"; the last one is "hpcs-job: result <path>" on success or
# "hpcs-job: failed: <reason>".
#
# Optional environment (sbatch exports the submitter's): HPCS_PRIVATE_ROOT, the node-local tmpfs for
# the private dir (default /dev/shm); HPCS_NO_JQ=1 parses JSON answers without jq even where it exists;
# HPCS_TIMING=1 adds "mark <event> <uptime>" lines (the job benchmark).
# Written for bash >= 4.2 (possibly empty arrays are expanded as ${a[@]+"${a[@]}"}).
#
# Exit codes:
#   0        the app and every step succeeded
#   1-199    the app's own exit code (its stdout.log, stderr.log and exit_code are in the encrypted
#            result, whose path is logged before the final line)
#   200      this node lacks something: a tool, a private node-local dir, the Slurm environment
#   201      node attestation failed (MUNGE credential, join token, per-job spire-agent)
#   202      no JWT-SVID for an artifact's identity (not granted to this node and user, or expired)
#   203      Vault refused the login or the secret read
#   204      an artifact's sha256 differs from its info file or it cannot be read (nothing decrypted)
#   205      decryption, the encrypted volumes or their clean-up failed
#   206      the container runtime could not be prepared or started
#   207      the output could not be encrypted or stored
#   130/143  interrupted (INT) / terminated (TERM: scancel, time limit)
# An app exit code in 200-207 is indistinguishable by code alone; the log line says which it was.

set -uo pipefail
umask 077
export LC_ALL=C

log() { printf 'hpcs-job: %s\n' "$*"; }

# HPCS_TIMING=1 (set by `npm run bench -- job`): "hpcs-job: mark <event> <seconds>" lines, read
# from /proc/uptime because that clock is the same inside the container, where the app marks its
# own first instruction.
mark() {
  local up
  if [[ ${HPCS_TIMING:-} == 1 ]] && read -r up _ </proc/uptime; then log "mark $1 $up"; fi
}

# State the EXIT trap reads.
FAIL_REASON=""
RESULT=""
PRIV=""
SOCK=""
AGENT_PID=""
JOIN_TOKEN=""
APP_PID=""
APP_STARTED=0
APP_RC=""
OUTPUT_DONE=0
OUTPUT_ERR=""
CONTAINER_ID=""
RUNTIME_USED=""
VOL_BASE=""
IN_MNT=""
OUT_MNT=""
IN_MOUNTED=0
OUT_MOUNTED=0
NODE=""
USER_NAME=""
REQUEST_ID=""
FUSERMOUNT=""
HTTP_STATUS=""
HTTP_BODY=""
SVID=""
SVID_ERR=""
declare -a PASS=()

# Ends the job with `code`; the EXIT trap cleans up and prints the reason as the last line.
fail() {
  local code=$1
  shift
  FAIL_REASON=$*
  exit "$code"
}

# A random token of URL-safe base64 characters from `bytes` random bytes.
random_token() {
  head -c "$1" /dev/urandom | base64 -w0 | tr '+/' '-_' | tr -d '='
}

# Printable, one line, bounded: for messages from servers and tools that end up in the log.
one_line() {
  local s=${1//[^[:print:]]/ }
  printf '%s' "${s:0:300}"
}

# http_call METHOD URL CAFILE [curl options...]: request body on stdin (if any); sets HTTP_STATUS
# (000 when there was no HTTP answer) and HTTP_BODY. Runs in the current shell so that secrets in
# the answer stay in variables.
http_call() {
  local method=$1 url=$2 ca=$3 out
  shift 3
  local -a opts=(--silent --show-error --globoff --max-time 30 --request "$method" --write-out '\n%{http_code}')
  if [[ -n $ca ]]; then opts+=(--cacert "$ca"); fi
  if ! out=$(curl "${opts[@]}" "$@" -- "$url" 2>&1); then
    HTTP_STATUS=000
    HTTP_BODY=$(one_line "$out")
    return 1
  fi
  HTTP_STATUS=${out##*$'\n'}
  HTTP_BODY=${out%$'\n'*}
  return 0
}

# json_field JSON JQ-PATH KEY ERE: the string at JQ-PATH (with jq) or the first "KEY": "..." value
# (without), printed only if it matches ^ERE$. Either way the value's charset is checked, so a
# value never carries quotes, spaces or control characters into the rest of the script.
json_field() {
  local json=$1 path=$2 key=$3 ere=$4 v="" re
  if [[ -z ${HPCS_NO_JQ:-} ]] && command -v jq >/dev/null 2>&1; then
    v=$(jq -r "$path // empty" < <(printf '%s' "$json") 2>/dev/null) || v=""
  else
    re="\"$key\"[[:space:]]*:[[:space:]]*\"([^\"\\\\]*)\""
    if [[ $json =~ $re ]]; then v=${BASH_REMATCH[1]}; fi
  fi
  re="^($ere)$"
  [[ $v =~ $re ]] || return 1
  printf '%s' "$v"
}

# The error message of a JSON error answer (hpcs server or Vault), for the log.
error_message() {
  local re='"message"[[:space:]]*:[[:space:]]*"([^"]*)"' re2='"errors"[[:space:]]*:[[:space:]]*\[[[:space:]]*"([^"]*)"'
  if [[ $1 =~ $re ]] || [[ $1 =~ $re2 ]]; then
    one_line "${BASH_REMATCH[1]}"
  else
    one_line "${1:0:200}"
  fi
}

# ---------------------------------------------------------------- step 0: this node

check_node() {
  [[ ${SLURM_JOB_ID:-} =~ ^[0-9]+(_[0-9]+)?$ ]] || fail 200 "SLURM_JOB_ID is not set: submit this script with sbatch"
  NODE=$(hostname -s) || fail 200 "hostname -s failed"
  USER_NAME=$(id -un) || fail 200 "id -un failed"
  [[ $NODE =~ ^[a-z0-9]([a-z0-9.-]{0,252})$ ]] || fail 200 "node name '$(one_line "$NODE")' is not a lower-case host name"
  [[ $USER_NAME =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || fail 200 "user name '$(one_line "$USER_NAME")' is not a portable user name"
  local t
  FUSERMOUNT=$(command -v fusermount3 || command -v fusermount) || fail 200 "neither fusermount3 nor fusermount is available on $NODE: install fuse3"
  for t in curl munge gpg gpgconf tar sha256sum head base64 od "$HPCS_SPIRE_AGENT" "$HPCS_GOCRYPTFS"; do
    command -v "$t" >/dev/null 2>&1 || fail 200 "$t is not available on $NODE: install it or ship it with job-prep"
  done
  case $HPCS_RUNTIME in
    auto)
      for t in apptainer singularity runc crun; do
        if command -v "$t" >/dev/null 2>&1; then
          RUNTIME_USED=$t
          break
        fi
      done
      [[ -n $RUNTIME_USED ]] || fail 200 "no container runtime (apptainer, singularity, runc, crun) on $NODE"
      ;;
    *)
      command -v "$HPCS_RUNTIME" >/dev/null 2>&1 || fail 200 "runtime $HPCS_RUNTIME is not available on $NODE: pick another with job-prep's runtime option"
      RUNTIME_USED=$HPCS_RUNTIME
      ;;
  esac
  if [[ $RUNTIME_USED == runc || $RUNTIME_USED == crun ]]; then
    command -v unsquashfs >/dev/null 2>&1 || fail 200 "unsquashfs is needed to run the image with $RUNTIME_USED on $NODE"
  fi
  local root=${HPCS_PRIVATE_ROOT:-/dev/shm}
  sweep_stale "$root"
  PRIV=$(mktemp -d "$root/hpcs-job-$SLURM_JOB_ID.XXXXXXXXXX") || fail 200 "cannot create a private dir in $root (node-local memory): set HPCS_PRIVATE_ROOT to a node-local tmpfs"
  chmod 700 "$PRIV" || fail 200 "cannot make $PRIV private"
  [[ $PRIV =~ ^/[A-Za-z0-9/._-]+$ ]] || fail 200 "private dir $PRIV has characters the runtime configs cannot take: set HPCS_PRIVATE_ROOT to a plain path"
  mkdir -m 700 "$PRIV/gnupg" || fail 200 "cannot create $PRIV/gnupg"
  export GNUPGHOME=$PRIV/gnupg
  # Sent as X-Request-Id with every call to the hpcs server: its audit lines carry the same id.
  REQUEST_ID=hpcs-job-$SLURM_JOB_ID-$(random_token 6)
  log "job $SLURM_JOB_ID on $NODE as $USER_NAME, runtime $RUNTIME_USED, private dir $PRIV, request id $REQUEST_ID"
}

# Private dirs of this user's earlier jobs that ended without their clean-up (SIGKILL after Slurm's
# KillWait, a node crash): they may hold plaintext, so unmount and remove them. Only when squeue
# answers, and never the dir of a job it lists.
sweep_stale() {
  local root=$1 list running d id m
  list=$(squeue -h -u "$USER_NAME" -o %A 2>/dev/null) || return 0
  running=" ${list//$'\n'/ } "
  for d in "$root"/hpcs-job-*; do
    [[ -d $d && -O $d && ! -L $d ]] || continue
    id=${d##*/hpcs-job-}
    id=${id%%.*}
    [[ $id =~ ^[0-9]+$ ]] || continue
    [[ $id == "$SLURM_JOB_ID" || $running == *" $id "* ]] && continue
    log "removing the private dir of ended job $id: $d"
    for m in "$d/input" "$d/output"; do
      if grep -qF " $m fuse" /proc/mounts; then "$FUSERMOUNT" -u -z -- "$m" 2>/dev/null; fi
    done
    rm -rf --one-file-system -- "$d" 2>/dev/null || log "warning: could not remove all of $d"
  done
}

# ---------------------------------------------------------------- step 1: node attestation

attest_node() {
  local attempt nonce payload cred delay=1
  for attempt in 1 2 3 4 5; do
    nonce=$(random_token 24)
    payload=$(printf '{"aud":"hpcs-node-token","node":"%s","user":"%s","nonce":"%s"}' "$NODE" "$USER_NAME" "$nonce")
    cred=$(munge -s "$payload") || fail 201 "munge could not create a credential: is munged running on $NODE?"
    [[ $cred =~ ^MUNGE:[A-Za-z0-9+/]+={0,2}:$ ]] || fail 201 "munge returned no armored credential"
    if http_call POST "$HPCS_SERVER_URL/v1/nodes/token" "$HPCS_SERVER_CA" \
      -H 'Content-Type: application/json' -H "X-Request-Id: $REQUEST_ID" --data-binary @- \
      < <(printf '{"node":"%s","user":"%s","mungeCredential":"%s"}' "$NODE" "$USER_NAME" "$cred"); then
      [[ $HTTP_STATUS == 200 ]] && break
      case $HTTP_STATUS in
        429 | 5??) ;;
        *) fail 201 "the hpcs server refused a join token for $USER_NAME on $NODE (HTTP $HTTP_STATUS: $(error_message "$HTTP_BODY"))" ;;
      esac
    fi
    [[ $attempt == 5 ]] && fail 201 "no join token from the hpcs server at $HPCS_SERVER_URL (HTTP $HTTP_STATUS: $(error_message "$HTTP_BODY"))"
    log "hpcs server not ready (HTTP $HTTP_STATUS), retrying in $delay s"
    sleep "$delay"
    delay=$((delay * 2))
  done
  JOIN_TOKEN=$(json_field "$HTTP_BODY" .joinToken joinToken '[A-Za-z0-9-]{1,128}') ||
    fail 201 "the hpcs server's answer has no valid joinToken"
  log "node attested by MUNGE: join token issued for $USER_NAME on $NODE"
}

agent_log_tail() {
  local line
  tail -n 3 "$PRIV/agent/agent.log" 2>/dev/null | while IFS= read -r line; do
    one_line "${line//"$JOIN_TOKEN"/<join token>}"
    printf ' | '
  done
}

start_agent() {
  local dir=$PRIV/agent
  mkdir -m 700 "$dir" "$dir/data" || fail 201 "cannot create $dir"
  SOCK=$dir/agent.sock
  # A copy beside the config: the HCL file then names only paths of the private dir.
  cp -- "$HPCS_SPIRE_BUNDLE" "$dir/bundle.pem" || fail 201 "cannot read the SPIRE trust bundle $HPCS_SPIRE_BUNDLE"
  {
    printf '%s\n' 'agent {'
    printf '  %s = "%s"\n' data_dir "$dir/data" log_level WARN server_address "$HPCS_SPIRE_ADDRESS" \
      server_port "$HPCS_SPIRE_PORT" socket_path "$SOCK" trust_bundle_path "$dir/bundle.pem" \
      trust_domain "$HPCS_TRUST_DOMAIN" join_token "$JOIN_TOKEN"
    # A short job waits for its first SVIDs: sync every 2 s instead of 5 (the agent lives one job).
    printf '%s\n' '  experimental { sync_interval = "2s" }' '}' 'plugins {' '  NodeAttestor "join_token" { plugin_data {} }' \
      '  KeyManager "memory" { plugin_data {} }' '  WorkloadAttestor "unix" { plugin_data {} }' '}'
  } >"$dir/agent.conf" || fail 201 "cannot write the spire-agent config in $dir"
  "$HPCS_SPIRE_AGENT" run -config "$dir/agent.conf" </dev/null >"$dir/agent.log" 2>&1 &
  AGENT_PID=$!
  local deadline=$((SECONDS + 60)) i=0
  local -a delays=(0.1 0.2 0.4 0.8 1.6 2)
  until "$HPCS_SPIRE_AGENT" healthcheck -socketPath "$SOCK" >/dev/null 2>&1; do
    kill -0 "$AGENT_PID" 2>/dev/null || fail 201 "spire-agent exited: $(agent_log_tail)"
    ((SECONDS < deadline)) || fail 201 "spire-agent not healthy within 60 s: $(agent_log_tail)"
    sleep "${delays[i]}"
    ((i < ${#delays[@]} - 1)) && i=$((i + 1))
  done
  log "per-job spire-agent healthy (pid $AGENT_PID)"
}

# ---------------------------------------------------------------- step 2: SVIDs and keys

# fetch_svid SPIFFE-ID: sets SVID, or returns 1 after ~30 s with the agent's last answer in SVID_ERR.
fetch_svid() {
  local id=$1 out deadline=$((SECONDS + 30)) i=0
  local -a delays=(0.25 0.25 0.25 0.25 0.5)
  local re='(eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)'
  SVID=""
  SVID_ERR=""
  while :; do
    if out=$("$HPCS_SPIRE_AGENT" api fetch jwt -audience "$HPCS_VAULT_AUDIENCE" -spiffeID "$id" -socketPath "$SOCK" 2>&1); then
      if [[ $out =~ $re ]]; then
        SVID=${BASH_REMATCH[1]}
        return 0
      fi
      SVID_ERR="no JWT in the agent's answer"
    else
      SVID_ERR=$(one_line "${out##*$'\n'}")
    fi
    ((SECONDS < deadline)) || return 1
    sleep "${delays[i]}"
    ((i < ${#delays[@]} - 1)) && i=$((i + 1))
  done
}

# vault_call METHOD PATH TOKEN BODY: a Vault API call (token and body may be empty), retried twice
# when Vault gives no answer, 429 or 5xx (a standby, a restart). Sets HTTP_STATUS and HTTP_BODY.
vault_call() {
  local method=$1 url=$HPCS_VAULT_URL/v1/$2 token=$3 body=$4 attempt
  for attempt in 1 2 3; do
    if [[ -n $token ]]; then
      http_call "$method" "$url" "$HPCS_VAULT_CA" -H 'Content-Type: application/json' \
        -H @<(printf 'X-Vault-Token: %s\n' "$token") --data-binary @- < <(printf '%s' "$body")
    else
      http_call "$method" "$url" "$HPCS_VAULT_CA" -H 'Content-Type: application/json' \
        --data-binary @- < <(printf '%s' "$body")
    fi
    case $HTTP_STATUS in
      000 | 429 | 5??) ((attempt < 3)) && sleep "$attempt" ;;
      *) return 0 ;;
    esac
  done
}

# vault_passphrase INDEX: logs in with the artifact's role and SVID, reads its passphrase into PASS.
vault_passphrase() {
  local i=$1 token pass
  local role=${HPCS_ART_ROLE[i]} path=${HPCS_ART_SECRET[i]}
  vault_call POST "auth/$HPCS_JWT_MOUNT/login" "" "$(printf '{"role":"%s","jwt":"%s"}' "$role" "$SVID")"
  [[ $HTTP_STATUS == 200 ]] || fail 203 "Vault refused the login with role $role (HTTP $HTTP_STATUS: $(error_message "$HTTP_BODY"))"
  token=$(json_field "$HTTP_BODY" .auth.client_token client_token '[A-Za-z0-9._-]{1,1024}') ||
    fail 203 "Vault's login answer for role $role has no valid client_token"
  vault_call GET "$path" "$token" ""
  local status=$HTTP_STATUS body=$HTTP_BODY
  # The token has done its job: revoke it whatever the read gave.
  vault_call POST auth/token/revoke-self "$token" "" || true
  [[ $status == 200 ]] || fail 203 "Vault refused reading $path (HTTP $status: $(error_message "$body"))"
  pass=$(json_field "$body" .data.data.passphrase passphrase '[A-Za-z0-9+/=_.~-]{16,1024}') ||
    fail 203 "the secret at $path has no valid field passphrase"
  PASS[i]=$pass
}

fetch_keys() {
  local i
  for i in "${!HPCS_ART_PATH[@]}"; do
    fetch_svid "${HPCS_ART_SPIFFE_ID[i]}" ||
      fail 202 "no JWT-SVID for ${HPCS_ART_SPIFFE_ID[i]} within 30 s: ${HPCS_ART_PATH[i]} is not granted to $USER_NAME on $NODE, or the grant expired (agent: $SVID_ERR)"
    vault_passphrase "$i"
    log "key for ${HPCS_ART_PATH[i]} obtained (identity ${HPCS_ART_SPIFFE_ID[i]})"
  done
  SVID=""
}

# ---------------------------------------------------------------- step 3: checksums

verify_checksums() {
  local i sum
  for i in "${!HPCS_ART_PATH[@]}"; do
    sum=$(sha256sum <"${HPCS_ART_PATH[i]}") || fail 204 "cannot read ${HPCS_ART_PATH[i]}"
    sum=${sum%% *}
    [[ $sum == "${HPCS_ART_SHA256[i]}" ]] ||
      fail 204 "checksum mismatch for ${HPCS_ART_PATH[i]}: sha256 $sum, its info file says ${HPCS_ART_SHA256[i]}; nothing was decrypted"
  done
  log "checksums of ${#HPCS_ART_PATH[@]} artifacts verified"
}

# ---------------------------------------------------------------- step 4: volumes and decryption

# make_volume NAME: an initialised, mounted gocryptfs volume; prints nothing, sets IN_/OUT_ state.
make_volume() {
  local name=$1 pw cipher=$VOL_BASE/$1 mnt=$PRIV/$1
  mkdir -m 700 "$cipher" "$mnt" || fail 205 "cannot create the $name volume dirs"
  pw=$(random_token 32)
  # -scryptn 10 (the minimum): the password is 256 random bits, not a human's, so a slow KDF adds
  # nothing but ~0.25 s per init and per mount (npm run bench -- job).
  printf '%s\n' "$pw" | "$HPCS_GOCRYPTFS" -init -q -nosyslog -scryptn 10 -- "$cipher" >/dev/null ||
    fail 205 "gocryptfs -init failed for the $name volume in $cipher"
  printf '%s\n' "$pw" | "$HPCS_GOCRYPTFS" -q -nosyslog -- "$cipher" "$mnt" >/dev/null ||
    fail 205 "gocryptfs could not mount the $name volume at $mnt (is FUSE available on $NODE?)"
  if [[ $name == input ]]; then
    IN_MNT=$mnt
    IN_MOUNTED=1
  else
    OUT_MNT=$mnt
    OUT_MOUNTED=1
  fi
}

# gpg_decrypt INDEX: the artifact's plaintext on stdout; the passphrase through a pipe on fd 3.
gpg_decrypt() {
  gpg --batch --quiet --no-tty --no-symkey-cache --pinentry-mode loopback --passphrase-fd 3 \
    --decrypt -- "${HPCS_ART_PATH[$1]}" 3< <(printf '%s\n' "${PASS[$1]}")
}

decrypt_all() {
  VOL_BASE=$HPCS_JOB_DIR/volumes-$SLURM_JOB_ID
  mkdir -m 700 -- "$VOL_BASE" || fail 205 "cannot create $VOL_BASE for the encrypted volumes"
  make_volume input
  make_volume output
  log "encrypted volumes mounted"
  mark decrypt-begin
  local i name
  for i in "${!HPCS_ART_PATH[@]}"; do
    name=${HPCS_ART_NAME[i]}
    case ${HPCS_ART_PAYLOAD[i]} in
      sif)
        gpg_decrypt "$i" >"$PRIV/image.sif" || fail 205 "gpg could not decrypt the image ${HPCS_ART_PATH[i]}"
        ;;
      tar)
        mkdir -m 700 -- "$IN_MNT/$name" || fail 205 "cannot create $name in the input volume"
        # 1 MiB records (-b 2048, -B: whole records from the pipe): tar writes file data a record at a
        # time, and each write is one FUSE request; 10 KiB records make unpacking ~4x slower
        # (npm run bench -- job).
        gpg_decrypt "$i" | tar -x -B -b 2048 -f - -C "$IN_MNT/$name" --no-same-owner
        [[ ${PIPESTATUS[0]} == 0 && ${PIPESTATUS[1]} == 0 ]] || fail 205 "cannot decrypt and unpack ${HPCS_ART_PATH[i]}"
        ;;
      file)
        # Through cat: gpg's own small writes into the FUSE volume are ~4x slower (npm run bench -- job).
        gpg_decrypt "$i" | cat >"$IN_MNT/$name"
        [[ ${PIPESTATUS[0]} == 0 && ${PIPESTATUS[1]} == 0 ]] || fail 205 "gpg could not decrypt ${HPCS_ART_PATH[i]}"
        ;;
    esac
    PASS[i]=""
  done
  log "artifacts decrypted into the input volume and private memory"
}

# ---------------------------------------------------------------- step 5: the app

# Offset of the SIF's primary squashfs partition (descriptor datatype 0x4004, fstype 1, parttype 2).
sif_partition_offset() {
  local sif=$1 magic total doff i base
  i64() { od -An -t d8 -j "$1" -N 8 -- "$sif" | tr -d ' '; }
  i32() { od -An -t d4 -j "$1" -N 4 -- "$sif" | tr -d ' '; }
  magic=$(od -An -c -j 32 -N 9 -- "$sif" | tr -d ' ')
  [[ $magic == SIF_MAGIC ]] || return 1
  total=$(i64 88)
  doff=$(i64 96)
  [[ $total =~ ^[0-9]{1,3}$ && $doff =~ ^[0-9]+$ ]] || return 1
  for ((i = 0; i < total; i++)); do
    base=$((doff + i * 585))
    [[ $(i32 "$base") == 16388 && $(od -An -t u1 -j $((base + 4)) -N 1 -- "$sif" | tr -d ' ') == 1 ]] || continue
    [[ $(i32 $((base + 201))) == 1 && $(i32 $((base + 205))) == 2 ]] || continue
    i64 $((base + 17))
    return 0
  done
  return 1
}

prepare_oci_bundle() {
  local off bundle=$PRIV/bundle
  off=$(sif_partition_offset "$PRIV/image.sif") || fail 206 "the decrypted image is not a SIF with a squashfs system partition"
  mkdir -m 700 "$bundle" "$PRIV/runtime-root" || fail 206 "cannot create the OCI bundle in $PRIV"
  unsquashfs -no-progress -no-xattrs -o "$off" -d "$bundle/rootfs" "$PRIV/image.sif" >/dev/null ||
    log "unsquashfs reported errors (as a non-root user it cannot create device nodes); continuing"
  [[ -x $bundle/rootfs/sd-container/tools/entrypoint ]] || fail 206 "the unpacked image has no /sd-container/tools/entrypoint: prepare it with hpcs container-prep"
  rm -f "$PRIV/image.sif"
  local uid gid
  uid=$(id -u) || fail 206 "id -u failed"
  gid=$(id -g) || fail 206 "id -g failed"
  printf '%s' "${HPCS_OCI_CONFIG[0]}" "\"$IN_MNT\"" "${HPCS_OCI_CONFIG[1]}" "\"$OUT_MNT\"" \
    "${HPCS_OCI_CONFIG[2]}" "$uid" "${HPCS_OCI_CONFIG[3]}" "$gid" "${HPCS_OCI_CONFIG[4]}" >"$bundle/config.json" ||
    fail 206 "cannot write $bundle/config.json"
  local flag
  for flag in ${HPCS_OCI_IGNORED_FLAGS[@]+"${HPCS_OCI_IGNORED_FLAGS[@]}"}; do
    log "$RUNTIME_USED: ignoring singularity flag '$(one_line "$flag")' (only --env/-e apply)"
  done
}

start_app() {
  case $RUNTIME_USED in
    apptainer | singularity)
      local -a binds=(--bind "$IN_MNT:/sd-container/encrypted" --bind "$OUT_MNT:/sd-container/output")
      if [[ -n $HPCS_INPUT_SCRIPTS ]]; then binds+=(--bind "$HPCS_INPUT_SCRIPTS:/sd-container/tools/input_logic/jobs:ro"); fi
      if [[ -n $HPCS_OUTPUT_SCRIPTS ]]; then binds+=(--bind "$HPCS_OUTPUT_SCRIPTS:/sd-container/tools/output_logic/jobs:ro"); fi
      "$RUNTIME_USED" run "${binds[@]}" ${HPCS_SINGULARITY_FLAGS[@]+"${HPCS_SINGULARITY_FLAGS[@]}"} \
        "$PRIV/image.sif" ${HPCS_ARGS[@]+"${HPCS_ARGS[@]}"} </dev/null &
      ;;
    runc | crun)
      prepare_oci_bundle
      CONTAINER_ID=hpcs-$SLURM_JOB_ID-$(od -An -N 4 -t x4 /dev/urandom | tr -d ' ')
      "$RUNTIME_USED" --root "$PRIV/runtime-root" run --bundle "$PRIV/bundle" "$CONTAINER_ID" </dev/null &
      ;;
  esac
  APP_PID=$!
  APP_STARTED=1
  log "app started with $RUNTIME_USED"
}

stop_app() {
  [[ -n $APP_PID ]] || return 0
  if kill -0 "$APP_PID" 2>/dev/null; then
    log "stopping the app"
    kill -TERM "$APP_PID" 2>/dev/null
    local n=0
    while kill -0 "$APP_PID" 2>/dev/null && ((n < 50)); do
      sleep 0.1
      n=$((n + 1))
    done
    kill -KILL "$APP_PID" 2>/dev/null
  fi
  wait "$APP_PID" 2>/dev/null
  APP_PID=""
}

# ---------------------------------------------------------------- step 6: output

# Sets RESULT, or OUTPUT_ERR and returns 1. Never calls fail: it also runs inside the EXIT trap.
encrypt_output() {
  OUTPUT_DONE=1
  local dir=$HPCS_WORKDIR/output
  local final=$dir/$HPCS_JOB_NAME-$SLURM_JOB_ID.tar.gpg
  local part=$final.part
  # Where the whole job gets SIGTERM (proctrack/cgroup), gocryptfs may have unmounted itself: an
  # empty mount point must not pass for the app's output.
  if ! grep -qF " $OUT_MNT fuse" /proc/mounts; then
    OUTPUT_ERR="the output volume is no longer mounted (gocryptfs stopped): no output to store"
    return 1
  fi
  if ! mkdir -p -- "$dir"; then
    OUTPUT_ERR="cannot create $dir"
    return 1
  fi
  tar -C "$OUT_MNT" -cf - . | gpg --batch --quiet --no-tty --yes --trust-model always \
    --recipient-file "$HPCS_OUTPUT_KEY" --encrypt --output "$part"
  if [[ ${PIPESTATUS[0]} != 0 || ${PIPESTATUS[1]} != 0 ]]; then
    rm -f -- "$part"
    OUTPUT_ERR="cannot encrypt the output to $HPCS_OUTPUT_KEY"
    return 1
  fi
  if ! mv -f -- "$part" "$final"; then
    rm -f -- "$part"
    OUTPUT_ERR="cannot rename $part"
    return 1
  fi
  RESULT=$final
  log "output encrypted: $RESULT"
}

# ---------------------------------------------------------------- step 7: clean-up

unmount() {
  local mnt=$1 n
  for n in 1 2 3 4 5 6 7 8 9 10; do
    "$FUSERMOUNT" -u -- "$mnt" 2>/dev/null && return 0
    grep -qF " $mnt fuse" /proc/mounts || return 0
    sleep 0.3
  done
  "$FUSERMOUNT" -u -z -- "$mnt" 2>/dev/null
  return 1
}

stop_agent() {
  [[ -n $AGENT_PID ]] || return 0
  kill -TERM "$AGENT_PID" 2>/dev/null
  local n=0
  while kill -0 "$AGENT_PID" 2>/dev/null && ((n < 50)); do
    sleep 0.1
    n=$((n + 1))
  done
  kill -KILL "$AGENT_PID" 2>/dev/null
  wait "$AGENT_PID" 2>/dev/null
  AGENT_PID=""
}

end_job() {
  [[ -n $JOIN_TOKEN ]] || return 0
  if http_call POST "$HPCS_SERVER_URL/v1/nodes/end-job" "$HPCS_SERVER_CA" \
    -H 'Content-Type: application/json' -H "X-Request-Id: $REQUEST_ID" --data-binary @- \
    < <(printf '{"node":"%s","user":"%s","joinToken":"%s"}' "$NODE" "$USER_NAME" "$JOIN_TOKEN") &&
    [[ $HTTP_STATUS == 200 ]]; then
    log "hpcs server told: job ended (aliases removed, agent evicted)"
  else
    log "warning: end-job failed (HTTP $HTTP_STATUS: $(error_message "$HTTP_BODY")); the server removes the aliases when the token expires"
  fi
  JOIN_TOKEN=""
}

cleanup() {
  local rc=$?
  trap '' TERM INT
  set +e
  stop_app
  if [[ -n $CONTAINER_ID ]]; then
    "$RUNTIME_USED" --root "$PRIV/runtime-root" delete --force "$CONTAINER_ID" >/dev/null 2>&1
  fi
  if ((APP_STARTED && !OUTPUT_DONE && OUT_MOUNTED)); then
    encrypt_output || log "warning: $OUTPUT_ERR"
  fi
  if ((IN_MOUNTED)); then
    unmount "$IN_MNT" || {
      log "warning: the input volume at $IN_MNT did not unmount cleanly (lazy unmount requested)"
      ((rc == 0)) && rc=205 && FAIL_REASON="the input volume did not unmount cleanly"
    }
  fi
  if ((OUT_MOUNTED)); then
    unmount "$OUT_MNT" || {
      log "warning: the output volume at $OUT_MNT did not unmount cleanly (lazy unmount requested)"
      ((rc == 0)) && rc=205 && FAIL_REASON="the output volume did not unmount cleanly"
    }
  fi
  [[ -n $VOL_BASE ]] && rm -rf -- "$VOL_BASE"
  if [[ -n $PRIV ]]; then gpgconf --kill gpg-agent >/dev/null 2>&1; fi
  stop_agent
  end_job
  PASS=()
  if [[ -n $PRIV ]]; then
    # Mount points that failed to unmount are skipped by rm (it does not cross into busy mounts).
    rm -rf --one-file-system -- "$PRIV" 2>/dev/null || log "warning: could not remove all of $PRIV"
  fi
  if ((rc == 0)); then
    log "result $RESULT"
  else
    log "failed: ${FAIL_REASON:-exit code $rc}"
  fi
  exit "$rc"
}

on_signal() {
  FAIL_REASON="interrupted by SIG$1 (scancel or the time limit)"
  exit "$2"
}

# ---------------------------------------------------------------- main

trap cleanup EXIT
trap 'on_signal TERM 143' TERM
trap 'on_signal INT 130' INT

mark start
check_node
attest_node
mark attested
start_agent
mark agent-ready
fetch_keys
mark keys
verify_checksums
decrypt_all
mark decrypt-end
start_app
wait "$APP_PID"
APP_RC=$?
APP_PID=""
log "app exited $APP_RC"
encrypt_output || fail 207 "$OUTPUT_ERR"
if ((APP_RC != 0)); then
  fail "$APP_RC" "the app exited $APP_RC; its stdout, stderr and exit_code are in the encrypted result $RESULT"
fi
exit 0
