import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseUnmunge, Unmunge, UnmungeError } from "../../../../server/service/unmunge.js";

// unmunge --numeric output, as munge 0.5.15 prints it (checked on the bench).
const META = `STATUS:          0
ENCODE_HOST:     127.0.0.1
ENCODE_TIME:     1795332681
TTL:             300
UID:             1001
GID:             1004
LENGTH:          7
`;

describe("parseUnmunge", () => {
  it("reads the metadata and the payload", () => {
    assert.deepEqual(parseUnmunge(0, Buffer.from(`${META}\n{"a":1}`), ""), {
      status: 0,
      info: {
        encodeHost: "127.0.0.1",
        encodeTime: 1795332681,
        ttl: 300,
        uid: 1001,
        gid: 1004,
        payload: Buffer.from('{"a":1}'),
      },
    });
  });

  it("keeps a payload that itself contains blank lines", () => {
    const r = parseUnmunge(
      0,
      Buffer.from(`${META.replace("LENGTH:          7", "LENGTH:          4")}\na\n\nb`),
      "",
    );
    assert.ok("info" in r);
    assert.equal(r.info.payload.toString(), "a\n\nb");
  });

  it("takes MUNGE's verdict from the exit code, with unmunge's text or munge_strerror's", () => {
    assert.deepEqual(parseUnmunge(15, Buffer.from(META), "unmunge: Error: Expired credential\n"), {
      status: 15,
      reason: "Expired credential",
    });
    // unmunge prints metadata but no error line for a replay: the code decides.
    assert.deepEqual(parseUnmunge(17, Buffer.from(META), ""), { status: 17, reason: "Replayed credential" });
    assert.deepEqual(parseUnmunge(99, Buffer.from(""), ""), { status: 99, reason: "MUNGE error 99" });
    const r = parseUnmunge(8, Buffer.from(""), "unmunge: Error: bad\u001b[31m thing\nsecond line\n");
    assert.deepEqual(r, { status: 8, reason: "bad?[31m thing" });
  });

  it("never reports success without numeric metadata and a matching LENGTH", () => {
    assert.deepEqual(
      parseUnmunge(0, Buffer.from(`${META.replace("STATUS:          0", "STATUS:          14")}\nx`), ""),
      {
        status: 14,
        reason: "Invalid credential",
      },
    );
    for (const bad of [
      "no blank line",
      `${META.replace("127.0.0.1", "localhost (127.0.0.1)")}\n{"a":1}`,
      `${META.replace("1001", "alice (1001)")}\n{"a":1}`,
      `${META}\n{"a":1}extra`,
      `${META.replace("STATUS:          0\n", "")}\n{"a":1}`,
    ]) {
      assert.throws(() => parseUnmunge(0, Buffer.from(bad), ""), UnmungeError, bad);
    }
  });
});

describe("Unmunge (with a stand-in program)", () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "hpcs-unmunge-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** A fake unmunge that records argv and stdin, then prints `out` and exits `code`. */
  function fake(out: string, code: number): string {
    const p = join(dir, `unmunge-${code}-${out.length}`);
    writeFileSync(
      p,
      `#!${process.execPath}
const fs = require("node:fs");
const input = fs.readFileSync(0, "utf8");
fs.writeFileSync(${JSON.stringify(join(dir, "seen.json"))}, JSON.stringify({ argv: process.argv.slice(2), input, env: process.env }));
process.stdout.write(${JSON.stringify(out)});
process.exit(${code});
`,
    );
    chmodSync(p, 0o755);
    return p;
  }

  it("passes the credential on stdin and the socket in argv, with a fixed environment", async () => {
    const bin = fake(`${META}\n{"a":1}`, 0);
    const r = await new Unmunge({ socket: "/run/munge/x.sock", unmungeBin: bin }).decode("MUNGE:abc:");
    assert.equal(r.status, 0);
    const seen = JSON.parse(readFileSync(join(dir, "seen.json"), "utf8")) as {
      argv: string[];
      input: string;
      env: Record<string, string>;
    };
    assert.deepEqual(seen.argv, [
      "--socket",
      "/run/munge/x.sock",
      "--numeric",
      "--keys",
      "STATUS,ENCODE_HOST,ENCODE_TIME,TTL,UID,GID,LENGTH",
    ]);
    assert.equal(seen.input, "MUNGE:abc:");
    assert.ok(!seen.argv.some((a) => a.includes("MUNGE:")));
    assert.equal(seen.env.LC_ALL, "C");
    assert.equal(seen.env.VAULT_TOKEN, undefined);
  });

  it("rejects when unmunge is missing or prints nonsense", async () => {
    await assert.rejects(
      new Unmunge({ socket: "/x", unmungeBin: join(dir, "missing") }).decode("MUNGE:abc:"),
      (e: unknown) => e instanceof UnmungeError && /not found.*unmunge-bin/.test(e.message),
    );
    await assert.rejects(
      new Unmunge({ socket: "/x", unmungeBin: fake("garbage", 0) }).decode("MUNGE:abc:"),
      UnmungeError,
    );
  });
});
