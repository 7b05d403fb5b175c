/**
 * Atomic upload of a stream (ciphertext) to the remote at-rest directory over SFTP.
 *
 * Bytes go to `<dir>/<name>.part`, and only a complete, closed file is renamed to `<name>` — so a
 * reader (the job, or job-prep reading an info file) never sees a partial artifact under its final
 * name. Any failure (source error, write error, abort, dropped connection) removes the `.part`.
 *
 * Writes are pipelined: ssh2's `createWriteStream` waits for each 32 KiB WRITE's status before
 * sending the next, so throughput is bounded by round trips (~15 MB/s here). We keep up to
 * `maxInFlight` WRITE requests outstanding at increasing offsets, and pull from the source only when
 * a slot is free, so memory stays at about `maxInFlight × chunkSize` whatever the data size. SFTP
 * needs no remote shell, so the path is never interpreted by one.
 */

import { createHash } from "node:crypto";
import { addAbortSignal, type Readable } from "node:stream";
import type { SFTPWrapper } from "ssh2";
import { checkRemoteDir, checkRemoteName, remotePath } from "./remote-name.js";
import { SFTP_STATUS, sftpStatus, shortMessage } from "./sftp-errors.js";
import { RenameError, replace, sftpClose, sftpUnlink } from "./sftp-ops.js";
import type { SshSession } from "./ssh-session.js";

export interface UploadOptions {
  dir: string;
  name: string;
  /** Permissions of the created file; default 0o600 (ciphertext is the user's own business). */
  mode?: number;
  signal?: AbortSignal;
  /** Bytes per WRITE request; default 32 KiB (the size every SFTP server must accept). */
  chunkSize?: number;
  /** WRITE requests kept outstanding; default 64. */
  maxInFlight?: number;
}

export interface UploadResult {
  /** Final remote path. */
  path: string;
  bytes: number;
  /** Hex sha256 of the bytes sent, computed while streaming. */
  sha256: string;
}

const DEFAULT_CHUNK = 32 * 1024;
const DEFAULT_IN_FLIGHT = 64;

/** Uploads `source` to `<dir>/<name>` via `<name>.part` + rename; one-line errors, never a `.part` left. */
export async function uploadStream(
  session: SshSession,
  source: Readable,
  opts: UploadOptions,
): Promise<UploadResult> {
  const dir = checkRemoteDir(opts.dir);
  const finalPath = remotePath(dir, opts.name);
  const partPath = remotePath(dir, checkRemoteName(`${opts.name}.part`));
  const ctx: ErrorContext = { host: session.host, dir, partPath, finalPath, name: opts.name };
  if (opts.signal) {
    opts.signal.throwIfAborted();
    // Destroys the source on abort, which ends the write loop below with an AbortError.
    addAbortSignal(opts.signal, source);
  }

  const sftp = await session.sftp();
  let handle: Buffer | undefined;
  let created = false;
  try {
    handle = await sftpOpen(sftp, partPath, opts.mode ?? 0o600);
    created = true;
    const written = await pipelinedWrite(sftp, handle, source, {
      chunkSize: opts.chunkSize ?? DEFAULT_CHUNK,
      maxInFlight: opts.maxInFlight ?? DEFAULT_IN_FLIGHT,
    });
    const h = handle;
    handle = undefined;
    await sftpClose(sftp, h); // the server reports deferred write errors (NFS, quota) at close
    await replace(sftp, partPath, finalPath);
    created = false;
    return { path: finalPath, bytes: written.bytes, sha256: written.sha256 };
  } catch (err) {
    const message = await describeUploadError(err, sftp, ctx, opts.signal);
    // Bounded: on a dead connection ssh2 may never answer, and the caller must still get its error.
    if (handle) await bounded(sftpClose(sftp, handle));
    if (created) await bounded(sftpUnlink(sftp, partPath));
    source.destroy();
    throw new Error(message);
  } finally {
    sftp.end();
  }
}

/** Which source/stage failed: the source's own errors must not be mistaken for remote ones. */
class SourceError extends Error {}

async function pipelinedWrite(
  sftp: SFTPWrapper,
  handle: Buffer,
  source: Readable,
  limits: { chunkSize: number; maxInFlight: number },
): Promise<{ bytes: number; sha256: string }> {
  const hash = createHash("sha256");
  let position = 0;
  let inFlight = 0;
  let failure: unknown;
  let wake: (() => void) | undefined;
  // Small source chunks (openpgp emits many) are gathered into full requests; big ones are sliced.
  let pending: Buffer[] = [];
  let pendingLen = 0;

  const settled = (): void => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const send = (buf: Buffer): void => {
    const at = position;
    position += buf.length;
    inFlight++;
    sftp.write(handle, buf, 0, buf.length, at, (err) => {
      inFlight--;
      if (err && failure === undefined) failure = err;
      settled();
    });
  };
  const waitBelow = async (n: number): Promise<void> => {
    while (inFlight > n && failure === undefined) await new Promise<void>((r) => (wake = r));
    if (failure !== undefined) throw failure;
  };
  const flushFull = async (): Promise<void> => {
    while (pendingLen >= limits.chunkSize) {
      await waitBelow(limits.maxInFlight - 1);
      const all = pending.length === 1 ? (pending[0] as Buffer) : Buffer.concat(pending, pendingLen);
      send(all.subarray(0, limits.chunkSize));
      const rest = all.subarray(limits.chunkSize);
      pending = rest.length ? [rest] : [];
      pendingLen = rest.length;
    }
  };

  const iterator = source[Symbol.asyncIterator]();
  try {
    for (;;) {
      let next: IteratorResult<unknown>;
      try {
        next = await iterator.next();
      } catch (err) {
        throw new SourceError(shortMessage(err), { cause: err });
      }
      if (next.done) break;
      if (failure !== undefined) throw failure;
      const chunk = typeof next.value === "string" ? Buffer.from(next.value) : (next.value as Buffer);
      hash.update(chunk);
      pending.push(chunk);
      pendingLen += chunk.length;
      await flushFull();
    }
    if (pendingLen > 0) {
      await waitBelow(limits.maxInFlight - 1);
      send(pending.length === 1 ? (pending[0] as Buffer) : Buffer.concat(pending, pendingLen));
    }
    await waitBelow(0);
  } catch (err) {
    // Let outstanding requests finish before the caller closes and unlinks the handle.
    while (inFlight > 0) await new Promise<void>((r) => (wake = r));
    await iterator.return?.();
    throw err;
  }
  return { bytes: position, sha256: hash.digest("hex") };
}

function sftpOpen(sftp: SFTPWrapper, path: string, mode: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    sftp.open(path, "w", { mode }, (err, handle) => (err ? reject(new OpenError(err)) : resolve(handle)));
  });
}

class OpenError extends Error {
  constructor(readonly original: Error) {
    super(original.message);
  }
}

interface ErrorContext {
  host: string;
  dir: string;
  partPath: string;
  finalPath: string;
  name: string;
}

/** The one line for a failed upload; may ask the server (statvfs) whether the disk is full. */
async function describeUploadError(
  err: unknown,
  sftp: SFTPWrapper,
  ctx: ErrorContext,
  signal: AbortSignal | undefined,
): Promise<string> {
  if (signal?.aborted) return `upload of ${ctx.name} to ${ctx.host} aborted`;
  if (err instanceof SourceError)
    return `upload of ${ctx.name} to ${ctx.host} failed: reading the data: ${err.message}`;
  const status = sftpStatus(err instanceof OpenError ? err.original : err);
  switch (status) {
    case SFTP_STATUS.PERMISSION_DENIED:
      return `permission denied writing ${ctx.dir} on ${ctx.host}`;
    case SFTP_STATUS.NO_SUCH_FILE:
      return `remote directory ${ctx.dir} does not exist on ${ctx.host}`;
    case SFTP_STATUS.NO_CONNECTION:
    case SFTP_STATUS.CONNECTION_LOST:
      return `connection to ${ctx.host} lost while writing ${ctx.partPath}`;
    case SFTP_STATUS.FAILURE:
      if (err instanceof OpenError || err instanceof RenameError) break;
      // OpenSSH's sftp-server reports ENOSPC/EDQUOT/EIO all as plain FAILURE; statvfs tells them apart.
      return (await remoteDiskFull(sftp, ctx.dir))
        ? `remote disk full writing ${ctx.partPath} on ${ctx.host}`
        : `remote write failed for ${ctx.partPath} on ${ctx.host}: ${shortMessage(err)} (quota exceeded or I/O error on the remote filesystem?)`;
  }
  const stage =
    err instanceof OpenError ? "creating" : err instanceof RenameError ? "renaming to" : "writing";
  return `upload failed ${stage} ${err instanceof RenameError ? ctx.finalPath : ctx.partPath} on ${ctx.host}: ${shortMessage(err)}`;
}

/** Whether the remote filesystem holding `dir` has (almost) no space left; unknown counts as full. */
function remoteDiskFull(sftp: SFTPWrapper, dir: string): Promise<boolean> {
  return new Promise((resolve) => {
    try {
      sftp.ext_openssh_statvfs(dir, (err, fs: { f_bavail?: number; f_frsize?: number } | undefined) => {
        if (err || !fs || fs.f_bavail === undefined) return resolve(true);
        resolve(fs.f_bavail * (fs.f_frsize ?? 1) < 1024 * 1024);
      });
    } catch {
      resolve(true); // the server lacks statvfs@openssh.com: FAILURE on write is most often ENOSPC
    }
  });
}

/** Best-effort cleanup step: waits at most `ms`, never throws. */
function bounded(p: Promise<void>, ms = 10_000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)));
  return Promise.race([p.catch(() => undefined), timeout]).finally(() => clearTimeout(timer));
}
