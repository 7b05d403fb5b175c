import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  EnrollmentSecretFileError,
  readEnrollmentSecretFile,
  writeNextEnrollmentSecret,
} from "../../../../client/identity/enrollment-secret-file.js";

const SECRET = "Ab3_-".repeat(8) + "xyz"; // 43 base64url characters, like the server's
const NEXT = "Zz9-_".repeat(8) + "abc";

describe("client/identity/enrollment-secret-file", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "hpcs-enroll-file-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("reads the bare secret and the JSON `hpcs-server enroll --json` prints", async () => {
    const plain = join(dir, "plain");
    await writeFile(plain, `  ${SECRET}\n`);
    assert.deepEqual(await readEnrollmentSecretFile(plain), { path: plain, secret: SECRET, format: "plain" });
    const json = join(dir, "json");
    await writeFile(
      json,
      JSON.stringify({ clientName: "lab-1", enrollmentSecret: SECRET, expiresAt: "2030-01-01T00:00:00Z" }),
    );
    assert.deepEqual(await readEnrollmentSecretFile(json), {
      path: json,
      secret: SECRET,
      clientName: "lab-1",
      format: "json",
    });
  });

  it("refuses a missing file, junk and a bad client name in one line, never echoing the content", async () => {
    const refused = (match: RegExp, content?: string) => (e: unknown) => {
      assert.ok(e instanceof EnrollmentSecretFileError, String(e));
      assert.match(e.message, match);
      assert.ok(!e.message.includes("\n"));
      if (content) assert.ok(!e.message.includes(content), "content not echoed");
      return true;
    };
    await assert.rejects(readEnrollmentSecretFile(join(dir, "none")), refused(/cannot read .*: ENOENT; put/));
    const f = join(dir, "f");
    for (const junk of [
      "",
      "two words-and-more-than-sixteen",
      "short",
      `${SECRET}\n${SECRET}`,
      "{not json",
    ]) {
      await writeFile(f, junk);
      await assert.rejects(
        readEnrollmentSecretFile(f),
        refused(/holds no enrollment secret/, junk || undefined),
      );
    }
    await writeFile(f, JSON.stringify({ clientName: "a;b", enrollmentSecret: SECRET }));
    await assert.rejects(readEnrollmentSecretFile(f), refused(/invalid client name/, SECRET));
  });

  it("writes the next secret in the same form, 0600, atomically (no temp file left)", async () => {
    const plain = join(dir, "plain");
    await writeFile(plain, `${SECRET}\n`, { mode: 0o644 });
    await writeNextEnrollmentSecret(plain, "plain", { clientName: "lab-1", secret: NEXT });
    assert.equal(await readFile(plain, "utf8"), `${NEXT}\n`);
    assert.equal((await stat(plain)).mode & 0o777, 0o600);

    const json = join(dir, "json");
    const expiresAt = new Date("2030-02-01T00:00:00Z");
    await writeNextEnrollmentSecret(json, "json", { clientName: "lab-1", secret: NEXT, expiresAt });
    assert.deepEqual(JSON.parse(await readFile(json, "utf8")), {
      clientName: "lab-1",
      enrollmentSecret: NEXT,
      expiresAt: "2030-02-01T00:00:00.000Z",
    });
    assert.equal((await readEnrollmentSecretFile(json)).secret, NEXT);
    assert.deepEqual((await readdir(dir)).sort(), ["json", "plain"]);
  });

  it("a failed write leaves the old file and no temp file; an odd secret is refused", async () => {
    const f = join(dir, "sub", "missing-dir", "secret");
    await assert.rejects(
      writeNextEnrollmentSecret(f, "plain", { clientName: "lab-1", secret: NEXT }),
      /cannot write the next enrollment secret .*: ENOENT; make it and its directory writable, then ask the operator/,
    );
    const plain = join(dir, "plain");
    await writeFile(plain, `${SECRET}\n`);
    await assert.rejects(
      writeNextEnrollmentSecret(plain, "plain", { clientName: "lab-1", secret: "x\ny" }),
      /unknown form/,
    );
    assert.equal(await readFile(plain, "utf8"), `${SECRET}\n`);
    assert.deepEqual(await readdir(dir), ["plain"]);
  });
});
