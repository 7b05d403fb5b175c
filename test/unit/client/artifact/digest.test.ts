import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { DigestStream } from "../../../../client/artifact/digest.js";
import { collect } from "./helpers.js";

describe("client/artifact/digest", () => {
  it("passes bytes through unchanged and reports their sha256 and size", async () => {
    const data = randomBytes(1024 * 1024 + 3);
    const digest = new DigestStream();
    const out = collect(Readable.from([data.subarray(0, 10), data.subarray(10)]).pipe(digest));
    assert.deepEqual(await out, data);
    assert.deepEqual(digest.result(), {
      sha256: createHash("sha256").update(data).digest("hex"),
      size: data.length,
    });
  });

  it("handles empty input", async () => {
    const digest = new DigestStream();
    await pipeline(Readable.from([]), digest, async function* (src) {
      for await (const _ of src) yield _;
    });
    assert.deepEqual(digest.result(), {
      sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
      size: 0,
    });
  });

  it("refuses to give a result before the input ended", () => {
    assert.throws(() => new DigestStream().result(), /not finished/);
  });
});
