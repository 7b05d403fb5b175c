/**
 * Atomic upload of a stream (ciphertext) to the remote at-rest directory.
 *
 * Bytes go to `<dir>/<name>.part`, and only a complete, closed file is renamed to `<name>` — so a
 * reader (the job, or job-prep reading an info file) never sees a partial artifact under its final
 * name. Any failure (source error, write error, abort, dropped connection) removes the `.part`.
 *
 * SFTP creates the `.part` (its status codes tell "permission denied" from "no such directory"),
 * renames and removes it. The bytes themselves go into `cat` on an exec channel (cat-channel.ts, the
 * cheaper path), or as pipelined SFTP WRITEs (sftp-writer.ts) where the server runs no commands or
 * `transport: "sftp"` asks for it. Either way memory stays bounded by the SSH window or the WRITEs
 * in flight, whatever the data size, and no remote shell ever parses the path.
 */

import { addAbortSignal, type Readable } from "node:stream";
import type { SFTPWrapper } from "ssh2";
import { CatFailed, ChannelLost, openCat } from "./cat-channel.js";
import { checkRemoteDir, checkRemoteName, remotePath } from "./remote-name.js";
import { SFTP_STATUS, sftpStatus, shortMessage } from "./sftp-errors.js";
import { RenameError, replace, sftpClose, sftpUnlink } from "./sftp-ops.js";
import { pipelinedWrite } from "./sftp-writer.js";
import type { SshSession } from "./ssh-session.js";
import { SourceError, type Written } from "./written.js";

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
  /**
   * How the bytes travel: "auto" (default) streams them into `cat` on an exec channel and falls
   * back to SFTP WRITEs where no command can run; "sftp" always uses SFTP.
   */
  transport?: "auto" | "sftp";
  /** The remote command for "auto"; tests replace it to exercise the fallback. Default CAT_COMMAND. */
  catCommand?: string;
}

export interface UploadResult {
  /** Final remote path. */
  path: string;
  bytes: number;
  /** Hex sha256 of the bytes sent, computed while streaming. */
  sha256: string;
  /** Which transport carried the bytes. */
  transport: "cat" | "sftp";
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
  let abortCat: (() => Promise<void>) | undefined;
  try {
    handle = await sftpOpen(sftp, partPath, opts.mode ?? 0o600);
    created = true;
    let written: Written | undefined;
    let transport: UploadResult["transport"] = "sftp";
    if ((opts.transport ?? "auto") === "auto") {
      await sftpClose(sftp, handle); // cat opens the file itself; it keeps the mode set here
      handle = undefined;
      const cat = await openCat(session.client, partPath, opts.catCommand);
      if (cat) {
        abortCat = () => cat.abort();
        written = await cat.write(source);
        abortCat = undefined;
        transport = "cat";
      }
    }
    if (!written) {
      handle ??= await sftpOpen(sftp, partPath, opts.mode ?? 0o600); // again, when no cat could run
      written = await pipelinedWrite(sftp, handle, source, {
        chunkSize: opts.chunkSize ?? DEFAULT_CHUNK,
        maxInFlight: opts.maxInFlight ?? DEFAULT_IN_FLIGHT,
      });
      const h = handle;
      handle = undefined;
      await sftpClose(sftp, h); // the server reports deferred write errors (NFS, quota) at close
    }
    await replace(sftp, partPath, finalPath);
    created = false;
    return { path: finalPath, bytes: written.bytes, sha256: written.sha256, transport };
  } catch (err) {
    const message = await describeUploadError(err, sftp, ctx, opts.signal);
    // Bounded: on a dead connection ssh2 may never answer, and the caller must still get its error.
    if (abortCat) await bounded(abortCat());
    if (handle) await bounded(sftpClose(sftp, handle));
    if (created) await bounded(sftpUnlink(sftp, partPath));
    source.destroy();
    throw new Error(message);
  } finally {
    sftp.end();
  }
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
  if (err instanceof ChannelLost) return `connection to ${ctx.host} lost while writing ${ctx.partPath}`;
  if (err instanceof CatFailed) {
    if (
      /no space left/i.test(err.detail) ||
      (!/quota/i.test(err.detail) && (await remoteDiskFull(sftp, ctx.dir)))
    )
      return `remote disk full writing ${ctx.partPath} on ${ctx.host}`;
    return `remote write failed for ${ctx.partPath} on ${ctx.host}: ${err.message} (quota exceeded or I/O error on the remote filesystem?)`;
  }
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
