/**
 * Small remote file operations over SFTP (info YAML files and the like): existence, a size-capped
 * read, an atomic write (temp name + rename, so a reader never sees half an info file) and removal.
 * Each call opens and ends its own SFTP channel so callers hold no channel state.
 */

import { randomBytes } from "node:crypto";
import { posix } from "node:path";
import type { SFTPWrapper } from "ssh2";
import { checkRemoteDir, checkRemoteName, remotePath } from "./remote-name.js";
import { SFTP_STATUS, isNoSuchFile, sftpStatus, shortMessage } from "./sftp-errors.js";
import type { SshSession } from "./ssh-session.js";
import { replace, sftpClose, sftpUnlink } from "./sftp-ops.js";

/** Default cap for `readFile`: info files are a few hundred bytes; anything big is not one. */
export const DEFAULT_MAX_READ = 1024 * 1024;

async function withSftp<T>(session: SshSession, fn: (sftp: SFTPWrapper) => Promise<T>): Promise<T> {
  const sftp = await session.sftp();
  try {
    return await fn(sftp);
  } finally {
    sftp.end();
  }
}

function describe(err: unknown, action: string, path: string, host: string): Error {
  switch (sftpStatus(err)) {
    case SFTP_STATUS.PERMISSION_DENIED:
      return new Error(`permission denied ${action} ${path} on ${host}`);
    case SFTP_STATUS.NO_SUCH_FILE:
      return new Error(`remote file ${path} does not exist on ${host}`);
  }
  return new Error(`failed ${action} ${path} on ${host}: ${shortMessage(err)}`);
}

/** Whether `path` exists (any type). Other errors (permission denied on a parent) are thrown. */
export function exists(session: SshSession, path: string): Promise<boolean> {
  return withSftp(
    session,
    (sftp) =>
      new Promise((resolve, reject) =>
        sftp.stat(path, (err) => {
          if (!err) resolve(true);
          else if (isNoSuchFile(err)) resolve(false);
          else reject(describe(err, "checking", path, session.host));
        }),
      ),
  );
}

/** Reads a small remote file; refuses files above `maxBytes` rather than buffering them. */
export function readFile(session: SshSession, path: string, maxBytes = DEFAULT_MAX_READ): Promise<Buffer> {
  return withSftp(session, async (sftp) => {
    const handle = await new Promise<Buffer>((resolve, reject) =>
      sftp.open(path, "r", (err, h) =>
        err ? reject(describe(err, "reading", path, session.host)) : resolve(h),
      ),
    );
    try {
      // Read by chunks until EOF instead of trusting stat's size: the file may grow meanwhile.
      const parts: Buffer[] = [];
      let total = 0;
      for (;;) {
        const buf = Buffer.alloc(32 * 1024);
        const n = await new Promise<number>((resolve, reject) =>
          sftp.read(handle, buf, 0, buf.length, total, (err, bytesRead) => {
            if (err && sftpStatus(err) === SFTP_STATUS.EOF) resolve(0);
            else if (err) reject(describe(err, "reading", path, session.host));
            else resolve(bytesRead);
          }),
        );
        if (n === 0) break;
        total += n;
        if (total > maxBytes) {
          throw new Error(
            `remote file ${path} on ${session.host} is larger than ${maxBytes} bytes: not reading it`,
          );
        }
        parts.push(buf.subarray(0, n));
      }
      return Buffer.concat(parts, total);
    } finally {
      await sftpClose(sftp, handle).catch(() => undefined);
    }
  });
}

/** Writes `<dir>/<name>` via a temp name in the same directory and an atomic rename. */
export function writeFileAtomic(
  session: SshSession,
  dir: string,
  name: string,
  data: Buffer | string,
  mode = 0o600,
): Promise<string> {
  checkRemoteDir(dir);
  const finalPath = remotePath(dir, name);
  // Random suffix: two writers never share a temp file; the leading name keeps it recognisable.
  const tmpPath = posix.join(dir, checkRemoteName(`${name}.${randomBytes(6).toString("hex")}.tmp`));
  return withSftp(session, async (sftp) => {
    try {
      await new Promise<void>((resolve, reject) =>
        sftp.writeFile(tmpPath, data, { mode }, (err) => (err ? reject(err) : resolve())),
      );
      await replace(sftp, tmpPath, finalPath);
      return finalPath;
    } catch (err) {
      await sftpUnlink(sftp, tmpPath).catch(() => undefined);
      if (sftpStatus(err) === SFTP_STATUS.NO_SUCH_FILE) {
        throw new Error(`remote directory ${dir} does not exist on ${session.host}`);
      }
      if (sftpStatus(err) === SFTP_STATUS.PERMISSION_DENIED) {
        throw new Error(`permission denied writing ${dir} on ${session.host}`);
      }
      throw describe(err, "writing", finalPath, session.host);
    }
  });
}

/** Removes a file; returns false if it was already absent (so cleanup can be repeated). */
export function remove(session: SshSession, path: string): Promise<boolean> {
  return withSftp(session, async (sftp) => {
    try {
      await sftpUnlink(sftp, path);
      return true;
    } catch (err) {
      if (isNoSuchFile(err)) return false;
      throw describe(err, "removing", path, session.host);
    }
  });
}
