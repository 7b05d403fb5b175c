import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { extract } from "tar";
import { openArtifactStream } from "../../../../client/artifact/artifact-stream.js";
import { decryptStream } from "../../../../client/artifact/decrypt-stream.js";
import { ArtifactSecret } from "../../../../client/artifact/secret.js";
import { collect, makeRandomTree, snapshot, tempDir } from "./helpers.js";

describe("client/artifact/artifact-stream", () => {
  let work: string;
  let secret: ArtifactSecret;

  beforeEach(async () => {
    work = await tempDir("artifact");
    secret = ArtifactSecret.generate();
  });
  afterEach(async () => {
    await rm(work, { recursive: true, force: true });
  });

  for (const worker of [true, false]) {
    it(`a directory (worker: ${worker}) decrypts and untars to the same tree; digest matches`, async () => {
      const src = join(work, "src");
      const out = join(work, "out");
      await mkdir(src);
      await mkdir(out);
      await makeRandomTree(src);
      const artifact = await openArtifactStream(src, secret, { worker });
      const ciphertext = await collect(artifact.stream);
      assert.deepEqual(await artifact.digest, {
        sha256: createHash("sha256").update(ciphertext).digest("hex"),
        size: ciphertext.length,
      });
      await pipeline(await decryptStream(Readable.from([ciphertext]), secret), extract({ cwd: out }));
      assert.deepEqual(await snapshot(out), await snapshot(src));
    });
  }

  it("a regular file is encrypted as is (no tar); digest: false returns no digest", async () => {
    const data = randomBytes(1_000_003);
    const file = join(work, "data.bin");
    await writeFile(file, data);
    const artifact = await openArtifactStream(file, secret, { digest: false });
    assert.equal("digest" in artifact, false);
    const plain = await collect(await decryptStream(artifact.stream, secret));
    assert.ok(plain.equals(data));
  });

  for (const worker of [true, false]) {
    it(`a missing input rejects with one line before any stream (worker: ${worker})`, async () => {
      await assert.rejects(openArtifactStream(join(work, "missing"), secret, { worker }), (err: Error) => {
        assert.match(err.message, /^input ".*missing": does not exist$/);
        return true;
      });
    });
  }

  it("an already aborted signal rejects at once", async () => {
    await assert.rejects(openArtifactStream(work, secret, { signal: AbortSignal.abort() }), /abort/i);
  });
});
