/**
 * `hpcs job-prep results <job>`: fetch a finished job's encrypted result over SFTP and decrypt it here
 * with the job's private key, as one stream (SFTP → OpenPGP → tar extract), so memory stays flat
 * whatever the result's size and no plaintext touches the cluster.
 *
 * SEIPD v1 is authenticated only by the MDC at its very end, so the plaintext is extracted into a
 * temporary directory beside the destination and renamed to it only once the whole message checked
 * out; a tampered or truncated result leaves nothing under the destination name.
 */

import { randomBytes } from "node:crypto";
import { accessSync, constants, existsSync, statSync } from "node:fs";
import { chmod, mkdir, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as NodeWebReadableStream } from "node:stream/web";
import * as openpgp from "openpgp";
import { extract } from "tar";
import { loadClientConfig } from "../../lib/config/client-config.js";
import { EXIT } from "../exit-codes.js";
import { type CommandIo, runCommand } from "../ship-command.js";
import { DEFAULT_CONFIG } from "../ship-options.js";
import { isNoSuchFile } from "../ssh/sftp-errors.js";
import { sessionOptions } from "../ssh/session-options.js";
import { SshSession } from "../ssh/ssh-session.js";
import { UsageError } from "../usage-error.js";
import { type JobRecord, readJobRecord, recordFileName } from "./job-record.js";
import { isFinalState, lastFailureLine, queueState } from "./job-watch.js";

export interface RawResultsFlags {
  config?: string;
  keysDir?: string;
  outputDir?: string;
  json?: boolean;
  quiet?: boolean;
}

export interface ResultsSummary {
  outputDir: string;
  /** The app's exit status, from the `exit_code` file the image's wrapper writes. */
  appExitCode?: number;
  /** The app's stdout.log, when the result has one. */
  stdoutLog?: string;
  files: number;
  bytes: number;
}

export function resultsCommand(job: string, raw: RawResultsFlags, io: CommandIo): Promise<number> {
  return runCommand("job-prep results", raw.json === true, io, async () => {
    const configPath = resolve(raw.config ?? DEFAULT_CONFIG);
    const keysDir = resolve(raw.keysDir ?? dirname(configPath));
    const recordPath = /^[0-9]+$/.test(job)
      ? join(keysDir, recordFileName(job))
      : /\.json$/.test(job)
        ? resolve(job)
        : undefined;
    if (recordPath === undefined) {
      throw new UsageError(
        `job ${JSON.stringify(job)}: give the job id job-prep printed (or its .json record)`,
      );
    }
    let record: JobRecord;
    try {
      record = await readJobRecord(recordPath);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    const outputDir = resolve(raw.outputDir ?? join(keysDir, `hpcs-job-${record.jobId}-output`));
    checkDestination(outputDir);
    const cfg = loadClientConfig(configPath);
    if (cfg.supercomputer.address !== record.host || cfg.supercomputer.port !== record.port) {
      throw new UsageError(
        `job ${record.jobId} was submitted through ${record.host}:${record.port}, but ${configPath} points at ${cfg.supercomputer.address}:${cfg.supercomputer.port}: give the config job-prep used`,
      );
    }
    const armored = await readFile(record.privateKeyFile, "utf8").catch((err: NodeJS.ErrnoException) => {
      throw new UsageError(
        `cannot read the job's private key ${record.privateKeyFile} (${err.code ?? err.message}): without it the result cannot be decrypted`,
      );
    });
    const privateKey = await openpgp.readPrivateKey({ armoredKey: armored });
    const ssh = await SshSession.connect(sessionOptions(cfg.supercomputer, record.user));
    try {
      const summary = await fetchResult(ssh, record, privateKey, outputDir, io.signal);
      report(summary, record, raw, io);
      return EXIT.ok;
    } finally {
      ssh.close();
    }
  });
}

/** SFTP → decrypt → untar (extractResult); the result must be there, else one line saying why not. */
export async function fetchResult(
  ssh: SshSession,
  record: JobRecord,
  privateKey: openpgp.PrivateKey,
  dest: string,
  signal: AbortSignal,
): Promise<ResultsSummary> {
  const sftp = await ssh.sftp();
  try {
    const present = await new Promise<boolean>((res, rej) =>
      sftp.stat(record.outputFile, (err) => (!err ? res(true) : isNoSuchFile(err) ? res(false) : rej(err))),
    );
    if (!present) throw new Error(await whyNoResult(ssh, record));
    const ciphertext = sftp.createReadStream(record.outputFile, { highWaterMark: 256 * 1024 });
    return await extractResult(ciphertext, privateKey, dest, { signal, source: record.outputFile });
  } finally {
    sftp.end();
  }
}

/**
 * Decrypts an OpenPGP message encrypted to `privateKey` and extracts the tar inside into
 * `<dest>.<random>.part` beside `dest`, renamed to `dest` only once the MDC checked out.
 */
export async function extractResult(
  ciphertext: Readable,
  privateKey: openpgp.PrivateKey,
  dest: string,
  opts: { signal?: AbortSignal; source: string },
): Promise<ResultsSummary> {
  const tmp = join(dirname(dest), `.${basename(dest)}.${randomBytes(6).toString("hex")}.part`);
  try {
    await mkdir(tmp, { mode: 0o700 });
    const config: openpgp.PartialConfig = { allowUnauthenticatedStream: true };
    let plain: Readable;
    try {
      const message = await openpgp.readMessage({
        binaryMessage: Readable.toWeb(ciphertext) as NodeWebReadableStream<Uint8Array>,
        config,
      });
      const { data } = await openpgp.decrypt({
        message,
        decryptionKeys: privateKey,
        format: "binary",
        config,
      });
      plain = Readable.fromWeb(data as NodeWebReadableStream<Uint8Array>);
    } catch (err) {
      ciphertext.destroy();
      throw new Error(`cannot decrypt ${opts.source}: ${firstLine((err as Error).message)}`);
    }
    try {
      await pipeline(
        plain,
        extract({ cwd: tmp, strict: true, preserveOwner: false }),
        ...(opts.signal ? [{ signal: opts.signal }] : []),
      );
    } catch (err) {
      if (opts.signal?.aborted) throw err;
      throw new Error(
        `the result ${opts.source} did not decrypt and unpack completely: ${firstLine((err as Error).message)} (nothing was kept)`,
      );
    }
    const summary = await summarize(tmp);
    await chmod(tmp, 0o700);
    await rename(tmp, dest);
    return {
      ...summary,
      outputDir: dest,
      ...(summary.stdoutLog ? { stdoutLog: join(dest, summary.stdoutLog) } : {}),
    };
  } catch (err) {
    ciphertext.destroy();
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
}

/** Why the result is not there: still queued/running, or the job failed (its own last words). */
async function whyNoResult(ssh: SshSession, record: JobRecord): Promise<string> {
  const state = await queueState(ssh, record.jobId).catch(() => undefined);
  if (state !== undefined && !isFinalState(state)) {
    return `job ${record.jobId} is ${state}: its result is not written yet; run this again when it has ended`;
  }
  const failure = await lastFailureLine(ssh, record.logFile);
  return `no result at ${record.outputFile} on ${ssh.host}: job ${record.jobId}${state ? ` (${state})` : ""} wrote none${failure ? ` (${failure})` : ""}; see ${record.logFile}`;
}

/** Counts what was extracted and finds the wrapper's exit_code and stdout.log (top level or one down). */
async function summarize(dir: string): Promise<Omit<ResultsSummary, "outputDir">> {
  let files = 0;
  let bytes = 0;
  let exitFile: string | undefined;
  let stdoutLog: string | undefined;
  const walk = async (rel: string, depth: number): Promise<void> => {
    for (const e of await readdir(join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(r, depth + 1);
      else if (e.isFile()) {
        files++;
        bytes += (await stat(join(dir, r))).size;
        if (depth <= 1 && e.name === "exit_code" && exitFile === undefined) exitFile = r;
        if (depth <= 1 && e.name === "stdout.log" && stdoutLog === undefined) stdoutLog = r;
      }
    }
  };
  await walk("", 0);
  const out: Omit<ResultsSummary, "outputDir"> = { files, bytes };
  if (exitFile !== undefined) {
    const text = (await readFile(join(dir, exitFile), "utf8")).trim();
    if (/^\d{1,3}$/.test(text)) out.appExitCode = Number(text);
  }
  if (stdoutLog !== undefined) out.stdoutLog = stdoutLog;
  return out;
}

function report(s: ResultsSummary, record: JobRecord, raw: RawResultsFlags, io: CommandIo): void {
  if (raw.json) {
    io.stdout.write(`${JSON.stringify({ ok: true, jobId: record.jobId, ...s })}\n`);
    return;
  }
  if (raw.quiet) return;
  io.stdout.write(
    [
      `results    ${s.outputDir} (${s.files} files, ${s.bytes} bytes)`,
      ...(s.appExitCode !== undefined ? [`app exit   ${s.appExitCode}`] : []),
      ...(s.stdoutLog ? [`stdout     ${s.stdoutLog}`] : []),
      "",
    ].join("\n"),
  );
}

function checkDestination(dest: string): void {
  if (existsSync(dest)) {
    throw new UsageError(`--output-dir ${dest} already exists: remove it or give another --output-dir`);
  }
  const parent = dirname(dest);
  try {
    if (!statSync(parent).isDirectory()) throw new Error();
    accessSync(parent, constants.W_OK | constants.X_OK);
  } catch {
    throw new UsageError(`--output-dir: ${parent} is not a writable directory: create it or give another`);
  }
}

function firstLine(s: string): string {
  return s.split("\n", 1)[0] ?? "";
}
