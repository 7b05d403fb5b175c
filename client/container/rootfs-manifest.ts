/**
 * A canonical listing of a root filesystem — one line per path, sorted: path, type, mode, owner,
 * mtime, and the sha256 of a file's content / a link's target / a device's numbers — and its digest.
 *
 * Two roots with the same listing are the same filesystem as far as a container can tell (hard-link
 * identity aside). It is computed either from a prepared `Rootfs` (content on disk, metadata from its
 * maps) or from a plain directory such as an unsquashfs'd partition (metadata from lstat), so the two
 * can be compared line by line. Files are hashed as streams, one at a time.
 */

import { createHash } from "node:crypto";
import { createReadStream, lstatSync, readdirSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import type { FileAttrs, Rootfs } from "./rootfs.js";

type Source = Rootfs | { dir: string };

/** Lines of the manifest, in order. */
export async function* manifestLines(source: Source): AsyncGenerator<string> {
  const rootfs = "attrs" in source ? source : undefined;
  const keys = listKeys(source.dir);
  const specials = rootfs
    ? [...rootfs.specials.keys()].filter((k) => !keys.has(k) && parentExists(source.dir, k))
    : [];
  const all = [...keys, ...specials].sort(compareBytes);
  for (const key of all) {
    const special = rootfs?.specials.get(key);
    if (special && !keys.has(key)) {
      const type = special.kind === "fifo" ? "p" : special.kind === "char" ? "c" : "b";
      yield line(key, type, special.attrs, `${special.major},${special.minor}`);
      continue;
    }
    const host = key === "" ? source.dir : join(source.dir, key);
    const st = lstatSync(host);
    const attrs: FileAttrs = rootfs?.attrs.get(key) ?? {
      mode: st.mode & 0o7777,
      uid: st.uid,
      gid: st.gid,
      mtime: Math.floor(st.mtimeMs / 1000),
    };
    if (st.isDirectory()) yield line(key, "d", attrs, "-");
    else if (st.isSymbolicLink())
      yield line(key, "l", { ...attrs, mode: 0o777 }, JSON.stringify(readlinkSync(host)));
    else if (st.isFile()) yield line(key, "f", attrs, await sha256File(host));
    else if (st.isFIFO()) yield line(key, "p", attrs, "0,0");
    else if (st.isCharacterDevice() || st.isBlockDevice()) {
      yield line(key, st.isCharacterDevice() ? "c" : "b", attrs, `${major(st.rdev)},${minor(st.rdev)}`);
    } else yield line(key, "?", attrs, "-");
  }
}

/** `sha256:<hex>` over the manifest's lines (each newline-terminated). */
export async function rootfsDigest(source: Source): Promise<string> {
  const h = createHash("sha256");
  for await (const l of manifestLines(source)) h.update(`${l}\n`);
  return `sha256:${h.digest("hex")}`;
}

function line(key: string, type: string, a: FileAttrs, detail: string): string {
  return `${JSON.stringify("/" + key)} ${type} ${a.mode.toString(8).padStart(4, "0")} ${a.uid}:${a.gid} ${a.mtime} ${detail}`;
}

function listKeys(dir: string): Set<string> {
  const keys = new Set<string>([""]);
  const walk = (rel: string): void => {
    for (const d of readdirSync(rel === "" ? dir : join(dir, rel), { withFileTypes: true })) {
      const key = rel === "" ? d.name : `${rel}/${d.name}`;
      keys.add(key);
      if (d.isDirectory()) walk(key);
    }
  };
  walk("");
  return keys;
}

function parentExists(dir: string, key: string): boolean {
  const i = key.lastIndexOf("/");
  try {
    return lstatSync(i < 0 ? dir : join(dir, key.slice(0, i))).isDirectory();
  } catch {
    return false;
  }
}

async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  await pipeline(createReadStream(path), h);
  return h.digest("hex");
}

function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/** Linux's encoding of device numbers in st_rdev (glibc's gnu_dev_major/minor). */
function major(rdev: number): number {
  return Number(((BigInt(rdev) >> 8n) & 0xfffn) | ((BigInt(rdev) >> 32n) & ~0xfffn));
}
function minor(rdev: number): number {
  return Number((BigInt(rdev) & 0xffn) | ((BigInt(rdev) >> 12n) & ~0xffn));
}
