/**
 * SIF (Singularity Image Format, spec version 01), written around an existing squashfs image: the
 * container file apptainer and singularity run. Layout as github.com/sylabs/sif/v2 writes it (all
 * integers little-endian, structures packed):
 *
 *   0      global header (128 bytes): launch script[32] "#!/usr/bin/env run-singularity\n",
 *          magic[10] "SIF_MAGIC\0", version[3] "01\0", arch[3] (primary partition's), id[16],
 *          created, modified, descriptors free, descriptors total, descriptors offset,
 *          descriptors size, data offset, data size (int64 each)
 *   4096   48 descriptors of 585 bytes: datatype i32, used u8, id u32, group id u32 (0xf0000000 |
 *          group), linked id u32, offset, size, size-with-padding, created, modified, uid, gid
 *          (int64 each), name[128], extra[384]
 *   32176  data objects: 1 = definition file (Def.FILE, unaligned),
 *          2 = the squashfs (FS: fstype 1 squashfs, parttype 2 primary system, arch), 4096-aligned
 *
 * Everything before the partition is computed from its size alone (sifHead), so the file is the head
 * followed by the squashfs bytes, copied as a stream: `sifStream` gives that as one Readable (for
 * encryption straight from the squashfs, no SIF on disk), `writeSif` puts it in a file. The ID and
 * timestamps are inputs, so the same squashfs and inputs give a byte-identical SIF.
 */

import { createReadStream } from "node:fs";
import { open, rm, stat } from "node:fs/promises";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";

const LAUNCH_SCRIPT = "#!/usr/bin/env run-singularity\n";
const HEADER_SIZE = 128;
const DESCRIPTORS_OFFSET = 4096;
const DESCRIPTOR_CAPACITY = 48;
const DESCRIPTOR_SIZE = 585;
const PARTITION_ALIGNMENT = 4096;
const GROUP_MASK = 0xf0000000;

export const DATA_DEFFILE = 0x4001;
export const DATA_PARTITION = 0x4004;
export const FS_SQUASHFS = 1;
export const PART_PRIMSYS = 2;

/** Go architecture names (as in image configs) → SIF header codes. */
const ARCH_CODES: Record<string, string> = {
  "386": "01",
  amd64: "02",
  arm: "03",
  arm64: "04",
  ppc64: "05",
  ppc64le: "06",
  mips: "07",
  mipsle: "08",
  mips64: "09",
  mips64le: "10",
  s390x: "11",
  riscv64: "12",
};

export interface SifInput {
  /** The definition file object (text describing how the image was made). */
  deffile: Buffer;
  /** Size in bytes of the squashfs image that will follow the head. */
  partitionSize: number;
  /** Go architecture name of the root filesystem (`amd64`, `arm64`…). */
  arch: string;
  /** 16 bytes. */
  id: Buffer;
  /** Seconds since the epoch, for the header and both descriptors. */
  createdAt: number;
}

export interface SifLayout {
  head: Buffer;
  partitionOffset: number;
  totalSize: number;
}

/** Header, descriptors, definition file and padding: every byte of the SIF before the partition. */
export function sifHead(input: SifInput): SifLayout {
  const arch = ARCH_CODES[input.arch];
  if (arch === undefined) throw new Error(`architecture ${JSON.stringify(input.arch)} has no SIF code`);
  if (input.id.length !== 16) throw new Error("a SIF ID is 16 bytes");
  if (!Number.isSafeInteger(input.partitionSize) || input.partitionSize <= 0) {
    throw new Error("the squashfs partition is empty");
  }
  const dataOffset = DESCRIPTORS_OFFSET + DESCRIPTOR_CAPACITY * DESCRIPTOR_SIZE;
  const deffileOffset = dataOffset;
  const deffileEnd = deffileOffset + input.deffile.length;
  const partitionOffset = Math.ceil(deffileEnd / PARTITION_ALIGNMENT) * PARTITION_ALIGNMENT;
  const partitionPadded = partitionOffset - deffileEnd + input.partitionSize;
  const dataSize = input.deffile.length + partitionPadded;

  const head = Buffer.alloc(partitionOffset);
  // Global header.
  head.write(LAUNCH_SCRIPT, 0, "ascii");
  head.write("SIF_MAGIC", 32, "ascii");
  head.write("01", 42, "ascii");
  head.write(arch, 45, "ascii");
  input.id.copy(head, 48);
  let o = 64;
  for (const v of [
    input.createdAt,
    input.createdAt,
    DESCRIPTOR_CAPACITY - 2,
    DESCRIPTOR_CAPACITY,
    DESCRIPTORS_OFFSET,
    DESCRIPTOR_CAPACITY * DESCRIPTOR_SIZE,
    dataOffset,
    dataSize,
  ]) {
    head.writeBigInt64LE(BigInt(v), o);
    o += 8;
  }
  if (o !== HEADER_SIZE) throw new Error("SIF header size mismatch");

  const extra = Buffer.alloc(11);
  extra.writeInt32LE(FS_SQUASHFS, 0);
  extra.writeInt32LE(PART_PRIMSYS, 4);
  extra.write(arch, 8, "ascii");
  writeDescriptor(head, 0, {
    type: DATA_DEFFILE,
    id: 1,
    offset: deffileOffset,
    size: input.deffile.length,
    padded: input.deffile.length,
    time: input.createdAt,
  });
  writeDescriptor(head, 1, {
    type: DATA_PARTITION,
    id: 2,
    offset: partitionOffset,
    size: input.partitionSize,
    padded: partitionPadded,
    time: input.createdAt,
    extra,
  });
  input.deffile.copy(head, deffileOffset);
  return { head, partitionOffset, totalSize: partitionOffset + input.partitionSize };
}

interface DescriptorFields {
  type: number;
  id: number;
  offset: number;
  size: number;
  padded: number;
  time: number;
  extra?: Buffer;
}

function writeDescriptor(buf: Buffer, index: number, d: DescriptorFields): void {
  let o = DESCRIPTORS_OFFSET + index * DESCRIPTOR_SIZE;
  buf.writeInt32LE(d.type, o);
  buf.writeUInt8(1, o + 4); // used
  buf.writeUInt32LE(d.id, o + 5);
  buf.writeUInt32LE((GROUP_MASK | 1) >>> 0, o + 9); // default object group 1
  buf.writeUInt32LE(0, o + 13); // no link
  o += 17;
  for (const v of [d.offset, d.size, d.padded, d.time, d.time, 0, 0]) {
    buf.writeBigInt64LE(BigInt(v), o);
    o += 8;
  }
  // name[128] stays empty; extra[384] holds the partition metadata.
  d.extra?.copy(buf, o + 128);
}

/** The whole SIF as one stream: the head, then the squashfs file read in chunks. */
export async function sifStream(input: Omit<SifInput, "partitionSize"> & { partitionPath: string }): Promise<{
  stream: Readable;
  size: number;
}> {
  const partitionSize = (await stat(input.partitionPath)).size;
  const layout = sifHead({ ...input, partitionSize });
  async function* bytes(): AsyncGenerator<Buffer> {
    yield layout.head;
    let seen = 0;
    for await (const chunk of createReadStream(input.partitionPath, { highWaterMark: 1024 * 1024 })) {
      seen += (chunk as Buffer).length;
      yield chunk as Buffer;
    }
    // A partition that changed size under us would make the descriptors lie: fail instead.
    if (seen !== partitionSize) throw new Error("the squashfs image changed while the SIF was written");
  }
  return { stream: Readable.from(bytes(), { objectMode: false }), size: layout.totalSize };
}

/** Writes the SIF to `outPath` (created, mode 0600; removed again if anything fails). */
export async function writeSif(
  outPath: string,
  input: Omit<SifInput, "partitionSize"> & { partitionPath: string },
  signal: AbortSignal,
): Promise<{ size: number }> {
  const { stream, size } = await sifStream(input);
  // Opened first and separately: if the name is taken, the error must not remove someone else's file.
  let handle;
  try {
    handle = await open(outPath, "wx", 0o600);
  } catch (err) {
    stream.destroy();
    throw err;
  }
  try {
    await pipeline(stream, handle.createWriteStream(), { signal });
  } catch (err) {
    await handle.close().catch(() => undefined);
    await rm(outPath, { force: true });
    throw err;
  }
  return { size };
}
