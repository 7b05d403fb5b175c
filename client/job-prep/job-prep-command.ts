/**
 * `hpcs job-prep`: read the container's and the datasets' info files on the cluster, create the job's
 * output key pair (private key stays here), put the job's files in a fresh 0700 job directory, ship
 * the tools the job needs, submit the rendered script with sbatch, then wait for the job (or follow
 * its output) and report how it ended.
 *
 * Everything that can be checked without side effects is checked first — flags, config, local files,
 * SSH login, both info files, the remote directories, the rendered script — so a mistake exits 2 with
 * nothing created. A failure before sbatch removes the job directory and the local key; after sbatch
 * the job is the user's: an interrupt stops only the watching.
 */

import { randomBytes } from "node:crypto";
import { accessSync, constants, readFileSync, statSync } from "node:fs";
import { posix } from "node:path";
import { type ClientConfig, loadClientConfig } from "../../lib/config/client-config.js";
import { type ArtifactInfo, parseInfo } from "../data-prep/info-file.js";
import { EXIT } from "../exit-codes.js";
import { type CommandIo, runCommand } from "../ship-command.js";
import { exists, readFile, writeFileAtomic } from "../ssh/remote-files.js";
import { sessionOptions } from "../ssh/session-options.js";
import { SshSession } from "../ssh/ssh-session.js";
import { UsageError } from "../usage-error.js";
import { type JobArtifact, type JobScriptParams, renderJobScript } from "./job-script.js";
import { type JobRecord, LocalJobFiles, RECORD_VERSION } from "./job-record.js";
import { type FinalState, lastFailureLine, logFilePath, parseSbatchOutput, watchJob } from "./job-watch.js";
import { generateOutputKey } from "./output-key.js";
import { execArgv, firstLine } from "./remote-exec.js";
import {
  installTools,
  mkdirs,
  planTools,
  type PlannedTool,
  resolveLocalTool,
  type ToolSpec,
} from "./remote-tools.js";
import { type JobPrepOptions, jobPrepOptions, type RawJobPrepFlags } from "./options.js";

/** Names of the job's files in its job directory. */
export const JOB_FILES = {
  script: "job.sh",
  serverCa: "hpcs-server-ca.pem",
  vaultCa: "vault-ca.pem",
  bundle: "spire-bundle.pem",
  outputKey: "output-key.asc",
} as const;

export const DEFAULT_JWT_MOUNT = "jwt";

export function jobPrepCommand(raw: RawJobPrepFlags, io: CommandIo): Promise<number> {
  return runCommand("job-prep", raw.json === true, io, async () => {
    const opts = jobPrepOptions(raw);
    const cfg = loadClientConfig(opts.configPath);
    checkKeysDir(opts.keysDir);
    const local = readLocalFiles(cfg);
    const tools = toolSpecs(cfg);
    for (const t of tools) {
      await resolveLocalTool(t).catch((err: unknown) => {
        throw new UsageError((err as Error).message);
      });
    }
    const ssh = await SshSession.connect(sessionOptions(cfg.supercomputer, cfg.supercomputer.username));
    try {
      return await prepareAndSubmit(opts, cfg, local, tools, ssh, io);
    } finally {
      ssh.close();
    }
  });
}

interface LocalFiles {
  bundle: string;
  serverCa?: string;
  vaultCa?: string;
}

async function prepareAndSubmit(
  opts: JobPrepOptions,
  cfg: ClientConfig,
  local: LocalFiles,
  toolList: ToolSpec[],
  ssh: SshSession,
  io: CommandIo,
): Promise<number> {
  const say = (line: string): void => {
    if (!opts.json && !opts.quiet) io.stderr.write(`${line}\n`);
  };

  // ---- checks: nothing is created until all of them passed
  const app = await readArtifactInfo(ssh, opts.appInfo, "-ai/--application-info");
  if (app.info.kind !== "container" || app.info.payload !== "sif") {
    throw new UsageError(
      `-ai/--application-info ${opts.appInfo} describes ${app.info.kind ?? "?"} ${app.info.payload ?? "?"}, not a container image: give the container-prep info file`,
    );
  }
  const data: JobArtifact[] = [];
  for (const path of opts.dataInfo) {
    const d = await readArtifactInfo(ssh, path, "-di/--data-info");
    if (d.info.kind !== "data" || (d.info.payload !== "tar" && d.info.payload !== "file")) {
      throw new UsageError(
        `-di/--data-info ${path} describes ${d.info.kind ?? "?"} ${d.info.payload ?? "?"}, not a dataset: give a data-prep info file`,
      );
    }
    if (data.some((x) => x.name === d.artifact.name)) {
      throw new UsageError(
        `-di/--data-info: two datasets would both be /sd-container/encrypted/${d.artifact.name}: ship one under another name`,
      );
    }
    data.push(d.artifact);
  }
  for (const [flag, dir] of [
    ["-s/--workdir", opts.workdir],
    ["-i/--supplementary-input-scripts", opts.inputScripts],
    ["-o/--supplementary-output-scripts", opts.outputScripts],
  ] as const) {
    if (dir !== undefined && !(await isRemoteDir(ssh, dir))) {
      throw new UsageError(`${flag} ${dir} is not a directory on ${ssh.host}: create it or give another`);
    }
  }
  const tools = await planTools(ssh, toolList, {
    siteTools: cfg.supercomputer.siteTools === true,
    signal: io.signal,
  });
  const jobDir = posix.join(opts.workdir, ".hpcs", jobDirName(opts.jobName));
  const logFile = logFilePath(jobDir);
  const params = scriptParams(opts, cfg, local, jobDir, logFile, app.artifact, data, tools);
  let script: string;
  try {
    script = renderJobScript(params);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  io.signal.throwIfAborted();

  // ---- side effects: undone on any failure until sbatch accepted the job
  const key = await generateOutputKey(opts.jobName);
  const keys = await LocalJobFiles.create(opts.keysDir, key.privateKey);
  let created = false;
  let submitted: { jobId: string; cluster?: string } | undefined;
  try {
    await ensureDirs(ssh, opts.workdir, [".hpcs"]);
    await createDirExclusive(ssh, jobDir);
    created = true;
    await installTools(ssh, tools, { signal: io.signal, onStep: say });
    const put = (name: string, data: string, mode = 0o600): Promise<string> =>
      writeFileAtomic(ssh, jobDir, name, data, mode);
    if (local.serverCa !== undefined) await put(JOB_FILES.serverCa, local.serverCa, 0o644);
    if (local.vaultCa !== undefined) await put(JOB_FILES.vaultCa, local.vaultCa, 0o644);
    await put(JOB_FILES.bundle, local.bundle, 0o644);
    await put(JOB_FILES.outputKey, key.publicKey, 0o644);
    await put(JOB_FILES.script, script, 0o700);
    await ensureDirs(ssh, opts.workdir, ["output"]);
    io.signal.throwIfAborted();
    const r = await execArgv(ssh, ["sbatch", "--parsable", posix.join(jobDir, JOB_FILES.script)]);
    if (r.code !== 0) {
      throw new Error(
        `sbatch refused the job: ${firstLine(r.stderr) || `exit ${r.code ?? r.signal ?? "?"}`}`,
      );
    }
    submitted = parseSbatchOutput(r.stdout);
  } catch (err) {
    if (!submitted) {
      await keys.discard().catch(() => undefined);
      if (created) await removeRemoteDir(ssh, jobDir);
    }
    throw err;
  }

  const record: JobRecord = {
    version: RECORD_VERSION,
    jobId: submitted.jobId,
    ...(submitted.cluster ? { cluster: submitted.cluster } : {}),
    jobName: opts.jobName,
    host: ssh.host,
    port: ssh.port,
    user: ssh.username,
    workdir: opts.workdir,
    jobDir,
    outputFile: posix.join(opts.workdir, "output", `${opts.jobName}-${submitted.jobId}.tar.gpg`),
    logFile,
    privateKeyFile: keys.finalKeyPath(submitted.jobId),
    submitted: new Date().toISOString(),
  };
  const files = await keys.commit(record);
  const id = submitted.jobId;
  say(`submitted  job ${id} (${opts.jobName}), files in ${jobDir}`);
  say(`key        ${files.keyFile} (private: the result is encrypted to it; keep it)`);
  say(`output     ${logFile}`);

  const base = {
    jobId: id,
    ...(submitted.cluster ? { cluster: submitted.cluster } : {}),
    jobDir,
    logFile,
    outputFile: record.outputFile,
    privateKeyFile: files.keyFile,
    recordFile: files.recordFile,
  };
  if (!opts.wait) {
    if (opts.json) io.stdout.write(`${JSON.stringify({ ok: true, ...base, state: "SUBMITTED" })}\n`);
    else if (!opts.quiet) io.stdout.write(`${id}\n`);
    return EXIT.ok;
  }

  let final: FinalState;
  try {
    final = await watchJob(ssh, id, {
      ...(opts.follow ? { follow: { logFile, out: opts.json ? io.stderr : io.stdout } } : {}),
      onState: (s) => say(`job ${id}   ${s}`),
      signal: io.signal,
    });
  } catch (err) {
    if (!io.signal.aborted) throw err;
    io.stderr.write(
      `hpcs job-prep: stopped watching; job ${id} keeps running (scancel ${id} stops it): 'hpcs job-prep results ${id}' fetches its result once it has ended\n`,
    );
    if (opts.json) io.stdout.write(`${JSON.stringify({ ok: false, ...base, state: "WATCH_INTERRUPTED" })}\n`);
    return io.signal.reason === "SIGTERM" ? EXIT.terminated : EXIT.interrupted;
  }
  const ok = final.state === "COMPLETED" && final.exitCode === 0;
  const failure = ok ? undefined : await lastFailureLine(ssh, logFile);
  const summary = `job ${id} ${final.state}, exit ${final.exitCode ?? "?"}${final.exitSignal ? ` (signal ${final.exitSignal})` : ""}`;
  if (opts.json) {
    io.stdout.write(
      `${JSON.stringify({
        ok,
        ...base,
        state: final.state,
        ...(final.exitCode !== undefined ? { exitCode: final.exitCode } : {}),
        ...(final.exitSignal ? { exitSignal: final.exitSignal } : {}),
        ...(failure ? { failure } : {}),
      })}\n`,
    );
  } else if (ok) {
    if (!opts.quiet) {
      io.stdout.write(
        `${summary}\nresult     ${record.outputFile}: fetch and decrypt it with 'hpcs job-prep results ${id}'\n`,
      );
    }
  } else {
    io.stderr.write(`hpcs job-prep: ${summary}${failure ? `: ${failure}` : ""} (output: ${logFile})\n`);
  }
  return ok ? EXIT.ok : EXIT.failed;
}

/** What the job needs on the node that sites rarely install for users, and where it comes from here. */
function toolSpecs(cfg: ClientConfig): ToolSpec[] {
  return [
    { name: "spire-agent", local: cfg.spireServer.agentBin, source: "[spire-server] agent-bin" },
    { name: "gocryptfs", local: "gocryptfs", source: "for the job's encrypted volumes" },
  ];
}

function scriptParams(
  opts: JobPrepOptions,
  cfg: ClientConfig,
  local: LocalFiles,
  jobDir: string,
  logFile: string,
  app: JobArtifact,
  data: JobArtifact[],
  tools: PlannedTool[],
): JobScriptParams {
  const tool = (name: string): string => tools.find((t) => t.name === name)?.path ?? name;
  const p: JobScriptParams = {
    sbatch: {
      jobName: opts.jobName,
      ...(opts.nodes !== undefined ? { nodes: opts.nodes } : {}),
      ...(opts.partition !== undefined ? { partition: opts.partition } : {}),
      ...(opts.time !== undefined ? { time: opts.time } : {}),
      ...(opts.account !== undefined ? { account: opts.account } : {}),
      ...(opts.nodelist !== undefined ? { nodelist: opts.nodelist } : {}),
      output: logFile,
    },
    workdir: opts.workdir,
    jobDir,
    serverUrl: cfg.hpcsServer.url,
    vaultUrl: cfg.vault.url,
    vaultAudience: cfg.vault.audience,
    jwtMount: DEFAULT_JWT_MOUNT,
    spire: {
      address: cfg.spireServer.address,
      port: cfg.spireServer.port,
      trustDomain: cfg.spireServer.trustDomain,
      bundleFile: posix.join(jobDir, JOB_FILES.bundle),
    },
    tools: { spireAgent: tool("spire-agent"), gocryptfs: tool("gocryptfs") },
    app,
    data,
    outputKeyFile: posix.join(jobDir, JOB_FILES.outputKey),
    runtime: opts.runtime,
    singularityFlags: opts.singularityFlags,
    args: opts.args,
  };
  if (local.serverCa !== undefined) p.serverCaFile = posix.join(jobDir, JOB_FILES.serverCa);
  if (local.vaultCa !== undefined) p.vaultCaFile = posix.join(jobDir, JOB_FILES.vaultCa);
  if (opts.inputScripts !== undefined) p.inputScripts = opts.inputScripts;
  if (opts.outputScripts !== undefined) p.outputScripts = opts.outputScripts;
  return p;
}

/** `<jobname>-<UTC stamp>-<random>`: sortable, unique, and a valid remote file name. */
export function jobDirName(jobName: string, now = new Date()): string {
  const stamp = now
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d+Z$/, "Z");
  return `${jobName}-${stamp}-${randomBytes(4).toString("hex")}`;
}

/** The name under /sd-container/encrypted: payload_name, else the artifact's name minus .tar.gpg/.gpg. */
export function dataName(info: Pick<ArtifactInfo, "payload_name" | "path_at_rest">): string {
  if (info.payload_name) return info.payload_name;
  return posix.basename(info.path_at_rest).replace(/(\.tar)?\.gpg$/, "");
}

async function readArtifactInfo(
  ssh: SshSession,
  path: string,
  flag: string,
): Promise<{ info: ArtifactInfo; artifact: JobArtifact }> {
  if (!(await exists(ssh, path))) {
    throw new UsageError(
      `${flag} ${path} does not exist on ${ssh.host}: give the info file data-prep/container-prep wrote`,
    );
  }
  let info: ArtifactInfo;
  try {
    info = parseInfo((await readFile(ssh, path, 64 * 1024)).toString("utf8"), path);
  } catch (err) {
    throw new UsageError(`${flag}: ${(err as Error).message}`);
  }
  return {
    info,
    artifact: {
      path: info.path_at_rest,
      sha256: info.sha256,
      secretPath: info.secret_path,
      role: info.access_role,
      spiffeId: info.spiffeID,
      payload: info.payload,
      name: dataName(info),
    },
  };
}

function readLocalFiles(cfg: ClientConfig): LocalFiles {
  const read = (path: string, key: string): string => {
    try {
      return readFileSync(path, "utf8");
    } catch (err) {
      throw new UsageError(
        `config ${cfg.source}: ${key} ${path} cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): fix the path`,
      );
    }
  };
  if (cfg.spireServer.trustBundle === undefined) {
    throw new UsageError(
      `config ${cfg.source}: [spire-server] trust-bundle: missing; the job's spire-agent needs it: set it to the SPIRE trust bundle (PEM)`,
    );
  }
  const out: LocalFiles = { bundle: read(cfg.spireServer.trustBundle, "[spire-server] trust-bundle") };
  if (cfg.hpcsServer.caFile) out.serverCa = read(cfg.hpcsServer.caFile, "[hpcs-server] ca-file");
  if (cfg.vault.caFile) out.vaultCa = read(cfg.vault.caFile, "[vault] ca-file");
  return out;
}

function checkKeysDir(dir: string): void {
  try {
    if (!statSync(dir).isDirectory()) throw new Error();
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch {
    throw new UsageError(`--keys-dir ${dir} is not a writable directory: create it or give another`);
  }
}

async function isRemoteDir(ssh: SshSession, path: string): Promise<boolean> {
  const sftp = await ssh.sftp();
  try {
    return await new Promise((resolve) => sftp.stat(path, (err, st) => resolve(!err && st.isDirectory())));
  } finally {
    sftp.end();
  }
}

async function ensureDirs(ssh: SshSession, base: string, parts: string[]): Promise<void> {
  const sftp = await ssh.sftp();
  try {
    await mkdirs(sftp, base, parts, ssh.host);
  } finally {
    sftp.end();
  }
}

/** mkdir 0700 that fails when the directory exists: the job directory is never shared. */
async function createDirExclusive(ssh: SshSession, dir: string): Promise<void> {
  const sftp = await ssh.sftp();
  try {
    await new Promise<void>((resolve, reject) =>
      sftp.mkdir(dir, { mode: 0o700 }, (err) =>
        err
          ? reject(new Error(`cannot create the job directory ${dir} on ${ssh.host}: ${err.message}`))
          : resolve(),
      ),
    );
    // mkdir's mode is filtered by the umask; the job directory must be 0700 whatever it is.
    await new Promise<void>((resolve, reject) =>
      sftp.chmod(dir, 0o700, (err) => (err ? reject(err) : resolve())),
    );
  } finally {
    sftp.end();
  }
}

/** Best effort: a job directory of a job that was never submitted. */
async function removeRemoteDir(ssh: SshSession, dir: string): Promise<void> {
  await execArgv(ssh, ["rm", "-rf", "--", dir]).catch(() => undefined);
}
