import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { ARTIFACT_CHUNK_BYTES, openArtifactStream } from "../../../client/artifact/artifact-stream.js";
import { ArtifactSecret } from "../../../client/artifact/secret.js";
import { remove } from "../../../client/ssh/remote-files.js";
import { SshSession } from "../../../client/ssh/ssh-session.js";
import { uploadStream } from "../../../client/ssh/upload.js";
import { runOk } from "../../support/exec.js";
import { loadStackEnv, sshUser } from "../../support/stack-env.js";
import { Gpg, makeRandomTree, snapshot, tempDir } from "../../unit/client/artifact/helpers.js";

// The whole data-prep data path against the bench's real sshd: a directory → openArtifactStream (tar +
// encryption in the worker) → uploadStream as alice → GnuPG on the uploaded file → tar -x. The
// scratch dir is the "remote" filesystem and is local here, so gpg reads the upload where it landed.
describe("client: artifact stream → SSH upload → gpg --decrypt | tar -x", () => {
  let work: string;
  let session: SshSession;
  let scratch: string;
  const uploaded: string[] = [];

  before(async () => {
    const env = loadStackEnv();
    const alice = sshUser(env, "alice");
    scratch = alice.scratch;
    session = await SshSession.connect({
      host: env.ssh.host,
      port: env.ssh.port,
      username: alice.name,
      privateKeyPath: alice.key,
      knownHostsPath: env.ssh.known_hosts,
    });
  });
  beforeEach(async () => {
    work = await tempDir("it-artifact");
  });
  afterEach(async () => {
    await rm(work, { recursive: true, force: true });
  });
  after(async () => {
    for (const path of uploaded) await remove(session, path).catch(() => undefined);
    session?.close();
  });

  for (const worker of [true, false]) {
    it(`a tree arrives intact and GnuPG decrypts it (worker: ${worker})`, async () => {
      const src = join(work, "src");
      const out = join(work, "out");
      await mkdir(src);
      await mkdir(out);
      await makeRandomTree(src);
      const secret = ArtifactSecret.generate();
      const name = `it-artifact-${randomBytes(6).toString("hex")}.tar.gpg`;
      uploaded.push(`${scratch}/${name}`);

      const artifact = await openArtifactStream(src, secret, { worker });
      const result = await uploadStream(session, artifact.stream, {
        dir: scratch,
        name,
        chunkSize: ARTIFACT_CHUNK_BYTES,
        maxInFlight: 8,
      });
      assert.deepEqual(await artifact.digest, { sha256: result.sha256, size: result.bytes });

      const gpg = await Gpg.create(secret); // passphrase in a 0600 file, never in argv
      try {
        const r = await gpg.run(["--decrypt", result.path]);
        assert.equal(r.code, 0, r.stderr);
        await runOk("tar", ["-x", "-C", out], { input: r.stdout });
      } finally {
        await gpg.dispose();
      }
      assert.deepEqual(await snapshot(out), await snapshot(src));
      assert.equal(await remove(session, result.path), true);
    });
  }
});
