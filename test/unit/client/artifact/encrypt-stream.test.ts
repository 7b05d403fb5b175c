import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, readFile, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { extract } from "tar";
import { decryptStream } from "../../../../client/artifact/decrypt-stream.js";
import { DigestStream } from "../../../../client/artifact/digest.js";
import { encryptStream } from "../../../../client/artifact/encrypt-stream.js";
import { ArtifactSecret } from "../../../../client/artifact/secret.js";
import { tarDirectory } from "../../../../client/artifact/tar-stream.js";
import { collect, Gpg, makeRandomTree, snapshot, tempDir } from "./helpers.js";

/** Several chunks so that nothing relies on the input arriving in one piece. */
function chunked(data: Buffer, size = 100_003): Readable {
  const parts: Buffer[] = [];
  for (let i = 0; i < data.length; i += size) parts.push(data.subarray(i, i + size));
  return Readable.from(parts);
}

async function encryptToFile(data: Buffer, secret: ArtifactSecret, file: string): Promise<void> {
  await pipeline(await encryptStream(chunked(data), secret), createWriteStream(file));
}

describe("client/artifact/encrypt-stream + decrypt-stream", () => {
  let work: string;
  let secret: ArtifactSecret;
  let gpg: Gpg;

  beforeEach(async () => {
    work = await tempDir("enc");
    secret = ArtifactSecret.generate();
    gpg = await Gpg.create(secret);
  });
  afterEach(async () => {
    await gpg.dispose();
    await rm(work, { recursive: true, force: true });
  });

  it("round trip: dir → tar → encrypt → decrypt → untar equals the original", async () => {
    const src = join(work, "src");
    const out = join(work, "out");
    await mkdir(src);
    await mkdir(out);
    await makeRandomTree(src);
    const ciphertext = await encryptStream(await tarDirectory(src), secret);
    await pipeline(await decryptStream(ciphertext, secret), extract({ cwd: out }));
    assert.deepEqual(await snapshot(out), await snapshot(src));
  });

  it("GnuPG decrypts our output to identical bytes (dir → tar → encrypt → gpg → untar)", async () => {
    const src = join(work, "src");
    const out = join(work, "out");
    await mkdir(src);
    await mkdir(out);
    await makeRandomTree(src);
    const file = join(work, "a.tar.gpg");
    await pipeline(await encryptStream(await tarDirectory(src), secret), createWriteStream(file));
    const plainFile = join(work, "a.tar");
    const r = await gpg.run(["--output", plainFile, "--decrypt", file]);
    assert.equal(r.code, 0, r.stderr);
    await pipeline(createReadStream(plainFile), extract({ cwd: out }));
    assert.deepEqual(await snapshot(out), await snapshot(src));
  });

  for (const size of [0, 1, 5 * 1024 * 1024 + 7]) {
    it(`GnuPG decrypts ${size} bytes to identical bytes`, async () => {
      const data = randomBytes(size);
      const file = join(work, "x.gpg");
      await encryptToFile(data, secret, file);
      const r = await gpg.run(["--decrypt", file]);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stdout.equals(data), "gpg output differs from the plaintext");
    });
  }

  it("produces SKESK v4 (AES-256) + SEIPD v1 with MDC, no AEAD (gpg --list-packets)", async () => {
    const file = join(work, "x.gpg");
    await encryptToFile(randomBytes(200_000), secret, file);
    const r = await gpg.run(["--list-packets", file]);
    assert.equal(r.code, 0, r.stderr);
    const listing = r.stdout.toString();
    // As printed by gpg 2.2.40: cipher 9 = AES256, aead 0 = none.
    assert.match(listing, /^:symkey enc packet: version 4, cipher 9, aead 0,/m);
    // tag 18 = SEIPD; gpg prints the v1 packet as "encrypted data packet" with mdc_method 2 (SHA-1 MDC).
    assert.match(listing, /^# off=\d+ ctb=[0-9a-f]+ tag=18 /m);
    assert.match(listing, /^:encrypted data packet:\n\tlength: [^\n]+\n\tmdc_method: 2$/m);
    assert.doesNotMatch(listing, /tag=20 |aead encrypted packet/); // no AEAD packet
    assert.doesNotMatch(listing, /compressed packet/);
    assert.match(listing, /^:literal data packet:\n\tmode b /m);
    assert.match(r.stderr, /AES256\.CFB encrypted session key/);
  });

  it("GnuPG with the wrong passphrase fails and outputs nothing", async () => {
    const file = join(work, "x.gpg");
    await encryptToFile(randomBytes(1000), secret, file);
    const wrong = await Gpg.create(ArtifactSecret.generate());
    try {
      const r = await wrong.run(["--decrypt", file]);
      assert.notEqual(r.code, 0);
      assert.equal(r.stdout.length, 0);
      assert.match(r.stderr, /decryption failed/);
    } finally {
      await wrong.dispose();
    }
  });

  it("our decrypt with the wrong passphrase rejects with one line", async () => {
    const file = join(work, "x.gpg");
    await encryptToFile(randomBytes(1000), secret, file);
    await assert.rejects(
      decryptStream(createReadStream(file), ArtifactSecret.generate()),
      (err: Error) => /^decrypt artifact: /.test(err.message) && !err.message.includes("\n"),
    );
  });

  it("our decrypt rejects tampered ciphertext (MDC)", async () => {
    const file = join(work, "x.gpg");
    await encryptToFile(randomBytes(100_000), secret, file);
    const bytes = await readFile(file);
    const at = bytes.length - 500;
    bytes.writeUInt8(bytes.readUInt8(at) ^ 0x01, at);
    await assert.rejects(async () => collect(await decryptStream(Readable.from([bytes]), secret)));
  });

  it("our decrypt reads what `gpg --symmetric --cipher-algo AES256` wrote", async () => {
    const data = randomBytes(300_001);
    const r = await gpg.run(["--symmetric", "--cipher-algo", "AES256", "--output", "-"], data);
    assert.equal(r.code, 0, r.stderr);
    const plain = await collect(await decryptStream(Readable.from([r.stdout]), secret));
    assert.ok(plain.equals(data));
  });

  it("digest of the uploaded stream equals sha256 and size of the ciphertext file", async () => {
    const file = join(work, "x.gpg");
    const digest = new DigestStream();
    await pipeline(
      await encryptStream(chunked(randomBytes(2_000_000)), secret),
      digest,
      createWriteStream(file),
    );
    const bytes = await readFile(file);
    assert.deepEqual(digest.result(), {
      sha256: createHash("sha256").update(bytes).digest("hex"),
      size: bytes.length,
    });
  });

  it("a failing source fails the encrypted stream (no silently truncated artifact)", async () => {
    const failing = new Readable({
      read() {
        this.destroy(new Error("source broke"));
      },
    });
    await assert.rejects(async () => collect(await encryptStream(failing, secret)));
  });

  it("hands gpg the passphrase in a 0600 file, never in argv", async () => {
    const { mode } = await stat(join(gpg.home, "passphrase"));
    assert.equal(mode & 0o777, 0o600);
  });
});
