/**
 * The plaintext of an artifact as a byte stream: a directory is tarred (tar-stream.ts), a regular
 * file is read as is. Used on the calling thread or inside the encryption worker alike.
 */

import { open, stat } from "node:fs/promises";
import type { Readable } from "node:stream";
import { tarDirectory, type TarTool } from "./tar-stream.js";

/** Large reads of a single file: fewer, fuller chunks for the encryption. */
const FILE_READ_BYTES = 1024 * 1024;

/** Rejects with one line, before any stream exists, if `input` is neither a readable dir nor file. */
export async function openPlaintext(input: string, tar: TarTool = "auto"): Promise<Readable> {
  const quoted = JSON.stringify(input);
  let isDir: boolean;
  try {
    const st = await stat(input);
    if (!st.isDirectory() && !st.isFile())
      throw new Error(`input ${quoted}: not a directory or a regular file`);
    isDir = st.isDirectory();
  } catch (err) {
    throw inputError(quoted, err);
  }
  if (isDir) return tarDirectory(input, tar);
  try {
    // Opened now, so a missing permission is reported before any stream exists.
    return (await open(input, "r")).createReadStream({ highWaterMark: FILE_READ_BYTES });
  } catch (err) {
    throw inputError(quoted, err);
  }
}

function inputError(quoted: string, err: unknown): Error {
  const code = (err as NodeJS.ErrnoException).code;
  if (!code) return err as Error;
  const why =
    code === "ENOENT"
      ? "does not exist"
      : code === "EACCES" || code === "EPERM"
        ? "not readable (permission denied)"
        : code;
  return new Error(`input ${quoted}: ${why}`);
}
