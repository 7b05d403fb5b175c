import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DATA_DEFFILE, DATA_PARTITION, sifHead, writeSif } from "../../../../client/container/sif.js";

const ID = Buffer.from("00112233445566778899aabbccddeeff", "hex");

describe("client/container/sif", () => {
  it("lays out the header, two descriptors, the definition file and a 4096-aligned partition", () => {
    const deffile = Buffer.from("Bootstrap: scratch\n");
    const { head, partitionOffset, totalSize } = sifHead({
      deffile,
      partitionSize: 10_000,
      arch: "arm64",
      id: ID,
      createdAt: 1_700_000_000,
    });
    assert.equal(head.subarray(0, 31).toString(), "#!/usr/bin/env run-singularity\n");
    assert.equal(head.subarray(32, 42).toString("latin1"), "SIF_MAGIC\0");
    assert.equal(head.subarray(42, 45).toString("latin1"), "01\0");
    assert.equal(head.subarray(45, 48).toString("latin1"), "04\0");
    assert.deepEqual(head.subarray(48, 64), ID);
    const i64 = (o: number): number => Number(head.readBigInt64LE(o));
    assert.deepEqual([64, 72, 80, 88, 96, 104, 112, 120].map(i64), [
      1_700_000_000,
      1_700_000_000,
      46,
      48,
      4096,
      48 * 585,
      4096 + 48 * 585,
      partitionOffset - 32176 + 10_000,
    ]);
    assert.equal(partitionOffset, 32768);
    assert.equal(totalSize, 32768 + 10_000);
    const d = (i: number, o: number): number => 4096 + i * 585 + o;
    assert.equal(head.readInt32LE(d(0, 0)), DATA_DEFFILE);
    assert.equal(head.readInt32LE(d(1, 0)), DATA_PARTITION);
    assert.equal(head.readUInt8(d(1, 4)), 1);
    assert.equal(head.readUInt32LE(d(1, 5)), 2);
    assert.equal(head.readUInt32LE(d(1, 9)), 0xf0000001);
    assert.equal(Number(head.readBigInt64LE(d(1, 17))), 32768);
    assert.equal(Number(head.readBigInt64LE(d(1, 25))), 10_000);
    // Extra: fstype squashfs, parttype primary system, arch.
    assert.deepEqual([head.readInt32LE(d(1, 201)), head.readInt32LE(d(1, 205))], [1, 2]);
    assert.equal(head.subarray(d(1, 209), d(1, 212)).toString("latin1"), "04\0");
    assert.equal(head.readUInt8(d(2, 4)), 0, "third descriptor unused");
    assert.deepEqual(head.subarray(32176, 32176 + deffile.length), deffile);
  });

  it("refuses what it cannot describe", () => {
    const base = { deffile: Buffer.from("x"), partitionSize: 1, arch: "amd64", id: ID, createdAt: 0 };
    assert.throws(() => sifHead({ ...base, arch: "sparc" }), /architecture "sparc" has no SIF code/);
    assert.throws(() => sifHead({ ...base, partitionSize: 0 }), /partition is empty/);
    assert.throws(() => sifHead({ ...base, id: Buffer.alloc(3) }), /16 bytes/);
  });

  it("writes head + partition bytes, deterministically, and never clobbers an existing file", async () => {
    const tmp = mkdtempSync(join(tmpdir(), "sif-test-"));
    try {
      const part = join(tmp, "p.sqfs");
      writeFileSync(part, Buffer.alloc(5000, 7));
      const input = { partitionPath: part, deffile: Buffer.from("d"), arch: "amd64", id: ID, createdAt: 5 };
      const signal = new AbortController().signal;
      const a = await writeSif(join(tmp, "a.sif"), input, signal);
      await writeSif(join(tmp, "b.sif"), input, signal);
      const bytes = readFileSync(join(tmp, "a.sif"));
      assert.equal(bytes.length, a.size);
      assert.deepEqual(bytes, readFileSync(join(tmp, "b.sif")));
      assert.deepEqual(bytes.subarray(32768), Buffer.alloc(5000, 7));
      await assert.rejects(writeSif(join(tmp, "a.sif"), input, signal), /EEXIST/);
      assert.equal(readFileSync(join(tmp, "a.sif")).length, a.size, "the existing file is intact");
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});
