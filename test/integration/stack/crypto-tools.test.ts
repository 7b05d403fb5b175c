import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { run, runOk } from "../../support/exec.js";

/** Every byte under dir, so a test can prove a marker is nowhere in it. */
async function allBytes(dir: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) parts.push(await readFile(join(e.parentPath, e.name)));
  }
  return Buffer.concat(parts);
}

describe("stack: gocryptfs and GnuPG", () => {
  let dir = "";
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "hpcs-crypto-"));
  });
  afterEach(async () => {
    await run("fusermount3", ["-u", "-z", join(dir, "plain")]);
    // gpg starts a gpg-agent per home directory; it must not outlive the test.
    for (const home of ["gnupg", "other"])
      await run("gpgconf", ["--homedir", join(dir, home), "--kill", "all"]);
    await rm(dir, { recursive: true, force: true });
  });

  it("inits, mounts, writes and unmounts a gocryptfs volume; the backing dir holds no plaintext", async () => {
    const cipher = join(dir, "cipher");
    const plain = join(dir, "plain");
    await mkdir(cipher);
    await mkdir(plain);
    const password = `${randomBytes(24).toString("hex")}\n`;
    const marker = `HPCS-MARKER-${randomBytes(8).toString("hex")}`;
    await runOk("gocryptfs", ["-init", "-q", cipher], { input: password });
    await runOk("gocryptfs", ["-q", cipher, plain], { input: password });
    await writeFile(join(plain, "data.txt"), marker.repeat(100));
    await runOk("fusermount3", ["-u", plain]);

    assert.equal((await readdir(plain)).length, 0, "unmounted");
    const backing = await allBytes(cipher);
    assert.ok(backing.length > marker.length * 100, "ciphertext was written");
    assert.equal(backing.indexOf(marker), -1, "no plaintext in the backing directory");

    const wrong = await run("gocryptfs", ["-q", cipher, plain], { input: "wrong\n" });
    assert.notEqual(wrong.code, 0, "a wrong password does not mount");
    await runOk("gocryptfs", ["-q", cipher, plain], { input: password });
    assert.equal(await readFile(join(plain, "data.txt"), "utf8"), marker.repeat(100));
  });

  it("gpg decrypts a message encrypted to a freshly generated key, and not without the key", async () => {
    const home = join(dir, "gnupg");
    await mkdir(home, { mode: 0o700 });
    const gpg = (args: string[], input?: string) =>
      run("gpg", ["--homedir", home, "--batch", "--yes", "--pinentry-mode", "loopback", ...args], { input });
    const uid = "hpcs smoke <smoke@hpcs.test>";
    assert.equal(
      (await gpg(["--passphrase", "", "--quick-gen-key", uid, "default", "default", "1d"])).code,
      0,
    );
    const message = `secret ${randomBytes(8).toString("hex")}`;
    const enc = await gpg(["--armor", "--trust-model", "always", "--encrypt", "-r", uid], message);
    assert.equal(enc.code, 0, enc.stderr);
    assert.match(enc.stdout, /BEGIN PGP MESSAGE/);
    assert.ok(!enc.stdout.includes(message));
    const dec = await gpg(["--decrypt"], enc.stdout);
    assert.equal(dec.code, 0, dec.stderr);
    assert.equal(dec.stdout, message);

    const otherHome = join(dir, "other");
    await mkdir(otherHome, { mode: 0o700 });
    const denied = await run("gpg", ["--homedir", otherHome, "--batch", "--decrypt"], { input: enc.stdout });
    assert.notEqual(denied.code, 0);
    assert.match(denied.stderr, /No secret key/);
  });
});
