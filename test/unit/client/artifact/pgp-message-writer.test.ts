import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { writeFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { decryptStream } from "../../../../client/artifact/decrypt-stream.js";
import { PgpMessageWriter } from "../../../../client/artifact/pgp-message-writer.js";
import { ArtifactSecret } from "../../../../client/artifact/secret.js";
import { collect, Gpg, tempDir } from "./helpers.js";

/** The partial body chunk the writer uses (2^18). */
const P = 262_144;

/** Writes `data` through a writer, in `piece`-sized updates. */
function encrypt(data: Buffer, secret: ArtifactSecret, piece: number): Buffer {
  const writer = PgpMessageWriter.create(secret);
  const out: Buffer[] = [];
  for (let i = 0; i < data.length; i += piece) out.push(...writer.update(data.subarray(i, i + piece)));
  out.push(...writer.final());
  return Buffer.concat(out);
}

describe("client/artifact/pgp-message-writer", () => {
  let secret: ArtifactSecret;
  let gpg: Gpg;
  let work: string;

  before(async () => {
    secret = ArtifactSecret.generate();
    gpg = await Gpg.create(secret);
    work = await tempDir("pgp");
  });
  after(async () => {
    await gpg.dispose();
    await rm(work, { recursive: true, force: true });
  });

  // Sizes around the partial-length boundaries of both layers: the literal packet's body is 6 bytes
  // of header + the data; the SEIPD body adds 1 (version) + 18 (prefix) + 2 (tag, first length) + 22
  // (MDC) around it, so k·P − 49 … k·P − 40 put its boundaries right at the end.
  const sizes = [0, 1, P - 7, P - 6, P - 5, 2 * P - 6, 2 * P - 5, 2 * P + 1];
  for (let k = 1; k <= 3; k++) for (let d = 40; d <= 49; d += 3) sizes.push(k * P - d);
  for (const size of sizes) {
    it(`${size} bytes: GnuPG and our decrypt read the framing and the MDC`, async () => {
      const data = randomBytes(size);
      const ciphertext = encrypt(data, secret, 100_003);
      const file = join(work, `${size}.gpg`);
      await writeFile(file, ciphertext);
      const r = await gpg.run(["--decrypt", file]);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stdout.equals(data), "gpg output differs");
      const plain = await collect(await decryptStream(Readable.from([ciphertext]), secret));
      assert.ok(plain.equals(data), "our decrypt differs");
    });
  }

  it("any split of the input gives a valid message (1-byte updates, one big update)", async () => {
    const data = randomBytes(P + 1000);
    for (const piece of [1, data.length]) {
      const ciphertext = encrypt(data, secret, piece);
      const plain = await collect(await decryptStream(Readable.from([ciphertext]), secret));
      assert.ok(plain.equals(data), `piece ${piece}`);
    }
  });

  it("a fresh session key and salt per message: the same plaintext never encrypts the same", () => {
    const data = Buffer.alloc(1000);
    assert.ok(!encrypt(data, secret, 1000).equals(encrypt(data, secret, 1000)));
  });

  it("refuses use after final", () => {
    const writer = PgpMessageWriter.create(secret);
    writer.final();
    assert.throws(() => writer.update(Buffer.alloc(1)), /after final/);
    assert.throws(() => writer.final(), /twice/);
  });
});
