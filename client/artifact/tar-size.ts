/**
 * The approximate size of the tar stream of a directory (or single file), for progress and ETA only:
 * one 512-byte header per entry (more for long names, which pax adds) plus the data padded to 512.
 * Symlinks are not followed, as in tar-stream.ts.
 */

import { lstat, opendir } from "node:fs/promises";
import { join } from "node:path";

const BLOCK = 512;

export async function estimateTarSize(path: string): Promise<number> {
  const st = await lstat(path);
  let total = 2 * BLOCK; // end-of-archive marker
  const pending: string[] = [];
  const add = (size: number, name: string): void => {
    total += BLOCK + Math.ceil(size / BLOCK) * BLOCK + (Buffer.byteLength(name) > 100 ? 2 * BLOCK : 0);
  };
  if (st.isDirectory()) pending.push(path);
  else add(st.isFile() ? st.size : 0, path);
  while (pending.length > 0) {
    const dir = pending.pop() as string;
    add(0, dir);
    for await (const e of await opendir(dir)) {
      const p = join(dir, e.name);
      if (e.isDirectory()) pending.push(p);
      else add(e.isFile() ? (await lstat(p)).size : 0, p.slice(path.length));
    }
  }
  return total;
}
