import assert from "node:assert/strict";
import { createReadStream } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as openpgp from "openpgp";
import { generateOutputKey } from "../../../../client/job-prep/output-key.js";
import { extractResult } from "../../../../client/job-prep/results-command.js";
import { run, runOk } from "../../../support/exec.js";

// The job side is GnuPG (2.2 on the nodes): it must import the output public key job-prep makes and
// encrypt the result tar to it; extractResult must then decrypt and unpack it, or keep nothing.
describe("client/job-prep output key + result extraction (with the real gpg)", function () {
  this.timeout(60_000);
  let dir: string;
  let gnupg: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "job-results-"));
    gnupg = join(dir, "gnupg");
    await mkdir(gnupg, { mode: 0o700 });
  });
  after(async () => {
    await run("gpgconf", ["--kill", "all"], { env: { ...process.env, GNUPGHOME: gnupg } });
    await rm(dir, { recursive: true, force: true });
  });

  async function gpgEncryptTo(publicKey: string, tarDir: string, out: string): Promise<void> {
    const env = { ...process.env, GNUPGHOME: gnupg };
    await runOk("gpg", ["--batch", "--import"], { env, input: publicKey });
    const key = await openpgp.readKey({ armoredKey: publicKey });
    const tarFile = join(dir, "result.tar");
    await runOk("tar", ["-C", tarDir, "-cf", tarFile, "."]);
    await runOk(
      "gpg",
      [
        "--batch",
        "--yes",
        "--trust-model",
        "always",
        "-r",
        key.getFingerprint(),
        "-o",
        out,
        "--encrypt",
        tarFile,
      ],
      { env },
    );
  }

  it("GnuPG imports the public key and encrypts to it; the result unpacks with the private key", async () => {
    const key = await generateOutputKey("demo");
    assert.match(key.publicKey, /^-----BEGIN PGP PUBLIC KEY BLOCK-----/);
    assert.match(key.privateKey, /^-----BEGIN PGP PRIVATE KEY BLOCK-----/);
    const src = join(dir, "src");
    await mkdir(join(src, "sub"), { recursive: true });
    await writeFile(join(src, "exit_code"), "3\n");
    await writeFile(join(src, "stdout.log"), "hello\n");
    await writeFile(join(src, "sub", "result"), Buffer.alloc(300_000, 7));
    const enc = join(dir, "result.tar.gpg");
    await gpgEncryptTo(key.publicKey, src, enc);

    const privateKey = await openpgp.readPrivateKey({ armoredKey: key.privateKey });
    const dest = join(dir, "out");
    const s = await extractResult(createReadStream(enc), privateKey, dest, { source: enc });
    assert.equal(s.outputDir, dest);
    assert.equal(s.appExitCode, 3);
    assert.equal(s.stdoutLog, join(dest, "stdout.log"));
    assert.equal(s.files, 3);
    assert.equal(await readFile(join(dest, "stdout.log"), "utf8"), "hello\n");
    assert.deepEqual(await readFile(join(dest, "sub", "result")), Buffer.alloc(300_000, 7));

    // Tampered near the end (inside the encrypted data, before the MDC): nothing is kept.
    const bytes = await readFile(enc);
    bytes[bytes.length - 30] = (bytes[bytes.length - 30] ?? 0) ^ 0xff;
    const bad = join(dir, "bad.tar.gpg");
    await writeFile(bad, bytes);
    const dest2 = join(dir, "out2");
    await assert.rejects(
      extractResult(createReadStream(bad), privateKey, dest2, { source: bad }),
      /did not decrypt and unpack completely|cannot decrypt/,
    );
    const left = (await readdir(dir)).filter((f) => f.startsWith("out2") || f.startsWith(".out2"));
    assert.deepEqual(left, [], "no destination and no .part left");

    // Another job's key cannot open it.
    const other = await openpgp.readPrivateKey({ armoredKey: (await generateOutputKey("other")).privateKey });
    await assert.rejects(
      extractResult(createReadStream(enc), other, join(dir, "out3"), { source: enc }),
      /cannot decrypt .*result\.tar\.gpg/,
    );
  });
});
