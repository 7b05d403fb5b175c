/**
 * Image layers → one root filesystem, applied bottom-up with the OCI layer rules:
 *
 *   - an entry replaces whatever was at its path, except that a directory over a directory merges;
 *   - `.wh.<name>` removes `<name>` from the lower layers; `.wh..wh..opq` empties its directory of
 *     everything the lower layers put there (what this layer adds stays); other `.wh..wh.*` names are
 *     aufs bookkeeping and are skipped; whiteout files themselves never appear in the result;
 *   - entry paths must be relative and must not contain `..`: such a layer is refused, not repaired;
 *     links in the path are resolved inside the root (in-root-path.ts), so nothing outside it is
 *     touched whatever the layer contains.
 *
 * What goes where: the directory holds the *content* (files, directories, symlinks, hardlinks) and
 * nothing else; it is private to the user running this (directories 0700, files 0600), never setuid,
 * never owned by anyone else. The *metadata* the image specifies — mode with its special bits, owner,
 * group, mtime — and the nodes a non-root user cannot create (character/block devices, FIFOs) live in
 * `Rootfs.attrs` / `Rootfs.specials`, which squashfs.ts hands to mksquashfs as pseudo definitions. So the
 * result is the same whether or not this runs as root, and needs no privilege at all.
 *
 * Every layer is checked against its `diff_id` (sha256 of the uncompressed tar) as it streams through;
 * extended attributes (file capabilities, SELinux labels) are not kept: Node cannot set them, and a
 * runtime that runs the image as the calling user does not honour them.
 */

import { createHash } from "node:crypto";
import {
  closeSync,
  linkSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeSync,
} from "node:fs";
import { open } from "node:fs/promises";
import { join, posix } from "node:path";
import { pipeline, type Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import type { ReadEntry } from "tar";
import { firstLine } from "./errors.js";
import type { ImageLayer } from "./image-source.js";
import { lstatOrUndefined, resolveInRoot } from "./in-root-path.js";
import { walkTar, type TarEntrySink } from "./tar-walk.js";

export interface FileAttrs {
  /** Permission and special bits (0o7777). */
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch (squashfs keeps 32-bit unsigned seconds). */
  mtime: number;
}

export interface SpecialNode {
  kind: "char" | "block" | "fifo";
  major: number;
  minor: number;
  attrs: FileAttrs;
}

/** A root filesystem: content in `dir`, metadata by key (path relative to `dir`, "" = the root). */
export interface Rootfs {
  dir: string;
  attrs: Map<string, FileAttrs>;
  specials: Map<string, SpecialNode>;
}

/** Directories the layers imply without listing them get what Docker gives them. */
export const DEFAULT_DIR_ATTRS: FileAttrs = { mode: 0o755, uid: 0, gid: 0, mtime: 0 };
const MAX_MTIME = 0xffffffff;

/** An empty root filesystem over an existing, empty, private directory. */
export function emptyRootfs(dir: string): Rootfs {
  return { dir, attrs: new Map([["", { ...DEFAULT_DIR_ATTRS }]]), specials: new Map() };
}

/** Applies the layers, bottom first, onto `rootfs`; rejects on the first bad layer (see module doc). */
export async function applyLayers(rootfs: Rootfs, layers: ImageLayer[], signal: AbortSignal): Promise<void> {
  for (const [i, layer] of layers.entries()) {
    signal.throwIfAborted();
    await applyLayer(rootfs, layer, `layer ${i + 1}/${layers.length} (${layer.diffId.slice(0, 19)})`, signal);
  }
}

const GZIP_MAGIC = [0x1f, 0x8b];
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];

async function layerStream(path: string, what: string): Promise<Readable> {
  const handle = await open(path, "r");
  const head = Buffer.alloc(4);
  try {
    await handle.read(head, 0, 4, 0);
  } catch (err) {
    await handle.close();
    throw err;
  }
  if (ZSTD_MAGIC.every((b, i) => head[i] === b)) {
    await handle.close();
    throw new Error(
      `${what} is zstd-compressed, which this client cannot read: export it with gzip or uncompressed layers`,
    );
  }
  const raw = handle.createReadStream({ highWaterMark: 1024 * 1024 });
  if (!GZIP_MAGIC.every((b, i) => head[i] === b)) return raw;
  return pipeline(raw, createGunzip(), () => undefined);
}

async function* hashing(source: Readable, hash: ReturnType<typeof createHash>): AsyncGenerator<Buffer> {
  for await (const chunk of source) {
    hash.update(chunk as Buffer);
    yield chunk as Buffer;
  }
}

/** Applies one layer; exported for tests, which feed layers without an image around them. */
export async function applyLayer(
  rootfs: Rootfs,
  layer: ImageLayer,
  what: string,
  signal: AbortSignal,
): Promise<void> {
  const hash = createHash("sha256");
  const applier = new LayerApplier(rootfs, what);
  const source = await layerStream(layer.path, what);
  try {
    await walkTar(hashing(source, hash), (entry) => applier.apply(entry), signal);
  } catch (err) {
    signal.throwIfAborted();
    const why = firstLine(err);
    throw new Error(why.startsWith(what) ? why : `${what}: ${why}`);
  } finally {
    applier.closeAll();
    source.destroy();
  }
  const digest = `sha256:${hash.digest("hex")}`;
  if (digest !== layer.diffId) {
    throw new Error(`${what} does not match its diff_id (got ${digest}): the image archive is corrupt`);
  }
}

/** One layer's entries, applied in order (synchronously: see tar-walk.ts). */
class LayerApplier {
  /** Keys this layer created: an opaque directory keeps them. */
  private readonly mine = new Set<string>();
  private readonly writing = new Set<number>();

  constructor(
    private readonly rootfs: Rootfs,
    private readonly what: string,
  ) {}

  closeAll(): void {
    for (const fd of this.writing) closeSync(fd);
    this.writing.clear();
  }

  apply(entry: ReadEntry): TarEntrySink | undefined {
    const rel = this.entryPath(entry.path);
    const base = posix.basename(rel);
    const parent = rel.includes("/") ? posix.dirname(rel) : "";

    if (base.startsWith(".wh.")) {
      this.whiteout(parent, base);
      return undefined;
    }
    if (rel === "") {
      if (entry.type !== "Directory") throw this.error(entry.path, "the root must be a directory");
      this.rootfs.attrs.set("", attrsOf(entry));
      return undefined;
    }
    const parentKey = resolveInRoot(this.rootfs.dir, parent, {
      followLast: true,
      create: (key) => {
        this.rootfs.attrs.set(key, { ...DEFAULT_DIR_ATTRS });
        this.rootfs.specials.delete(key);
        this.mine.add(key);
      },
    });
    const parentStat = lstatOrUndefined(this.host(parentKey));
    if (!parentStat?.isDirectory()) throw this.error(entry.path, `/${parentKey} is not a directory`);
    const key = parentKey === "" ? base : `${parentKey}/${base}`;
    const host = this.host(key);
    const existing = lstatOrUndefined(host);
    this.mine.add(key);

    switch (entry.type) {
      case "Directory":
        if (!existing?.isDirectory()) {
          this.remove(key);
          mkdirPrivate(host);
        }
        this.rootfs.attrs.set(key, attrsOf(entry));
        return undefined;
      case "File":
      case "OldFile":
      case "ContiguousFile":
        this.remove(key);
        this.rootfs.attrs.set(key, attrsOf(entry));
        return this.fileSink(host);
      case "SymbolicLink":
        this.remove(key);
        symlinkSync(entry.linkpath ?? "", host);
        this.rootfs.attrs.set(key, attrsOf(entry));
        return undefined;
      case "Link":
        this.hardlink(entry, key);
        return undefined;
      case "CharacterDevice":
      case "BlockDevice":
      case "FIFO":
        this.remove(key);
        this.rootfs.specials.set(key, {
          kind: entry.type === "FIFO" ? "fifo" : entry.type === "CharacterDevice" ? "char" : "block",
          major: entry.header.devmaj ?? 0,
          minor: entry.header.devmin ?? 0,
          attrs: attrsOf(entry),
        });
        return undefined;
      default:
        throw this.error(entry.path, `unsupported tar entry type ${entry.type}`);
    }
  }

  private entryPath(raw: string): string {
    if (raw.startsWith("/")) throw this.error(raw, "absolute path: layer entries must be relative");
    if (raw.includes("\n"))
      throw this.error(raw, "newline in a file name (not representable in squashfs pseudo files)");
    const parts = raw.split("/").filter((p) => p !== "" && p !== ".");
    if (parts.includes("..")) throw this.error(raw, "'..' in the path would escape the root filesystem");
    return parts.join("/");
  }

  private whiteout(parent: string, base: string): void {
    const dirKey = resolveInRoot(this.rootfs.dir, parent, { followLast: true });
    if (!lstatOrUndefined(this.host(dirKey))?.isDirectory()) return;
    if (base === ".wh..wh..opq") {
      this.clearOpaque(dirKey);
    } else if (!base.startsWith(".wh..wh.")) {
      const name = base.slice(".wh.".length);
      if (name === "" || name === "." || name === "..")
        throw this.error(`${parent}/${base}`, "invalid whiteout name");
      this.remove(dirKey === "" ? name : `${dirKey}/${name}`);
    }
  }

  /** Removes what lower layers put in the directory, keeping (and descending into) this layer's. */
  private clearOpaque(dirKey: string): void {
    const prefix = dirKey === "" ? "" : `${dirKey}/`;
    for (const name of readdirSync(this.host(dirKey))) {
      const key = `${prefix}${name}`;
      if (!this.mine.has(key)) this.remove(key);
      else if (lstatSync(this.host(key)).isDirectory()) this.clearOpaque(key);
    }
    for (const key of [...this.rootfs.specials.keys()]) {
      if (key.startsWith(prefix) && !key.slice(prefix.length).includes("/") && !this.mine.has(key)) {
        this.rootfs.specials.delete(key);
      }
    }
  }

  private hardlink(entry: ReadEntry, key: string): void {
    const target = this.entryPath(entry.linkpath ?? "");
    const targetParent = target.includes("/") ? posix.dirname(target) : "";
    const parentKey = resolveInRoot(this.rootfs.dir, targetParent, { followLast: true });
    const targetKey = parentKey === "" ? posix.basename(target) : `${parentKey}/${posix.basename(target)}`;
    if (targetKey === key) return;
    const special = this.rootfs.specials.get(targetKey);
    if (special) {
      this.remove(key);
      this.rootfs.specials.set(key, { ...special });
      return;
    }
    const st = lstatOrUndefined(this.host(targetKey));
    if (!st || st.isDirectory()) {
      throw this.error(
        entry.path,
        `hard link to ${JSON.stringify(entry.linkpath)}, which is not an existing file`,
      );
    }
    this.remove(key);
    linkSync(this.host(targetKey), this.host(key));
    // One inode, one set of attributes: the link shares its target's.
    this.rootfs.attrs.set(key, this.rootfs.attrs.get(targetKey) ?? attrsOf(entry));
  }

  private fileSink(host: string): TarEntrySink {
    const fd = openSync(host, "wx", 0o600);
    this.writing.add(fd);
    return {
      data: (chunk) => {
        for (let off = 0; off < chunk.length;) off += writeSync(fd, chunk, off);
      },
      end: () => {
        if (this.writing.delete(fd)) closeSync(fd);
      },
    };
  }

  /** Removes whatever is at `key` (recursively, never following links) and the specials under it. */
  private remove(key: string): void {
    rmSync(this.host(key), { recursive: true, force: true });
    const prefix = `${key}/`;
    for (const k of [...this.rootfs.specials.keys()]) {
      if (k === key || k.startsWith(prefix)) this.rootfs.specials.delete(k);
    }
  }

  private host(key: string): string {
    return key === "" ? this.rootfs.dir : join(this.rootfs.dir, key);
  }

  private error(path: string, why: string): Error {
    return new Error(`${this.what}: entry ${JSON.stringify(path)}: ${why}`);
  }
}

function mkdirPrivate(host: string): void {
  // 0700 whatever the image says: the image's mode is metadata (attrs), the tree stays private.
  mkdirSync(host, { mode: 0o700 });
}

function attrsOf(entry: ReadEntry): FileAttrs {
  const mtime = entry.mtime ? Math.floor(entry.mtime.getTime() / 1000) : 0;
  return {
    mode: (entry.mode ?? 0o644) & 0o7777,
    uid: entry.uid ?? 0,
    gid: entry.gid ?? 0,
    mtime: Math.min(Math.max(mtime, 0), MAX_MTIME),
  };
}
