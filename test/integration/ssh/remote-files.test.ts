import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { exists, readFile, remove, writeFileAtomic } from "../../../client/ssh/remote-files.js";
import { SshSession } from "../../../client/ssh/ssh-session.js";
import { loadStackEnv, sshUser } from "../../support/stack-env.js";

describe("ssh: remote file operations against the bench's sshd", () => {
  let session: SshSession | undefined;
  let scratch: string;
  let host: string;
  const name = `info-${randomBytes(4).toString("hex")}.yaml`;

  before(async () => {
    const env = loadStackEnv();
    const alice = sshUser(env, "alice");
    scratch = alice.scratch;
    host = env.ssh.host;
    session = await SshSession.connect({
      host: env.ssh.host,
      port: env.ssh.port,
      username: alice.name,
      privateKeyPath: alice.key,
      knownHostsPath: env.ssh.known_hosts,
    });
  });

  after(async () => {
    if (session) {
      await remove(session, join(scratch, name)).catch(() => undefined);
      session.close();
    }
  });

  it("writes atomically, reads back, replaces, caps reads and removes", async () => {
    const s = session as SshSession;
    const path = join(scratch, name);
    assert.equal(await exists(s, path), false);
    assert.equal(await writeFileAtomic(s, scratch, name, "version: 1\n"), path);
    assert.equal(readFileSync(path, "utf8"), "version: 1\n");
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.equal(await exists(s, path), true);
    await writeFileAtomic(s, scratch, name, "version: 2\n");
    assert.equal((await readFile(s, path)).toString(), "version: 2\n");
    assert.deepEqual(
      readdirSync(scratch).filter((f) => f.startsWith(name)),
      [name],
      "no temp file left",
    );
    await assert.rejects(readFile(s, path, 4), /is larger than 4 bytes/);
    await assert.rejects(readFile(s, join(scratch, "absent-file")), {
      message: `remote file ${join(scratch, "absent-file")} does not exist on ${host}`,
    });
    await assert.rejects(writeFileAtomic(s, "/root", name, "x"), {
      message: `permission denied writing /root on ${host}`,
    });
    assert.equal(await remove(s, path), true);
    assert.equal(await remove(s, path), false);
    assert.equal(await exists(s, path), false);
  });
});
