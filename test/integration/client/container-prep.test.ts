/**
 * `hpcs container-prep` as a real process against the real bench: a test image built by the real
 * dockerd, prepared from its daemon tag and from its `docker save` tar, shipped through the real hpcs
 * server process, SPIRE, Vault and sshd (as alice). The cluster side is played as a granted job would
 * (test/support/job-side.ts): per-job agent for the granted node, JWT-SVID as alice, Vault login with
 * the info file's role, gpg --decrypt over SSH; the SIF is then read by siftool and its partition run
 * with runc (test/support/oci-bundle.ts).
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream, existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import Dockerode from "dockerode";
import { create as tarCreate } from "tar";
import { parse } from "yaml";
import type { ArtifactInfo } from "../../../client/data-prep/info-file.js";
import { runOk } from "../../support/exec.js";
import { HpcsClientHome } from "../../support/hpcs-client.js";
import { HpcsServerProcess } from "../../support/hpcs-server.js";
import { ClientTraces, JobSide } from "../../support/job-side.js";
import { dumpSifObject, OciBundle } from "../../support/oci-bundle.js";
import { nonce } from "../../support/spire.js";
import { loadStackEnv, sshUser, type StackEnv } from "../../support/stack-env.js";

const APP_EXIT = 9;

/** The app: its arguments one per line in brackets, its working directory and env, a stderr line, exit 9. */
const APP_SCRIPT = `#!/bin/sh
for a in "$@"; do printf '[%s]\\n' "$a"; done
printf 'pwd=%s\\n' "$(pwd)"
printf 'greeting=%s\\n' "$GREETING"
echo "stderr: $# args" >&2
exit ${APP_EXIT}
`;

const DOCKERFILE = `ARG BASE
FROM \${BASE}
COPY app /app
WORKDIR /app
ENV GREETING="hello container-prep"
ENTRYPOINT ["/bin/sh", "/app/run.sh", "entry point"]
CMD ["default cmd"]
`;

type Shipped = ArtifactInfo & { ok: boolean; info_file: string };

async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  await pipeline(createReadStream(path), h);
  return h.digest("hex");
}

describe("hpcs container-prep (real CLI process, real bench)", function () {
  this.timeout(300_000);
  const n = nonce();
  const prefix = `cp-${n}`;
  const clientName = prefix;
  const node = `${prefix}-n1`;
  const tag = `hpcs-test/container-prep-cli:${n}`.toLowerCase();
  let env: StackEnv;
  let docker: Dockerode;
  let srv: HpcsServerProcess | undefined;
  let home: HpcsClientHome | undefined;
  let job: JobSide | undefined;
  let traces: ClientTraces;
  let scratch: string;
  let tmp: string;
  /** --work-dir: the image's plaintext while it is prepared; must be empty after every run. */
  let work: string;
  let saved: string;
  let fromTag: Shipped | undefined;
  let tagSif: string | undefined;

  before(async () => {
    env = loadStackEnv();
    scratch = sshUser(env, "alice").scratch;
    traces = new ClientTraces(env, clientName);
    docker = new Dockerode({ socketPath: env.docker.socket });
    tmp = await mkdtemp(join(tmpdir(), "cp-test-"));
    work = join(tmp, "work");
    await mkdir(work);
    const ctx = join(tmp, "context");
    await mkdir(join(ctx, "app"), { recursive: true });
    await writeFile(join(ctx, "Dockerfile"), DOCKERFILE);
    await writeFile(join(ctx, "app", "run.sh"), APP_SCRIPT);
    await chmod(join(ctx, "app", "run.sh"), 0o755);
    const context = Readable.from(tarCreate({ cwd: ctx, portable: true }, ["."]));
    const progress = await docker.buildImage(context, { t: tag, buildargs: { BASE: env.docker.test_image } });
    const out = await new Promise<{ error?: string }[]>((resolve, reject) =>
      docker.modem.followProgress(progress, (err: Error | null, res: { error?: string }[]) =>
        err ? reject(err) : resolve(res),
      ),
    );
    const failed = out.find((o) => o.error);
    if (failed) throw new Error(`docker build failed: ${failed.error}`);
    saved = join(tmp, "saved image.tar");
    await pipeline((await docker.getImage(tag).get()) as Readable, createWriteStream(saved));
    srv = await HpcsServerProcess.start(env);
    home = await HpcsClientHome.create(env, srv, clientName);
    job = await JobSide.create(env, srv);
  });

  after(async () => {
    await job?.stop();
    for (const f of await readdir(scratch).catch(() => [] as string[])) {
      if (f.startsWith(prefix)) await rm(join(scratch, f), { force: true });
    }
    // The grants and secrets the passing runs left (as a user's would), and the client's registration.
    await traces?.forget().catch(() => undefined);
    await home?.remove();
    await srv?.stop();
    await docker
      ?.getImage(tag)
      .remove({ force: true })
      .catch(() => undefined);
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  function args(name: string, extra: string[] = []): string[] {
    return [
      "container-prep",
      "--data-path",
      name,
      "--data-path-at-rest",
      scratch,
      "-u",
      "alice",
      "-c",
      node,
      "--work-dir",
      work,
      ...extra,
    ];
  }

  /** Runs container-prep with --json; checks the result against the info file and the ciphertext. */
  async function ship(name: string, image: string, extra: string[] = []): Promise<Shipped> {
    const r = await home!.hpcs(args(name, ["-b", image, ...extra, "--json"]));
    assert.equal(r.code, 0, `stderr: ${r.stderr}\nserver: ${srv!.lastLines()}`);
    assert.equal(r.stderr, "", "--json prints no progress");
    const shipped = JSON.parse(r.stdout) as Shipped;
    assert.equal(shipped.ok, true);
    assert.equal(shipped.path_at_rest, join(scratch, name));
    assert.equal(shipped.info_file, join(scratch, `${name}.info.yaml`));

    // --json matches the info file on the supercomputer, key for key, and names no other key.
    const info = parse(await readFile(shipped.info_file, "utf8")) as ArtifactInfo;
    for (const [k, v] of Object.entries(info))
      assert.deepEqual((shipped as unknown as Record<string, unknown>)[k], v, k);
    assert.deepEqual(Object.keys(shipped).sort(), [...Object.keys(info), "info_file", "ok"].sort());
    assert.equal(info.kind, "container");
    assert.equal(info.payload, "sif");
    assert.equal(info.payload_name, undefined);
    assert.equal(
      info.spiffeID,
      `spiffe://${env.trust_domain}/c/${clientName}/s/${info.secret_path.split("/").pop()}`,
    );
    assert.deepEqual(info.grant, { nodes: [node], users: ["alice"], groups: [] });

    // The ciphertext is what the info file says it is.
    const sha = await sha256File(info.path_at_rest);
    assert.equal(sha, info.sha256);
    assert.equal(info.checksum, `sha256:${sha}`);
    const ciphertext = await readFile(info.path_at_rest);
    assert.equal(ciphertext.length, info.size);
    const head = ciphertext.subarray(0, 64);
    assert.equal((head[0] ?? 0) & 0x80, 0x80, "starts with an OpenPGP packet");
    assert.doesNotMatch(head.toString("latin1"), /run-singularity|SIF_MAGIC/, "not the plaintext SIF");
    const leftovers = (await readdir(scratch)).filter((f) => f.startsWith(prefix) && /\.(part|tmp)$/.test(f));
    assert.deepEqual(leftovers, []);
    assert.deepEqual(await readdir(work), [], "no plaintext left in --work-dir");
    return shipped;
  }

  /** As alice's job on the granted node: SVID → Vault → passphrase → gpg over SSH → `out`. */
  async function decryptAsGrantedJob(info: Shipped, out: string): Promise<void> {
    const agent = await job!.jobAgent(node, "alice");
    const svid = await job!.svidAs(agent, "alice", info.spiffeID);
    assert.ok(svid, `alice's job on the granted node gets the grant's SVID: ${job!.lastError}`);
    const passphrase = await job!.readPassphrase(info, svid);
    assert.match(passphrase, /^[A-Za-z0-9_-]{43}$/);
    await job!.decryptOverSshToFile(info, passphrase, out, "alice");
  }

  it("ships the image from its daemon tag: --json is the info file, kind container, payload sif", async () => {
    const kept = join(tmp, "kept.sif");
    fromTag = await ship(`${prefix}-tag.sif.gpg`, tag, ["-d", env.docker.socket, "-s", kept]);
    assert.ok(existsSync(kept), "-s keeps the unencrypted SIF");
    assert.ok(fromTag.size > 0);
  });

  it("refuses a name already shipped before preparing the image (no SIF built, no -s copy)", async () => {
    assert.ok(fromTag, "needs the first test's artifact");
    const kept = join(tmp, "again.sif");
    const r = await home!.hpcs(
      args(`${prefix}-tag.sif.gpg`, ["-b", tag, "-d", env.docker.socket, "-s", kept]),
    );
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^hpcs container-prep: .* already exists on .*: choose another --data-path/);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert.equal(existsSync(kept), false, "no -s copy");
    assert.deepEqual(await readdir(work), [], "the image was not prepared");
  });

  it("decrypts, as a granted job, to the SIF siftool reads; runc runs the wrapper with intact arguments", async () => {
    assert.ok(fromTag, "needs the first test's artifact");
    tagSif = join(tmp, "tag.sif");
    await decryptAsGrantedJob(fromTag, tagSif);
    assert.equal(await sha256File(tagSif), await sha256File(join(tmp, "kept.sif")), "the -s copy");

    const list = await runOk(env.tools.siftool, ["list", tagSif]);
    assert.match(list, /1\s+\|1\s+\|NONE\s+\|32176-\d+\s+\|Def\.FILE/);
    assert.match(list, /2\s+\|1\s+\|NONE\s+\|\d+-\d+\s+\|FS \(Squashfs\/\*System\/amd64\)/);
    const deffile = await runOk(env.tools.siftool, ["dump", "1", tagSif]);
    assert.match(deffile, new RegExp(`from docker-daemon:${tag.replace(/[.]/g, "\\.")},`));
    assert.doesNotMatch(deffile, new RegExp(tmp), "no local path in the SIF");

    const bundle = await OciBundle.fromSif(env, tagSif, join(tmp, "bundle"));
    const cfg = JSON.parse(await readFile(join(bundle.rootfs, "sd-container/image-config.json"), "utf8"));
    assert.deepEqual(cfg.entrypoint, ["/bin/sh", "/app/run.sh", "entry point"]);
    const output = join(tmp, "output");
    await mkdir(output);
    const jobArgs = ["two words", `it's "quoted"`, "'single' and \"double\"", "", "$HOME;`id` *"];
    const r = await bundle.run({
      id: `${prefix}-run`.toLowerCase(),
      args: [cfg.wrapper, ...jobArgs],
      env: cfg.env,
      mounts: [{ destination: "/sd-container/output", source: output }],
    });
    assert.equal(r.code, APP_EXIT, `${bundle.runtime} run: ${r.stderr}`);
    assert.equal(
      await readFile(join(output, "stdout.log"), "utf8"),
      [
        "[entry point]",
        ...jobArgs.map((a) => `[${a}]`),
        "pwd=/app",
        "greeting=hello container-prep",
        "",
      ].join("\n"),
    );
    assert.equal(await readFile(join(output, "stderr.log"), "utf8"), `stderr: ${jobArgs.length + 1} args\n`);
    assert.equal(await readFile(join(output, "exit_code"), "utf8"), `${APP_EXIT}\n`);
    await bundle.remove();
  });

  it("ships the same image from its docker save tar: the SIF's squashfs partition is byte-identical", async () => {
    assert.ok(fromTag && tagSif && existsSync(tagSif), "needs the previous tests' SIF");
    const fromTar = await ship(`${prefix}-tar.sif.gpg`, `docker-archive:${saved}`);
    assert.notEqual(fromTar.secret_path, fromTag.secret_path, "each artifact has its own key");
    const tarSif = join(tmp, "tar.sif");
    await decryptAsGrantedJob(fromTar, tarSif);
    const parts: string[] = [];
    for (const sif of [tagSif, tarSif]) {
      const out = join(tmp, `part-${parts.length}.sqfs`);
      await dumpSifObject(env, sif, 2, out);
      parts.push(await sha256File(out));
    }
    assert.equal(parts[1], parts[0]);
    const deffile = await runOk(env.tools.siftool, ["dump", "1", tarSif]);
    assert.match(deffile, /from docker-archive:saved image\.tar,/);
  });

  // Stage lines are for terminals only; the tests' stderr is a pipe, so the error is the only line.
  describe("bad input: exit 2, one error line on stderr, nothing created", () => {
    const cases: [string, () => string[], RegExp][] = [
      [
        "an unknown image tag",
        () => ["-b", `hpcs-test/no-such-image:${n}`.toLowerCase(), "-d", env.docker.socket],
        /is not in the local Docker daemon/,
      ],
      [
        "a garbage tar",
        () => ["-b", `docker-archive:${join(tmp, "garbage.tar")}`],
        /garbage\.tar.*is not a readable tar archive/,
      ],
      [
        "an unreadable (missing) tar",
        () => ["-b", `docker-archive:${join(tmp, "missing.tar")}`],
        /missing\.tar.*(not a readable image tar file|no such file)/,
      ],
      [
        "-d pointing to a missing socket, with a tag",
        () => ["-b", tag, "-d", join(tmp, "no", "docker.sock")],
        /no Docker daemon socket at .*docker\.sock/,
      ],
    ];
    for (const [what, flags, why] of cases) {
      for (const mode of ["--json", "--quiet", undefined]) {
        it(`${what}${mode ? ` (${mode})` : ""}`, async () => {
          await writeFile(join(tmp, "garbage.tar"), Buffer.alloc(10_000, 0x33));
          const name = `${prefix}-bad.sif.gpg`;
          const kept = join(tmp, "bad-kept.sif");
          const secretBefore = await readFile(home!.secretFile, "utf8");
          const secretsBefore = await traces.secrets();
          const entriesBefore = await traces.grantEntries();
          const r = await home!.hpcs(args(name, [...flags(), "-s", kept, ...(mode ? [mode] : [])]));
          assert.equal(r.code, 2, `exit ${r.code}: ${r.stderr}`);
          assert.match(r.stderr, /\n$/);
          const lines = r.stderr.slice(0, -1).split("\n");
          const errors = lines.filter((l) => l.startsWith("hpcs container-prep: "));
          assert.equal(errors.length, 1, `one error line, not:\n${r.stderr}`);
          const error = errors[0] ?? "";
          assert.match(error, why);
          assert.deepEqual(lines, [error], `only the error line (${mode ?? "default"})`);
          if (mode === "--json") {
            const res = JSON.parse(r.stdout) as { ok: boolean; error: string };
            assert.equal(res.ok, false);
            assert.equal(`hpcs container-prep: ${res.error}`, error);
          } else {
            assert.equal(r.stdout, "");
          }
          assert.equal(await readFile(home!.secretFile, "utf8"), secretBefore, "no registration happened");
          assert.deepEqual(await traces.secrets(), secretsBefore, "no secret in Vault");
          assert.deepEqual(await traces.grantEntries(), entriesBefore, "no grant");
          assert.deepEqual(
            (await readdir(scratch)).filter((f) => f.startsWith(`${prefix}-bad`)),
            [],
            "nothing in alice's scratch",
          );
          assert.equal(existsSync(kept), false, "no -s copy");
          assert.deepEqual(await readdir(work), [], "nothing left in --work-dir");
        });
      }
    }
  });
});
