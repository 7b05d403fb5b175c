/**
 * Rootfs → squashfs image with `mksquashfs` (squashfs-tools), the read-only filesystem apptainer and
 * singularity mount from a SIF (squashfuse or the kernel; both read gzip).
 *
 * Options, and why:
 *   -pf <file>          every path's mode, owner, group and mtime as a pseudo definition (`M`; `m` for
 *                       directories, whose mtime is set on disk), and the device/FIFO nodes
 *                       (`C`/`B`/`I`): the image's metadata, not the private copy's
 *                       (rootfs.ts), so no privilege is needed and nothing depends on who runs this
 *   -root-*             the same for the root directory, which pseudo definitions cannot name
 *   -no-xattrs          none were kept (rootfs.ts), and none of the build machine's must leak in
 *   -comp gzip          the compressor every squashfuse and kernel can read
 *   -reproducible, -mkfs-time T   same tree + same T → byte-identical image (T = the image's creation
 *                       time), so a SIF can be rebuilt and compared
 *   -noappend           never add to an existing file
 * Not -all-root (it would override the owners set by -pf: images do have non-root files, e.g. a
 * service user's home).
 *
 * The temporary pseudo file and a half-written image are removed on every path.
 */

import { spawn } from "node:child_process";
import { createWriteStream, lstatSync, readdirSync, utimesSync } from "node:fs";
import { rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { once } from "node:events";
import { firstLine } from "./errors.js";
import { DEFAULT_DIR_ATTRS, type FileAttrs, type Rootfs } from "./rootfs.js";

export interface SquashfsOptions {
  rootfs: Rootfs;
  /** Output file; must not exist. */
  outPath: string;
  /** Where the pseudo-definition file is written (removed afterwards). */
  pseudoPath: string;
  /** Filesystem creation time, seconds since the epoch. */
  mkfsTime: number;
  signal: AbortSignal;
  /** The mksquashfs binary (default: `mksquashfs` on PATH). */
  mksquashfs?: string;
  /** Threads for compression (default: mksquashfs's own, all processors). */
  processors?: number;
}

export async function makeSquashfs(opts: SquashfsOptions): Promise<{ size: number }> {
  opts.signal.throwIfAborted();
  try {
    await writePseudoFile(opts.rootfs, opts.pseudoPath);
    const root = opts.rootfs.attrs.get("") ?? DEFAULT_DIR_ATTRS;
    const args = [
      opts.rootfs.dir,
      opts.outPath,
      "-noappend",
      "-no-xattrs",
      "-comp",
      "gzip",
      "-reproducible",
      "-mkfs-time",
      String(opts.mkfsTime),
      "-root-time",
      String(root.mtime),
      "-root-mode",
      (root.mode & 0o7777).toString(8),
      "-root-uid",
      String(root.uid),
      "-root-gid",
      String(root.gid),
      "-pf",
      opts.pseudoPath,
      "-quiet",
      "-no-progress",
      ...(opts.processors ? ["-processors", String(opts.processors)] : []),
    ];
    await runMksquashfs(opts.mksquashfs ?? "mksquashfs", args, opts.signal);
    return { size: (await stat(opts.outPath)).size };
  } catch (err) {
    await rm(opts.outPath, { force: true });
    throw err;
  } finally {
    await rm(opts.pseudoPath, { force: true });
  }
}

async function runMksquashfs(bin: string, args: string[], signal: AbortSignal): Promise<void> {
  const child = spawn(bin, args, { stdio: ["ignore", "ignore", "pipe"], signal });
  let stderr = "";
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (s: string) => {
    // Only the tail matters for the error line; never let a chatty tool grow this without bound.
    stderr = (stderr + s).slice(-4096);
  });
  const [code, sig] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (c, s) => resolve([c, s]));
  }).catch((err: NodeJS.ErrnoException) => {
    signal.throwIfAborted();
    if (err.code === "ENOENT") throw new Error(`${bin} not found: install squashfs-tools`);
    throw new Error(`cannot run ${bin}: ${firstLine(err)}`);
  });
  signal.throwIfAborted();
  if (code !== 0) {
    const last = stderr.trim().split("\n").filter(Boolean).pop() ?? "no message";
    throw new Error(`mksquashfs failed (${code ?? sig}): ${last}`);
  }
  // mksquashfs only warns (and exits 0) when it skips a pseudo definition: that is metadata lost.
  const ignored = stderr.split("\n").find((l) => /ignoring/i.test(l));
  if (ignored) throw new Error(`mksquashfs skipped a definition: ${ignored.trim()}`);
}

/** One definition per path (sorted: the file is reproducible too), streamed to disk. */
async function writePseudoFile(rootfs: Rootfs, path: string): Promise<void> {
  const out = createWriteStream(path, { flags: "wx", mode: 0o600 });
  const write = async (line: string): Promise<void> => {
    if (!out.write(line)) await once(out, "drain");
  };
  try {
    const onDisk = new Set<string>();
    const walk = async (rel: string): Promise<void> => {
      const names = readdirSync(rel === "" ? rootfs.dir : join(rootfs.dir, rel)).sort();
      for (const name of names) {
        const key = rel === "" ? name : `${rel}/${name}`;
        onDisk.add(key);
        const host = join(rootfs.dir, key);
        const st = lstatSync(host);
        const a = rootfs.attrs.get(key) ?? fallbackAttrs(st.mode);
        const mode = (a.mode & 0o7777).toString(8);
        if (st.isDirectory()) {
          // mksquashfs 4.5 turns a directory given an `M` (with time) into a leaf and then ignores
          // everything below it; `m` keeps it a directory, and its mtime comes from the disk, set
          // after its contents are complete (children first: adding an entry changes it).
          await write(`${pseudoName(key)} m ${mode} ${a.uid} ${a.gid}\n`);
          await walk(key);
          utimesSync(host, a.mtime, a.mtime);
        } else {
          await write(`${pseudoName(key)} M ${a.mtime} ${mode} ${a.uid} ${a.gid}\n`);
        }
      }
    };
    await walk("");
    for (const [key, s] of [...rootfs.specials].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      if (onDisk.has(key) || !parentOnDisk(onDisk, key)) continue;
      const a = s.attrs;
      const head = `${pseudoName(key)} ${s.kind === "fifo" ? "I" : s.kind === "char" ? "C" : "B"} ${a.mtime} ${(a.mode & 0o7777).toString(8)} ${a.uid} ${a.gid}`;
      await write(s.kind === "fifo" ? `${head} f\n` : `${head} ${s.major} ${s.minor}\n`);
    }
    out.end();
    await once(out, "finish");
  } catch (err) {
    out.destroy();
    throw err;
  }
}

function parentOnDisk(onDisk: Set<string>, key: string): boolean {
  const i = key.lastIndexOf("/");
  return i < 0 || onDisk.has(key.slice(0, i));
}

function fallbackAttrs(mode: number): FileAttrs {
  return { mode: mode & 0o777, uid: 0, gid: 0, mtime: 0 };
}

/**
 * A path as mksquashfs's pseudo-file parser reads it: every byte but [A-Za-z0-9._/-] preceded by a
 * backslash (which takes the next byte literally, spaces and quotes included). Newlines cannot be
 * escaped there; rootfs.ts refuses them up front.
 */
export function pseudoName(key: string): string {
  if (key.includes("\n")) throw new Error(`path ${JSON.stringify(key)} contains a newline`);
  return key.replace(/[^A-Za-z0-9._/-]/gu, (ch) => `\\${ch}`);
}
