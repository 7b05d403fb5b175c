import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { parse } from "yaml";
import type { ArtifactInfo } from "../../../client/data-prep/info-file.js";
import { eventually, run, runOk } from "../../support/exec.js";
import { HpcsClientHome } from "../../support/hpcs-client.js";
import { HpcsServerProcess } from "../../support/hpcs-server.js";
import { ClientTraces, JobSide } from "../../support/job-side.js";
import { nonce } from "../../support/spire.js";
import { loadStackEnv, sshUser, type StackEnv } from "../../support/stack-env.js";

// `hpcs data-prep` as a real process against the real bench: hpcs server process, SPIRE (its own
// spire-agent child), Vault, sshd as alice. The compute side is played as a job would: a per-job
// spire-agent attested for a node through the server, a JWT-SVID as the job's user, Vault login with
// the role from the info file, gpg --decrypt over SSH (test/support/job-side.ts), tar -x.
describe("hpcs data-prep (real CLI process, real bench)", function () {
  this.timeout(300_000);
  const n = nonce();
  const clientName = `dp-${n}`;
  const node = `dp-${n}-n1`;
  const otherNode = `dp-${n}-n2`;
  let env: StackEnv;
  let srv: HpcsServerProcess | undefined;
  let home: HpcsClientHome | undefined;
  let job: JobSide | undefined;
  let traces: ClientTraces;
  let work: string;
  let input: string;
  let scratch: string;

  before(async () => {
    env = loadStackEnv();
    scratch = sshUser(env, "alice").scratch;
    traces = new ClientTraces(env, clientName);
    work = await mkdtemp(join(tmpdir(), "dp-test-"));
    input = join(work, "input");
    await makeTree(input);
    srv = await HpcsServerProcess.start(env);
    home = await HpcsClientHome.create(env, srv, clientName);
    job = await JobSide.create(env, srv);
  });

  after(async () => {
    await job?.stop();
    for (const f of await readdir(scratch).catch(() => [] as string[])) {
      if (f.startsWith(`dp-${n}`)) await rm(join(scratch, f), { force: true });
    }
    // Whatever grants the runs left (a passing run leaves its grant, as a user's would).
    await traces?.forget().catch(() => undefined);
    await home?.remove();
    await srv?.stop();
    await rm(work, { recursive: true, force: true });
  });

  function args(name: string, extra: string[] = []): string[] {
    return [
      "data-prep",
      "-i",
      input,
      "--data-path",
      `/tmp/${name}`,
      "--data-path-at-rest",
      scratch,
      "-u",
      "alice",
      "-c",
      node,
      ...extra,
    ];
  }

  let first: ArtifactInfo & { info_file: string };

  it("ships a tree of 100+ files that a granted job on the node decrypts identically", async () => {
    const name = `dp-${n}-a.tar.gpg`;
    const r = await home!.hpcs(args(name, ["--json"]));
    assert.equal(r.code, 0, `stderr: ${r.stderr}\nserver: ${srv!.lastLines()}`);
    first = JSON.parse(r.stdout) as ArtifactInfo & { info_file: string };
    assert.equal(first.path_at_rest, join(scratch, name));
    assert.equal(first.info_file, join(scratch, `${name}.info.yaml`));

    // --json matches the info file on the supercomputer, key for key.
    const info = parse(await readFile(first.info_file, "utf8")) as ArtifactInfo;
    for (const [k, v] of Object.entries(info))
      assert.deepEqual((first as unknown as Record<string, unknown>)[k], v, k);
    assert.equal(
      info.spiffeID,
      `spiffe://${env.trust_domain}/c/${clientName}/s/${info.secret_path.split("/").pop()}`,
    );
    // The job unpacks it at /sd-container/encrypted/<the directory's own name>.
    assert.deepEqual([info.payload, info.payload_name], ["tar", basename(input)]);
    const bytes = await readFile(info.path_at_rest);
    assert.equal(createHash("sha256").update(bytes).digest("hex"), info.sha256);
    assert.equal(bytes.length, info.size);
    const leftovers = (await readdir(scratch)).filter(
      (f) => f.startsWith(`dp-${n}`) && /\.(part|tmp)$/.test(f),
    );
    assert.deepEqual(leftovers, []);

    // The compute side: alice's job on the granted node.
    const agent = await job!.jobAgent(node, "alice");
    const svid = await job!.svidAs(agent, "alice", info.spiffeID);
    assert.ok(svid, `alice's job on the granted node gets the grant's SVID: ${job!.lastError}`);
    const passphrase = await job!.readPassphrase(info, svid);
    assert.match(passphrase, /^[A-Za-z0-9_-]{43}$/);

    const out = join(work, "out");
    await mkdir(out);
    const decrypted = await job!.decryptOverSsh(info, passphrase, "alice");
    await runOk("tar", ["-x", "-C", out], { input: decrypted });
    assert.deepEqual(await describeTree(out), await describeTree(input));
  });

  it("gives bob on the granted node, and alice on another node, no way to the key", async () => {
    assert.ok(first, "needs the first test's artifact");
    const bobAgent = await job!.jobAgent(node, "bob");
    assert.equal(
      await job!.svidAs(bobAgent, "bob", first.spiffeID),
      undefined,
      "bob must not get alice's grant",
    );
    // Nor can bob use a JWT-SVID of his own to log in with the grant's role.
    await assert.rejects(job!.vault().loginJwt(first.access_role, "not-a-jwt"));
    const elsewhere = await job!.jobAgent(otherNode, "alice");
    assert.equal(
      await job!.svidAs(elsewhere, "alice", first.spiffeID),
      undefined,
      "node B must not read node A's grant",
    );
  });

  it("refuses invalid names before anything is created", async () => {
    const before = await readFile(home!.secretFile, "utf8");
    const secretsBefore = await traces.secrets();
    for (const bad of [
      ["-u", "a;b"],
      ["-c", "../x"],
      ["-g", "x".repeat(300)],
      ["--data-path", "a b"],
    ]) {
      const r = await home!.hpcs([...args(`dp-${n}-bad`), ...bad]);
      assert.equal(r.code, 2, `${bad.join(" ")}: ${r.stderr}`);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    }
    assert.equal(await readFile(home!.secretFile, "utf8"), before, "no registration happened");
    assert.deepEqual(await traces.secrets(), secretsBefore);
    assert.deepEqual(
      (await readdir(scratch)).filter((f) => f.startsWith(`dp-${n}-bad`)),
      [],
    );
  });

  it("refuses a name already shipped, and a missing input, with one line", async () => {
    const again = await home!.hpcs(args(`dp-${n}-a.tar.gpg`));
    assert.equal(again.code, 2);
    assert.match(again.stderr, /already exists on .*: choose another --data-path/);
    const missing = await home!.hpcs([
      "data-prep",
      "-i",
      join(work, "nope"),
      "--data-path-at-rest",
      scratch,
      "-u",
      "alice",
      "-c",
      node,
    ]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /does not exist: check -i\/--input-data/);
  });

  it("undoes everything when the SSH connection dies mid-upload, and a rerun succeeds", async () => {
    const big = join(work, "big");
    await mkdir(big);
    // Incompressible and large enough that the upload lasts a while on the bench.
    for (let i = 0; i < 6; i++) await writeFile(join(big, `blob${i}`), randomBytes(48 * 2 ** 20));
    const name = `dp-${n}-big.tar.gpg`;
    const secretsBefore = await traces.secrets();
    const entriesBefore = await traces.grantEntries();
    const child = home!.spawnHpcs([...args(name), "-i", big]);
    let stderr = "";
    child.stderr?.on("data", (b: Buffer) => (stderr += b.toString()));
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    // Once the .part is growing, kill the sshd processes serving alice (her side of the connection).
    await eventually("upload in progress", 120_000, async () => {
      const st = await lstat(join(scratch, `${name}.part`));
      if (st.size < 8 * 2 ** 20) throw new Error("not yet");
    });
    await run("pkill", ["-KILL", "-u", "alice"]);
    const code = await exited;
    assert.equal(code, 1, stderr);
    assert.match(stderr, /upload step failed: .*undone: .*grant and secret/);
    const files = (await readdir(scratch)).filter((f) => f.startsWith(name));
    assert.deepEqual(files, [], "no artifact, .part or info file left");
    assert.deepEqual(await traces.secrets(), secretsBefore, "no secret left in Vault");
    assert.deepEqual((await traces.grantEntries()).sort(), entriesBefore.sort(), "no SPIRE entry left");

    const rerun = await home!.hpcs([...args(name, ["--quiet"]), "-i", big]);
    assert.equal(rerun.code, 0, rerun.stderr);
    assert.equal(rerun.stdout, "");
    await lstat(join(scratch, `${name}.info.yaml`));
  });
});

/** Tree layout with ≥ 100 files: nested dirs, an empty file, spaces + UTF-8, a symlink, modes. */
async function makeTree(root: string): Promise<void> {
  for (let d = 0; d < 5; d++) {
    const dir = join(root, `dir${d}`, "nested", `deeper ${d}`);
    await mkdir(dir, { recursive: true });
    for (let f = 0; f < 22; f++) {
      await writeFile(join(dir, `f${f}.bin`), randomBytes((f * 7919 * (d + 1)) % 300_000));
    }
  }
  await writeFile(join(root, "empty"), "");
  await writeFile(join(root, "spaces and ütf-8 ñame ✓.txt"), "hello\n");
  await writeFile(join(root, "run.sh"), "#!/bin/sh\necho hi\n", { mode: 0o750 });
  await symlink("dir0/nested/deeper 0/f1.bin", join(root, "link-to-f1"));
}

/** name → mode/content hash/link target, for every entry under root. */
async function describeTree(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (rel: string): Promise<void> => {
    for (const e of await readdir(join(root, rel))) {
      const p = join(root, rel, e);
      const key = join(rel, e);
      const st = await lstat(p);
      const mode = (st.mode & 0o7777).toString(8);
      if (st.isSymbolicLink()) out[key] = `link ${await readlink(p)}`;
      else if (st.isDirectory()) {
        out[key] = `dir ${mode}`;
        await walk(key);
      } else
        out[key] = `file ${mode} ${createHash("sha256")
          .update(await readFile(p))
          .digest("hex")}`;
    }
  };
  await walk("");
  return out;
}
