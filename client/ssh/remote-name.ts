/**
 * Names and directories for files we create on the remote side. Names come from artifact names and
 * must never climb out of the at-rest directory or smuggle shell/SFTP surprises, so they are held to
 * a strict whitelist instead of being escaped.
 */

import { posix } from "node:path";

/** Letters, digits, `.`, `_`, `-`; starts with a letter or digit; at most 200 characters. */
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/;

/** Returns `name` if it is a safe single remote file name; throws one line otherwise. */
export function checkRemoteName(name: string): string {
  if (!NAME.test(name) || name.includes("..")) {
    throw new Error(
      `invalid remote file name ${JSON.stringify(name)}: use letters, digits, '.', '_' and '-' only (no '/', no '..', not starting with '.' or '-')`,
    );
  }
  return name;
}

/** Returns `dir` if it is an absolute, normalised remote directory without control characters. */
export function checkRemoteDir(dir: string): string {
  const trimmed = dir.length > 1 ? dir.replace(/\/$/, "") : dir;
  // eslint-disable-next-line no-control-regex
  const control = /[\x00-\x1f\x7f]/.test(dir);
  if (!dir.startsWith("/") || control || posix.normalize(trimmed) !== trimmed) {
    throw new Error(
      `invalid remote directory ${JSON.stringify(dir)}: give an absolute path without '..', '//' or control characters`,
    );
  }
  return dir;
}

/** `<dir>/<name>` after checking both. */
export function remotePath(dir: string, name: string): string {
  return posix.join(checkRemoteDir(dir), checkRemoteName(name));
}
