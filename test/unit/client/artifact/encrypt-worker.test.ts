import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readdirSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { decryptStream } from "../../../../client/artifact/decrypt-stream.js";
import { encryptInputInWorker, encryptInWorker } from "../../../../client/artifact/encrypt-worker.js";
import { ArtifactSecret } from "../../../../client/artifact/secret.js";
import { collect, Gpg, tempDir } from "./helpers.js";
import { rm } from "node:fs/promises";

/** `data` in pieces of odd sizes, so nothing relies on chunk boundaries. */
function pieces(data: Buffer, size = 100_003): Readable {
  const parts: Buffer[] = [];
  for (let i = 0; i < data.length; i += size) parts.push(data.subarray(i, i + size));
  return Readable.from(parts);
}

/** A source that never ends (1 MiB chunks of zeros), for abort tests. */
function endless(): Readable {
  const chunk = Buffer.alloc(1024 * 1024);
  return new Readable({
    read() {
      this.push(chunk);
    },
  });
}

const threads = (): number => readdirSync("/proc/self/task").length;

/**
 * Waits until the process is back to `n` threads (a terminated worker's thread exits shortly after).
 * Up to 10 s: on a loaded machine the thread's teardown took over the 1 s this waited before.
 */
async function threadsBackTo(n: number): Promise<void> {
  for (let i = 0; i < 500 && threads() > n; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(threads(), n, "the worker thread is gone");
}

describe("client/artifact/encrypt-worker", () => {
  let secret: ArtifactSecret;
  let gpg: Gpg;
  let work: string;

  beforeEach(async () => {
    secret = ArtifactSecret.generate();
    gpg = await Gpg.create(secret);
    work = await tempDir("worker");
  });
  afterEach(async () => {
    await gpg.dispose();
    await rm(work, { recursive: true, force: true });
  });

  for (const size of [0, 1, 5 * 1024 * 1024]) {
    it(`round trip of ${size} random bytes: our decrypt and GnuPG both get them back`, async () => {
      const data = randomBytes(size);
      const ciphertext = await collect(encryptInWorker(pieces(data), secret));
      const plain = await collect(await decryptStream(Readable.from([ciphertext]), secret));
      assert.ok(plain.equals(data), "our decrypt differs");
      const file = join(work, "x.gpg");
      await writeFile(file, ciphertext);
      const r = await gpg.run(["--decrypt", file]);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stdout.equals(data), "gpg output differs");
    });
  }

  it("a failing source fails the ciphertext stream with the source's error", async () => {
    let sent = 0;
    const failing = new Readable({
      read() {
        if (sent++ < 3) this.push(randomBytes(300_000));
        else this.destroy(new Error("source broke"));
      },
    });
    await assert.rejects(collect(encryptInWorker(failing, secret)), /source broke/);
  });

  it("abort mid-stream: the stream errors with an AbortError and the worker thread is gone", async () => {
    await collect(encryptInWorker(Readable.from([Buffer.alloc(10)]), secret)); // thread pools warmed up
    const before = threads();
    const controller = new AbortController();
    const source = endless();
    const stream = encryptInWorker(source, secret, { signal: controller.signal });
    let got = 0;
    await assert.rejects(
      (async () => {
        for await (const chunk of stream) {
          got += (chunk as Buffer).length;
          if (got > 3 * 1024 * 1024) controller.abort();
        }
      })(),
      (err: Error) => err.name === "AbortError",
    );
    assert.ok(source.destroyed, "the plaintext source is destroyed too");
    await threadsBackTo(before);
  });

  it("destroying the ciphertext stream terminates the worker", async () => {
    await collect(encryptInWorker(Readable.from([Buffer.alloc(10)]), secret));
    const before = threads();
    const stream = encryptInWorker(endless(), secret);
    await new Promise<void>((resolve) => stream.once("data", () => resolve()));
    stream.destroy();
    await new Promise((r) => stream.once("close", r));
    await threadsBackTo(before);
  });

  it("encryptInputInWorker: a file read by the worker itself, with the ciphertext's digest", async () => {
    const data = randomBytes(700_001);
    const file = join(work, "input.bin");
    await writeFile(file, data);
    const { stream, digest } = await encryptInputInWorker(file, secret);
    const ciphertext = await collect(stream);
    const { createHash } = await import("node:crypto");
    assert.deepEqual(await digest, {
      sha256: createHash("sha256").update(ciphertext).digest("hex"),
      size: ciphertext.length,
    });
    const plain = await collect(await decryptStream(Readable.from([ciphertext]), secret));
    assert.ok(plain.equals(data));
  });

  it("encryptInputInWorker: a missing input rejects with one line, before any stream", async () => {
    await assert.rejects(encryptInputInWorker(join(work, "nope"), secret), (err: Error) => {
      assert.match(err.message, /^input ".*nope": does not exist$/);
      return true;
    });
  });
});
