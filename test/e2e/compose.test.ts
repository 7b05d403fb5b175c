import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { chmod, chown, copyFile, mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { run, runOk, type RunResult } from "../support/exec.js";
import { HpcsServerProcess } from "../support/hpcs-server.js";
import { ClientTraces } from "../support/job-side.js";
import { nonce } from "../support/spire.js";
import { loadStackEnv, sshUser, type StackEnv } from "../support/stack-env.js";

// The researcher's path exactly as the README tells it: the client image built from client/Dockerfile,
// then `docker-compose -f compose/docker-compose.yml -f compose/docker-compose.bench.yml run --rm`
// data-prep, container-prep, job-prep and `job-prep results`, from a directory holding workdir/
// (hpcs-client.conf with the container's /tmp/... paths, CA, trust bundle, enrollment secret) and
// .ssh/ (alice's key, known_hosts) — against the real bench: hpcs server process (MUNGE node
// attestation), SPIRE, Vault, sshd as alice, Slurm. The app is demo/app (wordcount); its decrypted
// report must equal what this test computes from the plaintext.

// The repository root (this file runs as <out>/test/e2e/compose.test.js).
const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const BASE = "hpcs-bench/node:20";
// Own tags, so that another test's build-image.sh replacing hpcs/client:bench cannot remove the image
// under this one.
const IMAGE = "hpcs/client:compose-e2e";
const LABEL = "org.hpcs.test=compose-e2e";
const FILES = [
  "-f",
  join(ROOT, "compose/docker-compose.yml"),
  "-f",
  join(ROOT, "compose/docker-compose.bench.yml"),
];
// What container-prep and job-prep run inside the image besides node, gpg and spire-agent.
const NEEDED_TOOLS = ["mksquashfs", "gocryptfs"];
const CONFIG = ["--config", "/tmp/hpcs-client.conf"];

/** The app's report for a dataset of text files (demo/app/wordcount.sh), computed here. */
function wordcountReport(files: { path: string; body: string }[]): string {
  const sorted = [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  let [tl, tw, tc] = [0, 0, 0];
  const lines = sorted.map((f) => {
    const l = f.body.split("\n").length - 1;
    const w = f.body.split(/\s+/).filter(Boolean).length;
    const c = Buffer.byteLength(f.body);
    [tl, tw, tc] = [tl + l, tw + w, tc + c];
    return `${l} ${w} ${c} ./${f.path}`;
  });
  return `${[...lines, `${tl} ${tw} ${tc} total`].join("\n")}\n`;
}

/** The last line of stdout as JSON (the CLI's --json result object). */
function lastJson<T>(r: RunResult, what: string): T {
  const line = r.stdout.trim().split("\n").pop() ?? "";
  try {
    return JSON.parse(line) as T;
  } catch {
    throw new Error(`${what} printed no JSON result: stdout ${r.stdout} stderr ${r.stderr}`);
  }
}

describe("docker-compose run --rm data-prep / container-prep / job-prep (client image, real bench)", function () {
  // Cold image build: minutes; warm: seconds (≈ 60–80 s when sources changed: tsc). The job: ~1 min.
  this.timeout(900_000);
  const n = nonce();
  const prefix = `ce-${n}`;
  const appTag = `hpcs-test/compose-wordcount:${n}`.toLowerCase();
  let env: StackEnv;
  let dockerEnv: NodeJS.ProcessEnv;
  const image = IMAGE;
  let srv: HpcsServerProcess | undefined;
  let traces: ClientTraces | undefined;
  /** The directory compose runs from (its $PWD and $HOME): workdir/ and .ssh/. */
  let base: string;
  let workdir: string;
  /** Alice's directory on the "supercomputer" (her scratch), for artifacts and the job. */
  let atRest: string;
  let aliceUid: number;
  let aliceGid: number;
  let dockerGid: number;
  let marker: string;
  let dataset: { path: string; body: string }[];

  const compose = (args: string[], timeoutMs = 300_000, extra: NodeJS.ProcessEnv = {}): Promise<RunResult> =>
    run("docker-compose", [...FILES, "-p", prefix, ...args], {
      cwd: base,
      timeoutMs,
      env: {
        ...dockerEnv,
        PWD: base,
        HOME: base,
        HPCS_CLIENT_IMAGE: image,
        HPCS_BASE_IMAGE: BASE,
        HPCS_UID: String(aliceUid),
        HPCS_GID: String(aliceGid),
        HPCS_DOCKER_GID: String(dockerGid),
        ...extra,
      },
    });
  /** `docker-compose … run --rm -T <service> <service> <args…>` (the service's command replaced). */
  const service = (name: string, args: string[], timeoutMs?: number): Promise<RunResult> =>
    compose(["run", "--rm", "-T", "-l", LABEL, name, name, ...args], timeoutMs);
  const failure = (r: RunResult): string =>
    `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}\nserver: ${srv?.lastLines() ?? ""}`;

  before(async function () {
    env = loadStackEnv();
    dockerEnv = { ...process.env, DOCKER_HOST: `unix://${env.docker.socket}` };
    const alice = sshUser(env, "alice");
    aliceUid = Number((await runOk("id", ["-u", "alice"])).trim());
    aliceGid = Number((await runOk("id", ["-g", "alice"])).trim());
    dockerGid = (await stat(env.docker.socket)).gid;

    // 1. The client image (cached layers: seconds when current) and the app image.
    const t0 = Date.now();
    await runOk("bash", [join(ROOT, "stack/base-image.sh")], { env: dockerEnv, timeoutMs: 600_000 });
    await runOk("bash", [join(ROOT, "compose/build-image.sh"), "-t", IMAGE, "--base", BASE], {
      env: dockerEnv,
      timeoutMs: 600_000,
    });
    const missing = (
      await runOk(
        "docker",
        [
          "run",
          "--rm",
          "--network",
          "none",
          "-l",
          LABEL,
          "--entrypoint",
          "sh",
          IMAGE,
          "-c",
          'for t in "$@"; do command -v "$t" >/dev/null || echo "$t"; done',
          "sh",
          ...NEEDED_TOOLS,
        ],
        { env: dockerEnv },
      )
    )
      .split("\n")
      .filter(Boolean);
    // client/Dockerfile installs them: container-prep runs mksquashfs, job-prep ships gocryptfs.
    assert.deepEqual(missing, [], `the client image lacks ${missing.join(", ")}`);
    await runOk("docker", ["build", "-q", "-t", appTag, join(ROOT, "demo/app")], {
      env: dockerEnv,
      timeoutMs: 300_000,
    });
    console.log(`      images ready in ${((Date.now() - t0) / 1000).toFixed(1)} s (${image})`);

    // 2. The operator's side: the real server, and an enrollment secret for this client.
    srv = await HpcsServerProcess.start(env, { nodeAttestation: "munge" });
    traces = new ClientTraces(env, prefix);
    const enrolled = await srv.enroll(prefix);

    // 3. The researcher's directory, as the compose file expects it: paths are the container's.
    base = await mkdtemp(join(tmpdir(), "hpcs-compose-e2e-"));
    workdir = join(base, "workdir");
    const ssh = join(base, ".ssh");
    await mkdir(join(workdir, "input", "sub"), { recursive: true });
    await mkdir(ssh);
    marker = `HPCS-MARKER-${randomBytes(12).toString("hex")}`;
    dataset = [
      { path: "a.txt", body: `alpha beta ${marker} gamma\n` },
      { path: "b.txt", body: "one two\nthree\n\nfour  five\tsix\n" },
      { path: "sub/c.txt", body: `x y z ${marker}\n` },
    ];
    for (const f of dataset) await writeFile(join(workdir, "input", f.path), f.body);
    await copyFile(env.ca_cert, join(workdir, "ca.pem"));
    await copyFile(env.spire.bundle, join(workdir, "bundle.pem"));
    await writeFile(join(workdir, "enrollment.secret"), `${JSON.stringify(enrolled)}\n`, { mode: 0o600 });
    await copyFile(alice.key, join(ssh, "id_ed25519"));
    await chmod(join(ssh, "id_ed25519"), 0o600);
    await copyFile(env.ssh.known_hosts, join(ssh, "known_hosts"));
    await writeFile(
      join(workdir, "hpcs-client.conf"),
      [
        "[spire-server]",
        `address = ${env.spire.server_address}`,
        `port = ${env.spire.server_port}`,
        `trust-domain = ${env.trust_domain}`,
        "trust-bundle = /tmp/bundle.pem",
        "agent-bin = /usr/local/bin/spire-agent",
        "",
        "[hpcs-server]",
        `url = ${srv.url}`,
        "ca-file = /tmp/ca.pem",
        "enrollment-secret-file = /tmp/enrollment.secret",
        "",
        "[vault]",
        `url = ${env.vault.url}`,
        "ca-file = /tmp/ca.pem",
        "",
        "[supercomputer]",
        `address = ${env.ssh.host}`,
        `port = ${env.ssh.port}`,
        "username = alice",
        "ssh-key = /tmp/.ssh/id_ed25519",
        "known-hosts = /tmp/.ssh/known_hosts",
        "",
      ].join("\n"),
      { mode: 0o600 },
    );
    // The tools run as alice (HPCS_UID/HPCS_GID): her files, as on her own laptop.
    await runOk("chown", ["-R", `${aliceUid}:${aliceGid}`, workdir, ssh]);
    await chown(base, aliceUid, aliceGid);

    atRest = join(alice.scratch, prefix);
    await runOk("runuser", ["-u", "alice", "--", "mkdir", "-m", "700", "--", atRest]);
  });

  after(async function () {
    if (dockerEnv) {
      const left = (
        await run("docker", ["ps", "-aq", "--filter", `label=${LABEL}`], { env: dockerEnv })
      ).stdout
        .split("\n")
        .filter(Boolean);
      if (left.length > 0) await run("docker", ["rm", "-f", ...left], { env: dockerEnv });
      if (base) await compose(["down", "--remove-orphans"], 60_000);
      await run("docker", ["rmi", "-f", appTag], { env: dockerEnv });
    }
    await traces?.forget().catch(() => undefined);
    await srv?.stop();
    if (atRest) await rm(atRest, { recursive: true, force: true });
    if (base) await rm(base, { recursive: true, force: true });
  });

  let dataInfo: string;
  let appInfo: string;
  let jobId: string;
  const dataName = (): string => `${prefix}-input`;

  it("data-prep ships the dataset (encrypted, granted to alice on the node)", async () => {
    const r = await service("data-prep", [
      ...CONFIG,
      "-i",
      "/tmp/input",
      "-u",
      "alice",
      "-c",
      env.slurm.node,
      "--data-path",
      `/tmp/${dataName()}.tar.gpg`,
      "--data-path-at-rest",
      atRest,
      "--username",
      "alice",
      "--json",
    ]);
    assert.equal(r.code, 0, failure(r));
    dataInfo = lastJson<{ info_file: string }>(r, "data-prep").info_file;
    assert.equal(dataInfo, join(atRest, `${dataName()}.tar.gpg.info.yaml`));
    await stat(dataInfo);
    const grep = await run("grep", ["-r", "-l", "-a", marker, atRest]);
    assert.equal(grep.stdout, "", `plaintext on the cluster: ${grep.stdout}`);
  });

  it("container-prep prepares the app image from the docker socket and ships it", async () => {
    const r = await service("container-prep", [
      ...CONFIG,
      "-b",
      appTag,
      "-e",
      "-u",
      "alice",
      "-c",
      env.slurm.node,
      "--data-path",
      `/tmp/${prefix}-app.sif.gpg`,
      "--data-path-at-rest",
      atRest,
      "--username",
      "alice",
      "--json",
    ]);
    assert.equal(r.code, 0, failure(r));
    appInfo = lastJson<{ info_file: string }>(r, "container-prep").info_file;
    assert.equal(appInfo, join(atRest, `${prefix}-app.sif.gpg.info.yaml`));
    await stat(appInfo);
  });

  it("job-prep runs the app in a Slurm job; `job-prep results` decrypts exactly its report", async function () {
    if (!dataInfo || !appInfo) this.skip();
    // The original's spelling: -ai/-di, and -args with its doubly quoted value.
    const r = await service(
      "job-prep",
      [
        ...CONFIG,
        "-J",
        `${prefix}-wc`,
        "-N",
        "1",
        "-p",
        env.slurm.partition,
        "-t",
        '"00:10:00"',
        "-w",
        env.slurm.node,
        "-s",
        atRest,
        "-ai",
        appInfo,
        "-di",
        dataInfo,
        "-args",
        `"\\" /sd-container/encrypted/input \\""`, // the directory's own name (payload_name)
        "--json",
      ],
      480_000,
    );
    assert.equal(r.code, 0, failure(r));
    const job = lastJson<{
      ok: boolean;
      jobId: string;
      state: string;
      exitCode: number;
      privateKeyFile: string;
    }>(r, "job-prep");
    assert.equal(job.ok, true);
    assert.equal(job.state, "COMPLETED");
    assert.equal(job.exitCode, 0);
    jobId = job.jobId;
    // The private key stays on the researcher's side: in workdir/, i.e. the container's /tmp.
    assert.equal(job.privateKeyFile, `/tmp/hpcs-job-${jobId}.key.asc`);
    assert.match(await readFile(join(workdir, `hpcs-job-${jobId}.key.asc`), "utf8"), /BEGIN PGP PRIVATE KEY/);
    const grep = await run("grep", ["-r", "-l", "-a", marker, atRest]);
    assert.equal(grep.stdout, "", `plaintext on the cluster: ${grep.stdout}`);

    const res = await service("job-prep", ["results", jobId, ...CONFIG, "--json"]);
    assert.equal(res.code, 0, failure(res));
    const got = lastJson<{ outputDir: string; appExitCode: number }>(res, "job-prep results");
    assert.equal(got.outputDir, `/tmp/hpcs-job-${jobId}-output`);
    assert.equal(got.appExitCode, 0);
    const report = await readFile(join(workdir, `hpcs-job-${jobId}-output`, "result"), "utf8");
    assert.equal(report, wordcountReport(dataset));
    // Written as alice (HPCS_UID), not root.
    assert.equal((await stat(join(workdir, `hpcs-job-${jobId}-output`, "result"))).uid, aliceUid);
  });

  it("container-prep without the docker socket's group fails with a clear error and ships nothing", async () => {
    const name = `${prefix}-nogroup.sif.gpg`;
    const r = await compose(
      [
        "run",
        "--rm",
        "-T",
        "-l",
        LABEL,
        "container-prep",
        "container-prep",
        ...CONFIG,
        "-b",
        appTag,
        "-u",
        "alice",
        "-c",
        env.slurm.node,
        "--data-path",
        name,
        "--data-path-at-rest",
        atRest,
      ],
      120_000,
      // A group that does not own the socket: what forgetting `export HPCS_DOCKER_GID=…` on a host whose
      // docker group is not 120 amounts to.
      { HPCS_DOCKER_GID: "65533" },
    );
    // Exit 2: nothing was created; the one-line error names the socket and the cause.
    assert.equal(r.code, 2, failure(r));
    assert.match(
      r.stderr,
      /hpcs container-prep: cannot reach the Docker daemon at \/var\/run\/docker\.sock \(EACCES\)/,
    );
    const left = await run("ls", [atRest]);
    assert.doesNotMatch(left.stdout, new RegExp(name.replace(/\./g, "\\.")), left.stdout);
  });

  it("run --rm leaves no container behind", async () => {
    const left = await run(
      "docker",
      ["ps", "-aq", "--filter", `label=com.docker.compose.project=${prefix}`],
      {
        env: dockerEnv,
      },
    );
    assert.equal(left.stdout.trim(), "");
  });
});
