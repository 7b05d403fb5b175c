import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { execFileSync } from "node:child_process";
import {
  chownSync,
  createReadStream,
  existsSync,
  mkdirSync,
  readdirSync,
  rmdirSync,
  statSync,
} from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { SshSession, type SshSessionOptions } from "../../../client/ssh/ssh-session.js";
import { uploadStream } from "../../../client/ssh/upload.js";
import { loadStackEnv, sshUser, type StackEnv } from "../../support/stack-env.js";

/** `size` bytes of pseudo-random data in 1 MiB chunks, hashing as it goes; `failAt` makes it error there. */
function generated(size: number, opts: { failAt?: number } = {}): { stream: Readable; sha256: () => string } {
  const hash = createHash("sha256");
  const block = randomBytes(1024 * 1024);
  let sent = 0;
  let counter = 0;
  const stream = new Readable({
    read() {
      if (opts.failAt !== undefined && sent >= opts.failAt) {
        this.destroy(new Error("simulated encryption failure"));
        return;
      }
      if (sent >= size) {
        this.push(null);
        return;
      }
      const chunk = Buffer.from(block.subarray(0, Math.min(block.length, size - sent)));
      chunk.writeUInt32BE(counter++, 0); // every chunk differs, so a reordered write changes the hash
      hash.update(chunk);
      sent += chunk.length;
      this.push(chunk);
    },
  });
  return { stream, sha256: () => hash.digest("hex") };
}

function sha256File(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash("sha256");
    createReadStream(path)
      .on("data", (c) => h.update(c))
      .on("error", reject)
      .on("end", () => resolve(h.digest("hex")));
  });
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

async function expectConnectError(opts: SshSessionOptions, pattern: RegExp): Promise<void> {
  await assert.rejects(SshSession.connect(opts), (err: Error) => {
    assert.match(err.message, pattern);
    assert.ok(!err.message.includes("\n"), "one line");
    return true;
  });
}

// The bench's real sshd (OpenSSH) and its "shared filesystem" scratch dirs, which are local here.
describe("ssh: connect and atomic upload against the bench's sshd", () => {
  let env: StackEnv;
  let alice: { name: string; key: string; scratch: string };
  let aliceOpts: SshSessionOptions;
  let tmp: string;
  const tag = randomBytes(4).toString("hex");

  before(async () => {
    env = loadStackEnv();
    alice = sshUser(env, "alice");
    aliceOpts = {
      host: env.ssh.host,
      port: env.ssh.port,
      username: alice.name,
      privateKeyPath: alice.key,
      knownHostsPath: env.ssh.known_hosts,
      readyTimeoutMs: 10_000,
    };
    tmp = await mkdtemp(join(tmpdir(), "hpcs-ssh-it-"));
  });

  after(async () => {
    await rm(tmp, { recursive: true, force: true });
    if (alice) {
      for (const f of readdirSync(alice.scratch)) {
        if (f.includes(tag)) await rm(join(alice.scratch, f), { force: true });
      }
    }
  });

  function leftovers(name: string): string[] {
    return readdirSync(alice.scratch).filter((f) => f.startsWith(name));
  }

  for (const transport of ["auto", "sftp"] as const) {
    it(`uploads a 64 MiB stream (transport ${transport}): right size and sha256 under the final name, no .part left`, async () => {
      const session = await SshSession.connect(aliceOpts);
      try {
        const name = `up-${transport}-${tag}.gpg`;
        const size = 64 * 1024 * 1024;
        const data = generated(size);
        const res = await uploadStream(session, data.stream, { dir: alice.scratch, name, transport });
        assert.equal(res.transport, transport === "auto" ? "cat" : "sftp");
        const expected = data.sha256();
        assert.equal(res.path, join(alice.scratch, name));
        assert.equal(res.bytes, size);
        assert.equal(res.sha256, expected);
        assert.equal(statSync(res.path).size, size);
        assert.equal(statSync(res.path).mode & 0o777, 0o600);
        assert.equal(await sha256File(res.path), expected);
        assert.deepEqual(leftovers(name), [name]);

        // Uploading again replaces the file atomically (posix-rename), not an error.
        const again = generated(1000);
        const res2 = await uploadStream(session, again.stream, { dir: alice.scratch, name, transport });
        assert.equal(statSync(res2.path).size, 1000);
        assert.equal(await sha256File(res2.path), again.sha256());
      } finally {
        session.close();
      }
    });
  }

  for (const transport of ["auto", "sftp"] as const) {
    it(`removes the .part when the source errors midway, and says so in one line (transport ${transport})`, async () => {
      const session = await SshSession.connect(aliceOpts);
      try {
        const name = `fail-${transport}-${tag}.gpg`;
        const data = generated(64 * 1024 * 1024, { failAt: 8 * 1024 * 1024 });
        await assert.rejects(
          uploadStream(session, data.stream, { dir: alice.scratch, name, transport }),
          (err: Error) => {
            assert.match(
              err.message,
              /^upload of fail-.* failed: reading the data: simulated encryption failure$/,
            );
            return true;
          },
        );
        assert.deepEqual(leftovers(name), []);
      } finally {
        session.close();
      }
    });

    it(`removes the .part on abort (transport ${transport})`, async () => {
      const session = await SshSession.connect(aliceOpts);
      try {
        const name = `abort-${transport}-${tag}.gpg`;
        const ac = new AbortController();
        const data = generated(256 * 1024 * 1024);
        let seen = 0;
        data.stream.on("data", (c: Buffer) => {
          seen += c.length;
          if (seen > 4 * 1024 * 1024) ac.abort();
        });
        await assert.rejects(
          uploadStream(session, data.stream, { dir: alice.scratch, name, signal: ac.signal, transport }),
          /aborted$/,
        );
        assert.deepEqual(leftovers(name), []);
      } finally {
        session.close();
      }
    });
  }

  it("falls back to SFTP WRITEs where the server runs no command (or not ours)", async () => {
    const session = await SshSession.connect(aliceOpts);
    try {
      // "false": a login shell that refuses; sftp-server: what ForceCommand internal-sftp runs instead.
      for (const catCommand of ["false", "/usr/lib/openssh/sftp-server"]) {
        const name = `fallback-${tag}.gpg`;
        const data = generated(3 * 1024 * 1024 + 5);
        const res = await uploadStream(session, data.stream, { dir: alice.scratch, name, catCommand });
        assert.equal(res.transport, "sftp", catCommand);
        assert.equal(await sha256File(res.path), data.sha256());
        assert.equal(statSync(res.path).mode & 0o777, 0o600);
        assert.deepEqual(leftovers(name), [name]);
      }
    } finally {
      session.close();
    }
  });

  it("hands the path to cat as data: a directory named like shell code is only a name", async () => {
    const session = await SshSession.connect(aliceOpts);
    const marker = `pwned-${tag}`;
    const dir = join(alice.scratch, `q 'x' "y" $(touch ${marker}) \`;z\` ;touch ${marker}`);
    mkdirSync(dir);
    const { uid, gid } = statSync(alice.scratch);
    chownSync(dir, uid, gid);
    try {
      const data = generated(2 * 1024 * 1024);
      const res = await uploadStream(session, data.stream, { dir, name: `odd-${tag}.gpg` });
      assert.equal(res.transport, "cat");
      assert.equal(res.path, join(dir, `odd-${tag}.gpg`));
      assert.equal(await sha256File(res.path), data.sha256());
      const home = execFileSync("getent", ["passwd", alice.name], { encoding: "utf8" }).split(":")[5] ?? "/";
      for (const where of [alice.scratch, dir, home, "/"]) {
        assert.equal(existsSync(join(where, marker)), false, `a shell ran the path's code in ${where}`);
      }
    } finally {
      session.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  describe("remote disk full (a 1 MiB tmpfs in alice's scratch dir)", () => {
    let full: string;

    before(function () {
      full = join(alice.scratch, `full-${tag}`);
      mkdirSync(full);
      const { uid, gid } = statSync(alice.scratch);
      try {
        execFileSync("mount", [
          "-t",
          "tmpfs",
          "-o",
          `size=1m,mode=0700,uid=${uid},gid=${gid}`,
          "tmpfs",
          full,
        ]);
      } catch (err) {
        rmdirSync(full);
        // Mounting needs root (CI and the bench run as root); elsewhere say why instead of passing.
        this.skip();
        throw err;
      }
    });

    after(() => {
      if (!full || !existsSync(full)) return;
      execFileSync("umount", [full]);
      rmdirSync(full);
    });

    for (const transport of ["auto", "sftp"] as const) {
      it(`says "remote disk full" in one line and leaves no .part (transport ${transport})`, async () => {
        const session = await SshSession.connect(aliceOpts);
        try {
          const name = `big-${transport}.gpg`;
          await assert.rejects(
            uploadStream(session, generated(8 * 1024 * 1024).stream, { dir: full, name, transport }),
            { message: `remote disk full writing ${join(full, `${name}.part`)} on ${env.ssh.host}` },
          );
          assert.deepEqual(readdirSync(full), []);
        } finally {
          session.close();
        }
      });
    }
  });

  it("refuses to write where alice may not: permission denied, nothing left", async () => {
    const session = await SshSession.connect(aliceOpts);
    try {
      await assert.rejects(
        uploadStream(session, generated(1000).stream, { dir: "/root", name: `x-${tag}` }),
        {
          message: `permission denied writing /root on ${env.ssh.host}`,
        },
      );
      assert.equal(existsSync(`/root/x-${tag}.part`), false);
      await assert.rejects(
        uploadStream(session, generated(10).stream, { dir: `${alice.scratch}/missing-${tag}`, name: "x" }),
        { message: `remote directory ${alice.scratch}/missing-${tag} does not exist on ${env.ssh.host}` },
      );
      await assert.rejects(
        uploadStream(session, generated(10).stream, { dir: alice.scratch, name: "../x" }),
        /invalid remote file name/,
      );
    } finally {
      session.close();
    }
  });

  it("refuses a host key that does not match known_hosts", async () => {
    const file = join(tmp, "known_hosts.wrong");
    const other = Buffer.concat([
      Buffer.from([0, 0, 0, 11]),
      Buffer.from("ssh-ed25519"),
      Buffer.from([0, 0, 0, 32]),
      randomBytes(32),
    ]);
    await writeFile(
      file,
      `# other key\n[${env.ssh.host}]:${env.ssh.port} ssh-ed25519 ${other.toString("base64")}\n`,
    );
    await expectConnectError(
      { ...aliceOpts, knownHostsPath: file },
      new RegExp(
        `^host key for \\[127\\.0\\.0\\.1\\]:${env.ssh.port} \\(ssh-ed25519\\) does not match ${file} line 2: .*check and update the file$`,
      ),
    );
  });

  it("refuses an unknown host (empty known_hosts)", async () => {
    const file = join(tmp, "known_hosts.empty");
    await writeFile(file, "");
    await expectConnectError(
      { ...aliceOpts, knownHostsPath: file },
      /^host \[127\.0\.0\.1\]:\d+ is not in .*known_hosts\.empty: add its key/,
    );
    await expectConnectError(
      { ...aliceOpts, knownHostsPath: join(tmp, "nope") },
      /^cannot read known_hosts file .*nope \(ENOENT\)/,
    );
  });

  it("reports permission denied for the wrong user key", async () => {
    await expectConnectError(
      { ...aliceOpts, privateKeyPath: sshUser(env, "bob").key },
      /^permission denied for alice@127\.0\.0\.1 \(publickey\): /,
    );
  });

  it("reports an unreachable port", async () => {
    const port = await freePort();
    await expectConnectError(
      { ...aliceOpts, port },
      new RegExp(`^cannot reach 127\\.0\\.0\\.1:${port}: connection refused`),
    );
  });

  it("connects through a ProxyJump host (the same sshd) and uploads", async function () {
    let session: SshSession;
    try {
      session = await SshSession.connect({
        ...aliceOpts,
        proxyJump: { host: env.ssh.host, port: env.ssh.port, username: alice.name },
      });
    } catch (err) {
      if (/jump host cannot open a connection/.test((err as Error).message)) {
        // The bench's sshd forbids TCP forwarding: ProxyJump is untestable here, not broken.
        this.skip();
      }
      throw err;
    }
    try {
      const name = `jump-${tag}.gpg`;
      const data = generated(4 * 1024 * 1024);
      const res = await uploadStream(session, data.stream, { dir: alice.scratch, name });
      assert.equal(await sha256File(res.path), data.sha256());
    } finally {
      session.close();
    }
  });
});
