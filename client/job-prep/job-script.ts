/**
 * The Slurm job script `hpcs job-prep` submits: `#!/bin/bash`, validated `#SBATCH` lines, the job's
 * values as readonly single-quoted bash variables and arrays, then the static runtime body
 * (job-runtime.sh beside this file in the source tree; its header documents the steps and exit codes).
 *
 * Every value is either refused or quoted:
 * - #SBATCH lines are parsed by sbatch, not bash: a value is written inside double quotes with `"`
 *   and `\` backslash-escaped (sbatch's own tokenizer; an unquoted `#` would start a comment and a
 *   space would end the value). Control characters, newlines above all, are refused: a newline
 *   would end the directive and start a shell command.
 * - Everything else is a single-quoted bash word (shell-quote.ts); values that end up in other
 *   languages are checked for those too: apptainer bind specs (no `:` or `,`), curl URLs, the
 *   agent's HCL config (strict-pattern names only; its paths are in the job's private dir, the
 *   bundle is copied there) and Vault/SPIFFE names (strict patterns).
 * - The rootless OCI config for runc/crun is rendered here as JSON (JSON.stringify: no escaping by
 *   hand) and cut into five pieces around the four values only the node knows (the two volume mount
 *   points and the uid/gid); the runtime concatenates them with those values, which it checks
 *   against a plain path/number pattern first. Rendering it here keeps jq optional on the node.
 */

import { randomUUID } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { readonlyArray, readonlyScalar } from "./shell-quote.js";

export interface JobArtifact {
  /** Absolute cluster path of the encrypted artifact (info.path_at_rest). */
  path: string;
  /** Hex sha256 of the ciphertext (info.sha256); the job refuses to decrypt on mismatch. */
  sha256: string;
  /** kv v2 data path, e.g. kv/data/hpcs/<client>/<secret> (info.secret_path); the key is field `passphrase`. */
  secretPath: string;
  /** Vault jwt role (info.access_role). */
  role: string;
  /** SPIFFE ID to fetch the JWT-SVID for (info.spiffeID). */
  spiffeId: string;
  /** info.payload: tar (extract into a dir), file (one file), sif (container image). */
  payload: "tar" | "file" | "sif";
  /** Data: the name under /sd-container/encrypted (info.payload_name, else the artifact basename minus .tar.gpg/.gpg). */
  name: string;
}

export interface SbatchOptions {
  jobName: string;
  nodes?: number;
  partition?: string;
  time?: string;
  account?: string;
  nodelist?: string;
  /** Cluster path of the job's stdout/stderr file (#SBATCH --output; Slurm expands its %j etc.). */
  output: string;
}

export interface JobScriptParams {
  sbatch: SbatchOptions;
  /** Cluster workdir (-s). Results go to <workdir>/output/<jobName>-<SLURM_JOB_ID>.tar.gpg (.part, then renamed). */
  workdir: string;
  /** Cluster dir (0700, under <workdir>/.hpcs/) that job-prep created: script, CA files, bundle, public key. */
  jobDir: string;
  serverUrl: string;
  serverCaFile?: string;
  vaultUrl: string;
  vaultCaFile?: string;
  vaultAudience: string;
  jwtMount: string;
  spire: { address: string; port: number; trustDomain: string; bundleFile: string };
  /** Absolute cluster paths (shipped by job-prep) or bare command names the node has. */
  tools: { spireAgent: string; gocryptfs: string };
  app: JobArtifact;
  data: JobArtifact[];
  /** Cluster path of the job's armored OpenPGP public key (curve25519Legacy, made by job-prep). */
  outputKeyFile: string;
  runtime: "auto" | "apptainer" | "singularity" | "runc" | "crun";
  /** -flags, already split into words (no shell parsing anywhere). */
  singularityFlags: string[];
  /** The app's arguments, each one literal. */
  args: string[];
  inputScripts?: string;
  outputScripts?: string;
}

/** One line: which value, why, the fix. */
export class InvalidJobParamError extends Error {
  constructor(field: string, value: unknown, why: string) {
    super(`invalid ${field} ${JSON.stringify(value)}: ${why}`);
    this.name = "InvalidJobParamError";
  }
}

// Runs from dist/client/job-prep/ (the body stays in the source tree, which the client image copies
// beside dist/) or from the source tree itself.
const RUNTIME_CANDIDATES = [
  new URL("../../../client/job-prep/job-runtime.sh", import.meta.url),
  new URL("./job-runtime.sh", import.meta.url),
];

/** Where the runtime body is read from. */
export function jobRuntimePath(): string {
  for (const u of RUNTIME_CANDIDATES) {
    const p = fileURLToPath(u);
    if (existsSync(p)) return p;
  }
  throw new Error(
    `job-runtime.sh not found (looked at ${RUNTIME_CANDIDATES.map((u) => fileURLToPath(u)).join(", ")}): reinstall hpcs`,
  );
}

// eslint-disable-next-line no-control-regex -- matching control characters is the point
const CONTROL = /[\u0000-\u001f\u007f]/;
const RUNTIMES = ["auto", "apptainer", "singularity", "runc", "crun"] as const;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const SLURM_TIME =
  /^(?:\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d{1,2}|\d+-\d{1,2}:\d{1,2}|\d+-\d{1,2}:\d{1,2}:\d{1,2}|UNLIMITED|INFINITE)$/;
const SLURM_WORD = /^[A-Za-z0-9_.-]{1,64}$/;
const PARTITIONS = /^[A-Za-z0-9_.-]{1,64}(?:,[A-Za-z0-9_.-]{1,64}){0,31}$/;
const NODELIST = /^[A-Za-z0-9_.,[\]-]{1,1024}$/;
const URL_RE = /^https?:\/\/[A-Za-z0-9._~\-[\]:]+(?:\/[A-Za-z0-9._~/-]*)?$/;
const HOST = /^(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:.]+)$/;
const TRUST_DOMAIN = /^[a-z0-9._-]{1,255}$/;
const SPIFFE_PATH = /^\/[A-Za-z0-9._~/-]{1,2048}$/;
const SHA256 = /^[0-9a-f]{64}$/;
const KV_PATH = /^[A-Za-z0-9_-]+(?:\/[A-Za-z0-9_.-]+)+$/;
const ROLE = /^[A-Za-z0-9_.-]{1,128}$/;
const MOUNT = /^[A-Za-z0-9_-]+(?:\/[A-Za-z0-9_-]+)*$/;
const AUDIENCE = /^[A-Za-z0-9._:/-]{1,256}$/;
const COMMAND_NAME = /^[A-Za-z0-9_.+-]{1,255}$/;

function noControl(field: string, v: string): string {
  if (CONTROL.test(v))
    throw new InvalidJobParamError(field, v, "contains a control character (newline, tab…): remove it");
  return v;
}

function match(field: string, v: unknown, re: RegExp, hint: string): string {
  if (typeof v !== "string" || !re.test(v)) throw new InvalidJobParamError(field, v, hint);
  return v;
}

function absPath(field: string, v: unknown): string {
  if (typeof v !== "string" || !v.startsWith("/") || v.length > 4096)
    throw new InvalidJobParamError(field, v, "must be an absolute path on the cluster");
  noControl(field, v);
  if (v.split("/").some((part) => part === ".." || part === "."))
    throw new InvalidJobParamError(field, v, "must not contain . or .. components: give the plain path");
  return v;
}

function optPath(field: string, v: string | undefined): string {
  return v === undefined || v === "" ? "" : absPath(field, v);
}

/** Dirs bound by apptainer (`src:dst:ro`, comma-separated specs). */
function bindSafe(field: string, v: string): string {
  if (/[:,]/.test(v))
    throw new InvalidJobParamError(
      field,
      v,
      "must not contain ':' or ',' (apptainer bind syntax): rename it",
    );
  return v;
}

function url(field: string, v: unknown): string {
  const s = match(field, v, URL_RE, "must be an http(s) URL such as https://host:8443 (no query, no spaces)");
  return s.replace(/\/+$/, "");
}

function tool(field: string, v: unknown): string {
  if (typeof v === "string" && COMMAND_NAME.test(v)) return v;
  return absPath(field, v);
}

function noNul(field: string, v: unknown): string {
  if (typeof v !== "string" || v.includes("\u0000"))
    throw new InvalidJobParamError(field, v, "must be a string without NUL bytes");
  return v;
}

/** A value inside a #SBATCH directive: double quotes, `"` and `\` escaped (sbatch's tokenizer). */
function sbatchValue(field: string, v: string): string {
  noControl(field, v);
  return `"${v.replace(/[\\"]/g, "\\$&")}"`;
}

function sbatchLines(s: SbatchOptions): string[] {
  const lines: string[] = [];
  const jobName = jobNameOf(s.jobName);
  lines.push(`#SBATCH --job-name=${sbatchValue("sbatch.jobName", jobName)}`);
  lines.push(`#SBATCH --output=${sbatchValue("sbatch.output", absPath("sbatch.output", s.output))}`);
  if (s.nodes !== undefined) {
    if (!Number.isSafeInteger(s.nodes) || s.nodes < 1 || s.nodes > 100_000)
      throw new InvalidJobParamError("sbatch.nodes", s.nodes, "must be a whole number of nodes ≥ 1");
    lines.push(`#SBATCH --nodes=${s.nodes}`);
  }
  if (s.partition !== undefined)
    lines.push(
      `#SBATCH --partition=${match("sbatch.partition", s.partition, PARTITIONS, "must be a partition name (letters, digits, . _ -), or a comma-separated list")}`,
    );
  if (s.time !== undefined)
    lines.push(
      `#SBATCH --time=${match("sbatch.time", s.time, SLURM_TIME, "use a Slurm time: minutes, mm:ss, hh:mm:ss, d-hh, d-hh:mm or d-hh:mm:ss")}`,
    );
  if (s.account !== undefined)
    lines.push(
      `#SBATCH --account=${match("sbatch.account", s.account, SLURM_WORD, "must be an account name (letters, digits, . _ -)")}`,
    );
  if (s.nodelist !== undefined)
    lines.push(
      `#SBATCH --nodelist=${match("sbatch.nodelist", s.nodelist, NODELIST, "must be a Slurm host list such as nid[001-004],nid010")}`,
    );
  return lines;
}

function jobNameOf(v: unknown): string {
  if (typeof v !== "string" || v === "" || v.length > 200)
    throw new InvalidJobParamError("sbatch.jobName", v, "must be 1-200 characters");
  noControl("sbatch.jobName", v);
  if (v.includes("/") || v === "." || v === "..")
    throw new InvalidJobParamError("sbatch.jobName", v, "must not contain '/' (it names the result file)");
  return v;
}

function artifact(
  field: string,
  a: JobArtifact,
  trustDomain: string,
  payloads: readonly string[],
): JobArtifact {
  if (!a || typeof a !== "object") throw new InvalidJobParamError(field, a, "is missing");
  const prefix = `spiffe://${trustDomain}`;
  if (
    typeof a.spiffeId !== "string" ||
    !a.spiffeId.startsWith(prefix) ||
    !SPIFFE_PATH.test(a.spiffeId.slice(prefix.length))
  )
    throw new InvalidJobParamError(`${field}.spiffeId`, a.spiffeId, `must be a SPIFFE ID in ${prefix}`);
  if (!payloads.includes(a.payload))
    throw new InvalidJobParamError(`${field}.payload`, a.payload, `must be one of ${payloads.join(", ")}`);
  const secretPath = match(
    `${field}.secretPath`,
    a.secretPath,
    KV_PATH,
    "must be a kv path such as kv/data/hpcs/<client>/<secret>",
  );
  if (secretPath.split("/").includes(".."))
    throw new InvalidJobParamError(`${field}.secretPath`, a.secretPath, "must not contain ..");
  const name = typeof a.name === "string" ? a.name : "";
  if (a.payload !== "sif") {
    if (name === "" || name === "." || name === ".." || name.includes("/") || name.length > 255)
      throw new InvalidJobParamError(`${field}.name`, a.name, "must be a file name (no '/', not . or ..)");
    noControl(`${field}.name`, name);
  }
  return {
    path: absPath(`${field}.path`, a.path),
    sha256: match(
      `${field}.sha256`,
      typeof a.sha256 === "string" ? a.sha256.toLowerCase() : a.sha256,
      SHA256,
      "must be 64 hex digits",
    ),
    secretPath,
    role: match(`${field}.role`, a.role, ROLE, "must be a Vault role name (letters, digits, . _ -)"),
    spiffeId: a.spiffeId,
    payload: a.payload,
    name,
  };
}

/** --env/-e K=V (also --env=K=V) for runc/crun; everything else is logged as ignored by the job. */
export function ociEnvFromFlags(flags: readonly string[]): { env: string[]; ignored: string[] } {
  const env: string[] = [];
  const ignored: string[] = [];
  for (let i = 0; i < flags.length; i++) {
    const f = flags[i]!;
    let kv: string | undefined;
    if (f === "--env" || f === "-e") {
      kv = flags[i + 1];
      if (kv === undefined)
        throw new InvalidJobParamError("singularityFlags", flags, `${f} needs K=V after it`);
      i++;
    } else if (f.startsWith("--env=")) {
      kv = f.slice("--env=".length);
    } else {
      ignored.push(f);
      continue;
    }
    const eq = kv.indexOf("=");
    if (eq < 1 || !ENV_NAME.test(kv.slice(0, eq)))
      throw new InvalidJobParamError(
        "singularityFlags",
        kv,
        "--env takes NAME=value with a shell variable name",
      );
    env.push(kv);
  }
  return { env, ignored };
}

// Inside the container (runc/crun): the image's environment as apptainer would apply it, the job's
// --env values over it, then the wrapper with the job's arguments. A fixed script: the values are
// positional parameters, never part of the script text.
const OCI_LAUNCHER =
  '[ -r /.singularity.d/env/90-environment.sh ] && . /.singularity.d/env/90-environment.sh; while [ "$#" -gt 0 ] && [ "$1" != -- ]; do export "$1"; shift; done; shift; exec /sd-container/tools/entrypoint "$@"';

/** The rootless OCI config, cut around the input mount, output mount, uid and gid (5 pieces). */
export function ociConfigPieces(p: {
  env: string[];
  args: string[];
  inputScripts: string;
  outputScripts: string;
}): string[] {
  const id = randomUUID();
  const slot = (n: number) => `hpcs-slot-${id}-${n}`;
  const caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
  const bind = (destination: string, source: string, ro: boolean) => ({
    destination,
    type: "bind",
    source,
    options: ["rbind", ro ? "ro" : "rw", "nosuid", "nodev"],
  });
  const config = {
    ociVersion: "1.0.2-dev",
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: ["/bin/sh", "-c", OCI_LAUNCHER, "sh", ...p.env, "--", ...p.args],
      env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"],
      cwd: "/",
      capabilities: { bounding: caps, effective: caps, permitted: caps, ambient: caps },
      rlimits: [{ type: "RLIMIT_NOFILE", hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
    },
    root: { path: "rootfs", readonly: true },
    hostname: "hpcs",
    mounts: [
      { destination: "/proc", type: "proc", source: "proc" },
      {
        destination: "/dev",
        type: "tmpfs",
        source: "tmpfs",
        options: ["nosuid", "strictatime", "mode=755", "size=65536k"],
      },
      {
        destination: "/dev/pts",
        type: "devpts",
        source: "devpts",
        options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
      },
      {
        destination: "/dev/shm",
        type: "tmpfs",
        source: "shm",
        options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
      },
      {
        destination: "/dev/mqueue",
        type: "mqueue",
        source: "mqueue",
        options: ["nosuid", "noexec", "nodev"],
      },
      {
        destination: "/sys",
        type: "none",
        source: "/sys",
        options: ["rbind", "nosuid", "noexec", "nodev", "ro"],
      },
      bind("/sd-container/encrypted", slot(0), false),
      bind("/sd-container/output", slot(1), false),
      ...(p.inputScripts ? [bind("/sd-container/tools/input_logic/jobs", p.inputScripts, true)] : []),
      ...(p.outputScripts ? [bind("/sd-container/tools/output_logic/jobs", p.outputScripts, true)] : []),
    ],
    linux: {
      uidMappings: [{ containerID: 0, hostID: slot(2), size: 1 }],
      gidMappings: [{ containerID: 0, hostID: slot(3), size: 1 }],
      namespaces: [{ type: "pid" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }, { type: "user" }],
      maskedPaths: [
        "/proc/acpi",
        "/proc/asound",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/sys/firmware",
        "/proc/scsi",
      ],
      readonlyPaths: ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    },
  };
  let rest = JSON.stringify(config, null, 2);
  const pieces: string[] = [];
  for (let n = 0; n < 4; n++) {
    const marker = JSON.stringify(slot(n));
    const at = rest.indexOf(marker);
    if (at < 0 || rest.indexOf(marker, at + 1) >= 0) throw new Error(`OCI config slot ${n} is not unique`);
    pieces.push(rest.slice(0, at));
    rest = rest.slice(at + marker.length);
  }
  pieces.push(`${rest}\n`);
  return pieces;
}

/** The complete job script; throws InvalidJobParamError for anything it cannot render safely. */
export function renderJobScript(p: JobScriptParams): string {
  const sbatch = sbatchLines(p.sbatch);
  const trustDomain = match(
    "spire.trustDomain",
    p.spire?.trustDomain,
    TRUST_DOMAIN,
    "must be a SPIFFE trust domain such as example.org",
  );
  if (!Number.isSafeInteger(p.spire.port) || p.spire.port < 1 || p.spire.port > 65535)
    throw new InvalidJobParamError("spire.port", p.spire.port, "must be a TCP port 1-65535");
  if (!RUNTIMES.includes(p.runtime))
    throw new InvalidJobParamError("runtime", p.runtime, `must be one of ${RUNTIMES.join(", ")}`);
  if (!Array.isArray(p.data))
    throw new InvalidJobParamError("data", p.data, "must be a list of data artifacts");
  const app = artifact("app", p.app, trustDomain, ["sif"]);
  const data = p.data.map((d, i) => artifact(`data[${i}]`, d, trustDomain, ["tar", "file"]));
  const names = new Set<string>();
  for (const d of data) {
    if (names.has(d.name))
      throw new InvalidJobParamError(
        "data.name",
        d.name,
        "two datasets have the same name under /sd-container/encrypted: rename one",
      );
    names.add(d.name);
  }
  const flags = (p.singularityFlags ?? []).map((f, i) =>
    noControl(`singularityFlags[${i}]`, noNul(`singularityFlags[${i}]`, f)),
  );
  const args = (p.args ?? []).map((a, i) => noNul(`args[${i}]`, a));
  const oci = ociEnvFromFlags(flags);
  const inputScripts = bindSafe("inputScripts", optPath("inputScripts", p.inputScripts));
  const outputScripts = bindSafe("outputScripts", optPath("outputScripts", p.outputScripts));
  const all = [app, ...data];

  const values = [
    readonlyScalar("HPCS_JOB_NAME", jobNameOf(p.sbatch.jobName)),
    readonlyScalar("HPCS_WORKDIR", absPath("workdir", p.workdir)),
    readonlyScalar("HPCS_JOB_DIR", absPath("jobDir", p.jobDir)),
    readonlyScalar("HPCS_SERVER_URL", url("serverUrl", p.serverUrl)),
    readonlyScalar("HPCS_SERVER_CA", optPath("serverCaFile", p.serverCaFile)),
    readonlyScalar("HPCS_VAULT_URL", url("vaultUrl", p.vaultUrl)),
    readonlyScalar("HPCS_VAULT_CA", optPath("vaultCaFile", p.vaultCaFile)),
    readonlyScalar(
      "HPCS_VAULT_AUDIENCE",
      match(
        "vaultAudience",
        p.vaultAudience,
        AUDIENCE,
        "must be a JWT audience (letters, digits, . _ : / -)",
      ),
    ),
    readonlyScalar(
      "HPCS_JWT_MOUNT",
      match("jwtMount", p.jwtMount, MOUNT, "must be a Vault auth mount path such as jwt"),
    ),
    readonlyScalar(
      "HPCS_SPIRE_ADDRESS",
      match("spire.address", p.spire.address, HOST, "must be a host name or IP address"),
    ),
    readonlyScalar("HPCS_SPIRE_PORT", String(p.spire.port)),
    readonlyScalar("HPCS_TRUST_DOMAIN", trustDomain),
    readonlyScalar("HPCS_SPIRE_BUNDLE", absPath("spire.bundleFile", p.spire.bundleFile)),
    readonlyScalar("HPCS_SPIRE_AGENT", tool("tools.spireAgent", p.tools?.spireAgent)),
    readonlyScalar("HPCS_GOCRYPTFS", tool("tools.gocryptfs", p.tools?.gocryptfs)),
    readonlyScalar("HPCS_OUTPUT_KEY", absPath("outputKeyFile", p.outputKeyFile)),
    readonlyScalar("HPCS_RUNTIME", p.runtime),
    readonlyScalar("HPCS_INPUT_SCRIPTS", inputScripts),
    readonlyScalar("HPCS_OUTPUT_SCRIPTS", outputScripts),
    "# Artifacts: index 0 is the app image, then one per dataset.",
    readonlyArray(
      "HPCS_ART_PATH",
      all.map((a) => a.path),
    ),
    readonlyArray(
      "HPCS_ART_SHA256",
      all.map((a) => a.sha256),
    ),
    readonlyArray(
      "HPCS_ART_SECRET",
      all.map((a) => a.secretPath),
    ),
    readonlyArray(
      "HPCS_ART_ROLE",
      all.map((a) => a.role),
    ),
    readonlyArray(
      "HPCS_ART_SPIFFE_ID",
      all.map((a) => a.spiffeId),
    ),
    readonlyArray(
      "HPCS_ART_PAYLOAD",
      all.map((a) => a.payload),
    ),
    readonlyArray(
      "HPCS_ART_NAME",
      all.map((a) => a.name),
    ),
    readonlyArray("HPCS_SINGULARITY_FLAGS", flags),
    readonlyArray("HPCS_OCI_IGNORED_FLAGS", oci.ignored),
    readonlyArray("HPCS_ARGS", args),
    "# The rootless OCI config for runc/crun, around: input mount, output mount, uid, gid.",
    readonlyArray("HPCS_OCI_CONFIG", ociConfigPieces({ env: oci.env, args, inputScripts, outputScripts })),
  ];
  const body = readFileSync(jobRuntimePath(), "utf8").replace(/^#!.*\n/, "");
  return [
    "#!/bin/bash",
    ...sbatch,
    "# shellcheck disable=SC1003,SC2016,SC2317 # values are literal on purpose; clean-up runs from traps",
    "#",
    "# Generated by hpcs job-prep. The values below are single-quoted: nothing in them is expanded.",
    ...values,
    body,
  ].join("\n");
}
