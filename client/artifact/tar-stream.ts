/**
 * Directory → tar byte stream (POSIX/pax, uncompressed: the ciphertext would not compress anyway and
 * the data is usually already compressed or incompressible).
 *
 * Checks happen before any stream exists: a missing, non-directory or unreadable path is refused with
 * one line and nothing has started (no half-written artifact, no upload to abandon).
 *
 * Symlinks are never followed (tar's `follow: false`): a link is archived as a link with its target
 * text, so nothing outside the directory is ever read or sent, whatever the links point to. On the
 * compute node such a link is recreated as is (dangling unless the same path exists there).
 * The directory argument itself may be a symlink: the user named it explicitly.
 *
 * Two tools write the same archive (see gnu-tar.ts): GNU tar in a child process when the machine has
 * it (the client image does; it is faster and smaller), else node-tar in this thread.
 */

import { constants } from "node:fs";
import { access, opendir, stat } from "node:fs/promises";
import { Readable } from "node:stream";
import { findGnuTar, gnuTarStream } from "./gnu-tar.js";

/** Which tar writes the archive: "auto" = GNU tar if on PATH (≥ 1.28), else the builtin node-tar. */
export type TarTool = "auto" | "gnu" | "builtin";

/** Entries are relative ("./a/b"), so extraction lands under whatever directory the node chooses. */
export async function tarDirectory(dir: string, tool: TarTool = "auto"): Promise<Readable> {
  await checkDirectory(dir);
  if (tool !== "builtin") {
    if (await findGnuTar()) return gnuTarStream(dir);
    if (tool === "gnu") throw new Error("GNU tar 1.28 or later is not on PATH: install it (Debian: tar)");
  }
  return builtinTar(dir);
}

async function builtinTar(dir: string): Promise<Readable> {
  // Loaded only here: node-tar is ~10 MiB of RSS in a thread that, with GNU tar, never needs it.
  const { create } = await import("tar");
  const pack = create(
    {
      cwd: dir,
      // No uid/gid/uname/gname/dev/ino/atime/ctime: they mean nothing on the compute node and would
      // leak local account names.
      portable: true,
      follow: false,
      // A file that cannot be read mid-way is an error, not a warning: an archive silently missing
      // files must never be uploaded.
      strict: true,
      // node-tar reads up to 16 MiB per file with several files in flight; 1 MiB keeps data-prep's
      // peak RSS under 200 MB whatever the dataset (bench/README.md "data-prep").
      maxReadSize: 1024 * 1024,
    },
    ["."],
  );
  // Minipass → Node Readable; Readable.from pulls through the async iterator (backpressure kept)
  // and turns an 'error' of the pack into an 'error' of the returned stream.
  return Readable.from(pack, { objectMode: false });
}

async function checkDirectory(dir: string): Promise<void> {
  const quoted = JSON.stringify(dir);
  let isDir: boolean;
  try {
    isDir = (await stat(dir)).isDirectory();
  } catch (err) {
    throw new Error(`data directory ${quoted}: ${describe(err)}`);
  }
  if (!isDir) throw new Error(`data directory ${quoted}: not a directory`);
  try {
    // Listing needs r, entering needs x: check both, then actually open it (ACLs, root-squashed NFS).
    await access(dir, constants.R_OK | constants.X_OK);
    await (await opendir(dir)).close();
  } catch (err) {
    throw new Error(`data directory ${quoted}: ${describe(err)}`);
  }
}

function describe(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  switch (code) {
    case "ENOENT":
      return "does not exist";
    case "EACCES":
    case "EPERM":
      return "not readable (permission denied)";
    case "ENOTDIR":
      return "a path component is not a directory";
    case "ELOOP":
      return "too many levels of symbolic links";
    default:
      return code ?? (err as Error).message.split("\n", 1)[0] ?? "unknown error";
  }
}
