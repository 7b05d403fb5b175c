/**
 * The few SFTP primitives both the streaming upload and the small-file helpers need, as promises:
 * close, unlink, and an atomic replace-by-rename.
 */

import type { SFTPWrapper } from "ssh2";
import { shortMessage } from "./sftp-errors.js";

export function sftpClose(sftp: SFTPWrapper, handle: Buffer): Promise<void> {
  return new Promise((resolve, reject) => sftp.close(handle, (err) => (err ? reject(err) : resolve())));
}

export function sftpUnlink(sftp: SFTPWrapper, path: string): Promise<void> {
  return new Promise((resolve, reject) => sftp.unlink(path, (err) => (err ? reject(err) : resolve())));
}

/**
 * Renames over an existing file atomically. Plain SFTP RENAME (v3) fails if the target exists, so
 * OpenSSH's `posix-rename@openssh.com` (rename(2) semantics) is used whenever the server offers it;
 * otherwise the old file is removed first — a short window where the name is absent, never partial.
 */
export async function replace(sftp: SFTPWrapper, from: string, to: string): Promise<void> {
  const cb =
    (resolve: () => void, reject: (e: Error) => void) =>
    (err: Error | undefined | null): void =>
      err ? reject(new RenameError(err)) : resolve();
  try {
    await new Promise<void>((resolve, reject) => sftp.ext_openssh_rename(from, to, cb(resolve, reject)));
    return;
  } catch (err) {
    // ssh2 throws synchronously (a plain Error, rejecting the promise) when the server lacks the extension.
    if (err instanceof RenameError || !/does not support/i.test(shortMessage(err))) throw err;
  }
  await sftpUnlink(sftp, to).catch(() => undefined);
  await new Promise<void>((resolve, reject) => sftp.rename(from, to, cb(resolve, reject)));
}

export class RenameError extends Error {
  readonly code: unknown;
  constructor(original: Error) {
    super(original.message);
    this.code = (original as { code?: unknown }).code;
  }
}
