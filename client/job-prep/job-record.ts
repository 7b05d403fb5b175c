/**
 * What `hpcs job-prep` remembers about a submitted job on the user's machine, so that
 * `hpcs job-prep results <job>` can find the result and its key later, from another shell:
 * `<keys-dir>/hpcs-job-<jobid>.json` beside the private key `hpcs-job-<jobid>.key.asc` (both 0600).
 *
 * Both are written under a pending name before sbatch (a crash after submission must not lose the
 * key) and renamed to the job id once sbatch has answered; pending files of a failed submission are
 * removed.
 */

import { randomBytes } from "node:crypto";
import { readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";

export const RECORD_VERSION = 1;

export interface JobRecord {
  version: number;
  /** Slurm job id (without the `;cluster` suffix). */
  jobId: string;
  /** The cluster sbatch named (`<id>;<cluster>`), for multi-cluster sites. */
  cluster?: string;
  jobName: string;
  /** Login node and SSH user the job was submitted through. */
  host: string;
  port: number;
  user: string;
  workdir: string;
  jobDir: string;
  /** Cluster path of the encrypted result the job writes. */
  outputFile: string;
  /** Cluster path of the job's stdout/stderr. */
  logFile: string;
  /** Local path of the armored private key the result is encrypted to. */
  privateKeyFile: string;
  /** ISO 8601. */
  submitted: string;
}

export function recordFileName(jobId: string): string {
  return `hpcs-job-${jobId}.json`;
}

export function keyFileName(jobId: string): string {
  return `hpcs-job-${jobId}.key.asc`;
}

/** The local files of one job, first under a pending name, then under the job id. */
export class LocalJobFiles {
  private constructor(
    readonly dir: string,
    private readonly pending: string,
    private keyPath: string,
    private recordPath: string | undefined,
  ) {}

  /** Writes the private key (0600, exclusive) under a pending name. */
  static async create(dir: string, armoredPrivateKey: string): Promise<LocalJobFiles> {
    const pending = `pending-${randomBytes(6).toString("hex")}`;
    const keyPath = join(dir, `hpcs-job-${pending}.key.asc`);
    try {
      await writeFile(keyPath, armoredPrivateKey, { mode: 0o600, flag: "wx" });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw new Error(
        `cannot write the job's private key in ${dir} (${e.code ?? e.message}): make it writable or give --keys-dir`,
      );
    }
    return new LocalJobFiles(dir, pending, keyPath, undefined);
  }

  /** Where the private key will live once the job id is known. */
  finalKeyPath(jobId: string): string {
    return join(this.dir, keyFileName(jobId));
  }

  /** Writes the record (pending name) and renames key and record to the job id. */
  async commit(record: JobRecord): Promise<{ keyFile: string; recordFile: string }> {
    const pendingRecord = join(this.dir, `hpcs-job-${this.pending}.json`);
    this.recordPath = pendingRecord;
    await writeFile(pendingRecord, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600, flag: "wx" });
    const keyFile = this.finalKeyPath(record.jobId);
    const recordFile = join(this.dir, recordFileName(record.jobId));
    await rename(this.keyPath, keyFile);
    this.keyPath = keyFile;
    await rename(pendingRecord, recordFile);
    this.recordPath = recordFile;
    return { keyFile, recordFile };
  }

  /** Removes what was written (a submission that did not happen). */
  async discard(): Promise<void> {
    await rm(this.keyPath, { force: true });
    if (this.recordPath) await rm(this.recordPath, { force: true });
  }
}

/** Reads `<keys-dir>/hpcs-job-<id>.json`, or a record file given by path; one-line errors. */
export async function readJobRecord(path: string): Promise<JobRecord> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new Error(
      e.code === "ENOENT"
        ? `no job record ${path}: give the job id job-prep printed, and the same --keys-dir (or --config) it used`
        : `cannot read job record ${path}: ${e.code ?? e.message}`,
    );
  }
  let doc: Partial<JobRecord>;
  try {
    doc = JSON.parse(text) as Partial<JobRecord>;
  } catch {
    throw new Error(`job record ${path} is not JSON: restore it or remove it`);
  }
  for (const key of [
    "jobId",
    "host",
    "user",
    "workdir",
    "jobDir",
    "outputFile",
    "logFile",
    "privateKeyFile",
  ] as const) {
    if (typeof doc[key] !== "string" || doc[key] === "") {
      throw new Error(`job record ${path} has no ${key}: it was not written by hpcs job-prep`);
    }
  }
  if (doc.version !== RECORD_VERSION) {
    throw new Error(
      `job record ${path} has version ${String(doc.version)}; this hpcs reads ${RECORD_VERSION}`,
    );
  }
  if (typeof doc.port !== "number") throw new Error(`job record ${path} has no port`);
  return doc as JobRecord;
}
