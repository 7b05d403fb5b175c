import assert from "node:assert/strict";
import { Readable } from "node:stream";
import { ChunkPacker, Rechunk } from "../../../../client/artifact/rechunk.js";
import { collect } from "./helpers.js";

describe("client/artifact/rechunk", () => {
  it("ChunkPacker: exact chunks, each owning its whole ArrayBuffer (safe to transfer)", () => {
    const packer = new ChunkPacker(1000);
    const input = Buffer.from(Array.from({ length: 3500 }, (_, i) => i % 256));
    const shared = Buffer.concat([Buffer.alloc(10), input]).subarray(10); // a view, like tar's
    const out = [...packer.add(shared.subarray(0, 1)), ...packer.add(shared.subarray(1, 2600))];
    out.push(...packer.add(shared.subarray(2600)));
    const last = packer.flush();
    assert.deepEqual(
      out.map((c) => c.length),
      [1000, 1000, 1000],
    );
    for (const c of out) {
      assert.equal(c.byteOffset, 0);
      assert.equal(c.buffer.byteLength, 1000);
    }
    assert.equal(last?.length, 500);
    assert.ok(Buffer.concat([...out, last as Buffer]).equals(input));
    assert.equal(packer.flush(), undefined, "nothing left after a flush");
  });

  it("Rechunk: the same as a Transform, bytes unchanged", async () => {
    const input = Buffer.from(Array.from({ length: 10_001 }, (_, i) => (i * 3) % 256));
    const parts = [input.subarray(0, 7), input.subarray(7, 5000), input.subarray(5000)];
    const chunks: Buffer[] = [];
    // 'data' events, not async iteration: a paused byte stream's read() would glue chunks together.
    await new Promise((resolve, reject) =>
      Readable.from(parts)
        .pipe(new Rechunk(4096))
        .on("data", (c: Buffer) => chunks.push(c))
        .on("end", resolve)
        .on("error", reject),
    );
    assert.deepEqual(
      chunks.map((c) => c.length),
      [4096, 4096, 1809],
    );
    assert.ok(Buffer.concat(chunks).equals(input));
    assert.equal((await collect(Readable.from([]).pipe(new Rechunk(10)))).length, 0);
  });
});
