/**
 * A benchmark dataset: a directory tree of mixed file sizes, like real data-prep input (many small
 * files, some medium, a few large), generated once per size and cached under
 * /var/tmp/hpcs-bench-data/<N>GiB for later runs.
 *
 * Contents are an AES-256-CTR keystream from a fixed seed: incompressible (no method can win by
 * compressing), identical on every machine, and generated at memory speed so creating a 4 GiB tree
 * takes seconds. File sizes come from a seeded PRNG, so a given size always yields the same tree.
 */

import { createCipheriv, createHash, randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";

export const DATASET_ROOT = "/var/tmp/hpcs-bench-data";
/** Bumped whenever the layout below changes, so an old cached tree is regenerated. */
const LAYOUT_VERSION = 1;
const MIB = 1024 * 1024;

export interface Dataset {
  dir: string;
  /** Sum of the files' sizes (the plaintext the methods are measured against). */
  bytes: number;
  files: number;
  /** Files per class, for the report. */
  small: number;
  medium: number;
  large: number;
}

/** Size classes: share of the bytes and the range of one file's size. */
const CLASSES = [
  { name: "small", share: 0.1, min: 1, max: 64 * 1024 },
  { name: "medium", share: 0.3, min: 1 * MIB, max: 32 * MIB },
  { name: "large", share: 0.6, min: 128 * MIB, max: 384 * MIB },
] as const;
/** Small files are spread over directories of this many entries, as real trees are. */
const FILES_PER_DIR = 256;

/** The dataset of `gib` GiB, generated unless a complete one is cached. Progress goes to `log`. */
export async function ensureDataset(gib: number, log: (line: string) => void): Promise<Dataset> {
  const dir = join(DATASET_ROOT, `${gib}GiB`);
  const manifest = `${dir}.json`;
  try {
    const cached = JSON.parse(await readFile(manifest, "utf8")) as Dataset & { version: number };
    if (cached.version === LAYOUT_VERSION && cached.dir === dir) return cached;
  } catch {
    // no usable manifest: (re)generate
  }
  log(`generating a ${gib} GiB dataset in ${dir} (once; reused by later runs)...`);
  await mkdir(DATASET_ROOT, { recursive: true });
  // Built beside and renamed into place, and the manifest written last: an interrupted generation
  // never passes for a complete dataset.
  const tmp = `${dir}.tmp-${randomBytes(4).toString("hex")}`;
  await rm(manifest, { force: true });
  try {
    const counts = await generate(tmp, gib * 1024 * MIB);
    await rm(dir, { recursive: true, force: true });
    await rename(tmp, dir);
    const dataset: Dataset = { dir, bytes: gib * 1024 * MIB, ...counts };
    await writeFile(manifest, JSON.stringify({ version: LAYOUT_VERSION, ...dataset }) + "\n");
    return dataset;
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
}

async function generate(
  dir: string,
  total: number,
): Promise<{ files: number; small: number; medium: number; large: number }> {
  const random = mulberry32(0x4850_4353 ^ total); // "HPCS"
  const seed = createHash("sha256").update(`hpcs-bench-data-v${LAYOUT_VERSION}`).digest();
  const keystream = createCipheriv("aes-256-ctr", seed, Buffer.alloc(16));
  const counts = { files: 0, small: 0, medium: 0, large: 0 };
  let left = total;
  for (const [i, cls] of CLASSES.entries()) {
    // The last class takes whatever is left, so the total is exact.
    let budget = i === CLASSES.length - 1 ? left : Math.floor(total * cls.share);
    left -= budget;
    for (let n = 0; budget > 0; n++) {
      const size = Math.min(budget, Math.floor(cls.min + random() * (cls.max - cls.min)));
      budget -= size;
      const sub = join(dir, cls.name, String(Math.floor(n / FILES_PER_DIR)).padStart(4, "0"));
      if (n % FILES_PER_DIR === 0) await mkdir(sub, { recursive: true });
      await writeBytes(join(sub, `f${String(n).padStart(6, "0")}.bin`), size, keystream);
      counts.files++;
      counts[cls.name]++;
    }
  }
  return counts;
}

/** `size` keystream bytes into a new file, 1 MiB at a time (memory flat whatever the size). */
async function writeBytes(path: string, size: number, keystream: ReturnType<typeof createCipheriv>) {
  if (size <= MIB) return writeFile(path, keystream.update(Buffer.alloc(size)));
  const zeros = Buffer.alloc(MIB);
  let left = size;
  const source = new Readable({
    read() {
      if (left <= 0) return void this.push(null);
      const n = Math.min(MIB, left);
      left -= n;
      this.push(keystream.update(n === MIB ? zeros : zeros.subarray(0, n)));
    },
  });
  await pipeline(source, createWriteStream(path));
}

/** Small, fast, seedable PRNG in [0, 1): file sizes only, nothing security-related. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
