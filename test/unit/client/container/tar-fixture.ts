/** Hand-made tar archives for the container tests: any path, type and link, including hostile ones. */

import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { Header } from "tar";
import type { ImageLayer } from "../../../../client/container/image-source.js";

export interface TarSpec {
  path: string;
  type?: "File" | "Directory" | "SymbolicLink" | "Link" | "CharacterDevice" | "BlockDevice" | "FIFO";
  data?: string | Buffer;
  mode?: number;
  uid?: number;
  gid?: number;
  /** Seconds. */
  mtime?: number;
  linkpath?: string;
  devmaj?: number;
  devmin?: number;
}

/** A ustar archive of exactly these entries, in this order, with the end-of-archive blocks. */
export function tarBytes(entries: TarSpec[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const type = e.type ?? (e.path.endsWith("/") ? "Directory" : "File");
    const data = Buffer.from(e.data ?? "");
    const h = new Header({
      path: e.path,
      type,
      mode: e.mode ?? (type === "Directory" ? 0o755 : 0o644),
      uid: e.uid ?? 0,
      gid: e.gid ?? 0,
      size: type === "File" ? data.length : 0,
      mtime: new Date((e.mtime ?? 1_700_000_000) * 1000),
      ...(e.linkpath !== undefined ? { linkpath: e.linkpath } : {}),
      ...(e.devmaj !== undefined ? { devmaj: e.devmaj, devmin: e.devmin ?? 0 } : {}),
    });
    const block = Buffer.alloc(512);
    if (h.encode(block, 0)) throw new Error(`fixture path too long for ustar: ${e.path}`);
    parts.push(block);
    if (type === "File" && data.length > 0) {
      parts.push(data, Buffer.alloc((512 - (data.length % 512)) % 512));
    }
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

export function sha256Hex(b: Buffer): string {
  return createHash("sha256").update(b).digest("hex");
}

/** Writes a layer file (optionally gzip-compressed) and returns it with its diff_id. */
export function writeLayer(
  dir: string,
  name: string,
  entries: TarSpec[],
  opts: { gzip?: boolean } = {},
): ImageLayer {
  const tar = tarBytes(entries);
  const path = join(dir, name);
  writeFileSync(path, opts.gzip ? gzipSync(tar) : tar);
  return { path, diffId: `sha256:${sha256Hex(tar)}` };
}
