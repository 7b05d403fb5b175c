import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { chown, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadClientConfig } from "../../lib/config/client-config.js";
import { planTools } from "../../client/job-prep/remote-tools.js";
import { sessionOptions } from "../../client/ssh/session-options.js";
import { SshSession } from "../../client/ssh/ssh-session.js";
import { eventually, run, runOk, type RunResult } from "../support/exec.js";
import { CLIENT_CLI, HpcsClientHome } from "../support/hpcs-client.js";
import { HpcsServerProcess } from "../support/hpcs-server.js";
import { ClientTraces } from "../support/job-side.js";
import { nonce } from "../support/spire.js";
import { loadStackEnv, sshUser, type StackEnv } from "../support/stack-env.js";

// The whole researcher's path on the real bench: data-prep a dataset and container-prep a tiny app
// (real hpcs server with MUNGE node attestation, SPIRE, Vault, sshd as alice), then `hpcs job-prep`
// submits a real Slurm job on node vm — which attests the node, fetches the keys, decrypts into
// gocryptfs, runs the app and encrypts its output to the job's key — and `hpcs job-prep results`
// decrypts that output here. The result must equal what this test computes on its own.

const APP = `#!/bin/sh
# Copies its first argument's file, hashes it, records every argument on its own line, and hashes
# every file of every dataset it was given.
set -e
cp "$1" /sd-container/output/copy
sha256sum "$1" | cut -d' ' -f1 > /sd-container/output/digest
for a in "$@"; do printf '%s\\n' "$a"; done > /sd-container/output/args
find /sd-container/encrypted -type f | sort | while read -r f; do sha256sum "$f"; done > /sd-container/output/inventory
echo "app ran with $# arguments"
`;

const DOCKERFILE = `ARG BASE
FROM \${BASE}
COPY app.sh /app.sh
ENTRYPOINT ["/bin/sh", "/app.sh"]
`;

describe("hpcs job-prep (real CLI, real Slurm job, real bench)", function () {
  this.timeout(600_000);
  const n = nonce();
  const prefix = `jp-${n}`;
  const clientName = prefix;
  const tag = `hpcs-test/job-prep-app:${n}`.toLowerCase();
  let env: StackEnv;
  let srv: HpcsServerProcess | undefined;
  let home: HpcsClientHome | undefined;
  let traces: ClientTraces;
  let tmp: string;
  let scratch: string;
  /** -s: a fresh directory of alice's in her scratch. */
  let workdir: string;
  let marker: string;
  let content: Buffer;
  let appInfo: string;
  let dataInfo: string;
  let dataName: string;
  /** A second dataset: one file, shipped as payload "file". */
  let fileInfo: string;
  let fileContent: Buffer;
  let aliceHome: string;

  before(async () => {
    env = loadStackEnv();
    scratch = sshUser(env, "alice").scratch;
    traces = new ClientTraces(env, clientName);
    tmp = await mkdtemp(join(tmpdir(), "jp-test-"));
    marker = `hpcs-marker-${randomBytes(12).toString("hex")}`;
    content = Buffer.from(`${marker}\n${randomBytes(2000).toString("base64")}\n`);
    const input = join(tmp, "input");
    await mkdir(input);
    await writeFile(join(input, "hello.txt"), content);
    const ctx = join(tmp, "context");
    await mkdir(ctx);
    await writeFile(join(ctx, "Dockerfile"), DOCKERFILE);
    await writeFile(join(ctx, "app.sh"), APP);
    await runOk("docker", ["build", "-q", "-t", tag, "--build-arg", `BASE=${env.docker.test_image}`, ctx], {
      timeoutMs: 300_000,
    });

    aliceHome = (await runOk("getent", ["passwd", "alice"])).split(":")[5] ?? "";
    workdir = join(scratch, prefix);
    await mkdir(workdir, { mode: 0o700 });
    const ids = (await runOk("id", ["-u", "alice"])).trim();
    const gid = (await runOk("id", ["-g", "alice"])).trim();
    await chown(workdir, Number(ids), Number(gid));

    srv = await HpcsServerProcess.start(env, { nodeAttestation: "munge" });
    home = await HpcsClientHome.create(env, srv, clientName);
    const node = env.slurm.node;
    const ship = async (args: string[]): Promise<{ info_file: string }> => {
      const r = await home!.hpcs([
        ...args,
        "--data-path-at-rest",
        workdir,
        "-u",
        "alice",
        "-c",
        node,
        "--json",
      ]);
      assert.equal(r.code, 0, `${args[0]}: ${r.stderr}\nserver: ${srv!.lastLines()}`);
      return JSON.parse(r.stdout) as { info_file: string };
    };
    // The job finds a dataset under its directory's own name (payload_name), not the artifact's.
    dataName = "input";
    dataInfo = (await ship(["data-prep", "-i", input, "--data-path", `${prefix}-input.tar.gpg`])).info_file;
    fileContent = randomBytes(5000);
    await writeFile(join(tmp, "weights.bin"), fileContent);
    fileInfo = (await ship(["data-prep", "-i", join(tmp, "weights.bin"), "--data-path", `${prefix}-w.gpg`]))
      .info_file;
    appInfo = (
      await ship([
        "container-prep",
        "-b",
        tag,
        "-d",
        env.docker.socket,
        "--data-path",
        `${prefix}-app.sif.gpg`,
      ])
    ).info_file;
  });

  after(async () => {
    await traces?.forget().catch(() => undefined);
    await home?.remove();
    await srv?.stop();
    await run("docker", ["rmi", "-f", tag]).catch(() => undefined);
    if (workdir) await rm(workdir, { recursive: true, force: true });
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  /** `hpcs job-prep --config … <args>` — config before `--`, which HpcsClientHome.hpcs cannot do. */
  function jobPrep(args: string[], timeoutMs = 540_000): Promise<RunResult> {
    return run(process.execPath, [CLIENT_CLI, "job-prep", "--config", home!.configPath, ...args], {
      timeoutMs,
      env: { ...process.env, SSH_AUTH_SOCK: "" },
    });
  }

  async function jobDirs(): Promise<string[]> {
    return readdir(join(workdir, ".hpcs")).catch(() => [] as string[]);
  }

  async function localKeys(): Promise<string[]> {
    return (await readdir(home!.dir)).filter((f) => f.startsWith("hpcs-job-"));
  }

  it("runs the app on the node and hands back exactly what it computed", async () => {
    const spaced = "arg with spaces";
    const quoted = `it's "quoted" $(id)`;
    const r = await jobPrep([
      "-J",
      `${prefix}-run`,
      "-w",
      env.slurm.node,
      "-p",
      env.slurm.partition,
      "-t",
      "00:10:00",
      "-s",
      workdir,
      "-ai",
      appInfo,
      "-di",
      dataInfo,
      "-di",
      fileInfo,
      "--json",
      "--",
      `/sd-container/encrypted/${dataName}/hello.txt`,
      spaced,
      quoted,
    ]);
    assert.equal(r.code, 0, `stdout: ${r.stdout}\nstderr: ${r.stderr}\nserver: ${srv!.lastLines()}`);
    const out = JSON.parse(r.stdout) as {
      ok: boolean;
      jobId: string;
      state: string;
      exitCode: number;
      jobDir: string;
      outputFile: string;
      privateKeyFile: string;
      recordFile: string;
    };
    assert.equal(out.ok, true);
    assert.match(out.jobId, /^\d+$/);
    assert.equal(out.state, "COMPLETED");
    assert.equal(out.exitCode, 0);
    assert.equal(out.outputFile, join(workdir, "output", `${prefix}-run-${out.jobId}.tar.gpg`));
    assert.equal(out.privateKeyFile, join(home!.dir, `hpcs-job-${out.jobId}.key.asc`));
    assert.match(out.jobDir, new RegExp(`^${workdir}/\\.hpcs/${prefix}-run-\\d{8}T\\d{6}Z-[0-9a-f]{8}$`));
    const keyText = await readFile(out.privateKeyFile, "utf8");
    assert.match(keyText, /BEGIN PGP PRIVATE KEY BLOCK/);

    // No plaintext byte on the shared storage: the dataset's marker is nowhere under the workdir.
    const grep = await run("grep", ["-r", "-l", "-a", marker, workdir]);
    assert.equal(grep.stdout, "", `plaintext found on shared storage: ${grep.stdout}`);

    const res = await home!.hpcs(["job-prep", "results", out.jobId, "--json"]);
    assert.equal(res.code, 0, res.stderr);
    const got = JSON.parse(res.stdout) as { outputDir: string; appExitCode: number; stdoutLog: string };
    assert.equal(got.outputDir, join(home!.dir, `hpcs-job-${out.jobId}-output`));
    assert.equal(got.appExitCode, 0);
    assert.deepEqual(await readFile(join(got.outputDir, "copy")), content);
    assert.equal(
      (await readFile(join(got.outputDir, "digest"), "utf8")).trim(),
      createHash("sha256").update(content).digest("hex"),
    );
    assert.equal(
      await readFile(join(got.outputDir, "args"), "utf8"),
      `/sd-container/encrypted/${dataName}/hello.txt\n${spaced}\n${quoted}\n`,
    );
    assert.match(await readFile(got.stdoutLog, "utf8"), /app ran with 3 arguments/);
    // Both datasets, each under its name: the tar as a directory, the single file by its own name.
    const sha = (b: Buffer): string => createHash("sha256").update(b).digest("hex");
    assert.equal(
      await readFile(join(got.outputDir, "inventory"), "utf8"),
      `${sha(content)}  /sd-container/encrypted/${dataName}/hello.txt\n${sha(fileContent)}  /sd-container/encrypted/weights.bin\n`,
    );

    // Fetching again into the same directory is refused (exit 2), nothing overwritten.
    const again = await home!.hpcs(["job-prep", "results", out.jobId]);
    assert.equal(again.code, 2, again.stderr);
    assert.match(again.stderr, /already exists: remove it or give another --output-dir/);
  });

  it("ships each tool once, content-addressed; site-tools uses the login node's own", async () => {
    const cfg = loadClientConfig(home!.configPath);
    const ssh = await SshSession.connect(sessionOptions(cfg.supercomputer, "alice"));
    try {
      const specs = [
        { name: "spire-agent", local: cfg.spireServer.agentBin, source: "agent-bin" },
        { name: "gocryptfs", local: "gocryptfs", source: "PATH" },
      ];
      // The first test's job-prep shipped both: found again by their sha256, nothing to upload.
      const cached = await planTools(ssh, specs, { siteTools: false });
      assert.deepEqual(
        cached.map((t) => t.how),
        ["cached", "cached"],
      );
      for (const t of cached) {
        assert.equal(t.path, `${aliceHome}/.hpcs/tools/${t.sha256}/${t.name}`);
        const st = await stat(t.path);
        assert.equal(st.mode & 0o777, 0o755, t.path);
        assert.deepEqual(await readFile(t.path), await readFile(t.localPath));
      }
      // The bench's login node has gocryptfs on PATH but no spire-agent.
      const site = await planTools(ssh, specs, { siteTools: true });
      assert.deepEqual(
        site.map((t) => [t.name, t.how, t.path]),
        [
          ["spire-agent", "cached", cached[0]?.path],
          ["gocryptfs", "site", "gocryptfs"],
        ],
      );
    } finally {
      ssh.close();
    }
  });

  it("refuses a missing or wrong info file with exit 2 and creates nothing", async () => {
    const dirsBefore = await jobDirs();
    const keysBefore = await localKeys();
    const cases: [string[], RegExp][] = [
      [["-di", join(workdir, "no-such.info.yaml")], /-di\/--data-info .*no-such\.info\.yaml does not exist/],
      [["-di", appInfo], /-di\/--data-info .* not a dataset/],
    ];
    for (const [extra, re] of cases) {
      const r = await jobPrep(["-w", env.slurm.node, "-s", workdir, "-ai", appInfo, ...extra, "--", "x"]);
      assert.equal(r.code, 2, `${extra.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, re);
      assert.equal(r.stderr.trim().split("\n").length, 1, `one line: ${r.stderr}`);
    }
    const wrongApp = await jobPrep(["-s", workdir, "-ai", dataInfo]);
    assert.equal(wrongApp.code, 2);
    assert.match(wrongApp.stderr, /-ai\/--application-info .* not a container image/);
    const badFlag = await jobPrep(["-s", workdir, "-ai", appInfo, "-J", "a b"]);
    assert.equal(badFlag.code, 2);
    assert.match(badFlag.stderr, /-J\/--job-name "a b"/);
    assert.deepEqual(await jobDirs(), dirsBefore, "no job directory left on the cluster");
    assert.deepEqual(await localKeys(), keysBefore, "no key or record left locally");
  });

  it("sbatch refusing the job undoes it all: exit 1, no job directory, no key", async () => {
    const dirsBefore = await jobDirs();
    const keysBefore = await localKeys();
    const r = await jobPrep([
      "-p",
      `nosuch${n}`.slice(0, 30),
      "-s",
      workdir,
      "-ai",
      appInfo,
      "-di",
      dataInfo,
    ]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^hpcs job-prep: sbatch refused the job: .*partition/m);
    assert.deepEqual(await jobDirs(), dirsBefore, "the job directory was removed");
    assert.deepEqual(await localKeys(), keysBefore, "the pending key was removed");
  });

  it("a failing app: -f streams the job's output, exit 1 names the job's reason; the result still opens", async () => {
    const r = await jobPrep([
      "-J",
      `${prefix}-fail`,
      "-w",
      env.slurm.node,
      "-s",
      workdir,
      "-ai",
      appInfo,
      "-f",
      "--",
      "/sd-container/encrypted/nothing-here",
    ]);
    assert.equal(r.code, 1, `stdout: ${r.stdout}\nstderr: ${r.stderr}`);
    assert.match(r.stdout, /^hpcs-job: /m, "the job's own log lines were streamed");
    const last = r.stderr.trim().split("\n").pop() ?? "";
    assert.match(last, /^hpcs job-prep: job (\d+) (FAILED|COMPLETED), exit [1-9]\d*: hpcs-job: failed: /);
    const id = /job (\d+)/.exec(last)?.[1] ?? "";
    // The runtime encrypts the output also when the app failed: its exit code is in there.
    const res = await home!.hpcs(["job-prep", "results", id, "--json"]);
    assert.equal(res.code, 0, res.stderr);
    assert.notEqual(
      (JSON.parse(res.stdout) as { appExitCode: number }).appExitCode,
      0,
      "cp of a missing file fails",
    );
  });

  it("--no-wait prints the job id at once; results says 'not yet' until the job has ended", async () => {
    const r = await jobPrep([
      "-J",
      `${prefix}-nowait`,
      "-w",
      env.slurm.node,
      "-s",
      workdir,
      "-ai",
      appInfo,
      "-di",
      dataInfo,
      "--no-wait",
      "--",
      `/sd-container/encrypted/${dataName}/hello.txt`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const id = r.stdout.trim();
    assert.match(id, /^\d+$/);
    const dir = join(tmp, "nowait-result");
    const res = await eventually("the job's result", 300_000, async () => {
      const x = await home!.hpcs(["job-prep", "results", id, "--json", "--output-dir", dir]);
      if (x.code !== 0) {
        // Only "not there yet" may be retried; anything else fails the test at once.
        assert.equal(x.code, 1, x.stderr);
        assert.match(
          x.stderr,
          /is (PENDING|RUNNING|COMPLETING|CONFIGURING): its result is not written yet/,
          x.stderr,
        );
        throw new Error(x.stderr);
      }
      return JSON.parse(x.stdout) as { outputDir: string; appExitCode: number };
    });
    assert.equal(res.outputDir, dir);
    assert.equal(res.appExitCode, 0);
    assert.deepEqual(await readFile(join(dir, "copy")), content);
  });
  it("an interrupt after submission stops only the watching (exit 130); the job still delivers", async () => {
    const child = spawn(
      process.execPath,
      [
        CLIENT_CLI,
        "job-prep",
        "--config",
        home!.configPath,
        "-J",
        `${prefix}-int`,
        "-w",
        env.slurm.node,
        "-s",
        workdir,
        "-ai",
        appInfo,
        "-di",
        dataInfo,
        "--",
        `/sd-container/encrypted/${dataName}/hello.txt`,
      ],
      { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, SSH_AUTH_SOCK: "" } },
    );
    let stderr = "";
    const submitted = new Promise<string>((resolve) =>
      child.stderr.on("data", (b: Buffer) => {
        stderr += b.toString();
        const m = /submitted {2}job (\d+)/.exec(stderr);
        if (m?.[1]) resolve(m[1]);
      }),
    );
    child.stdout.resume();
    const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
    const id = await Promise.race([submitted, exited.then(() => "")]);
    assert.match(id, /^\d+$/, `job-prep ended before submitting: ${stderr}`);
    child.kill("SIGINT");
    assert.equal(await exited, 130, stderr);
    assert.match(
      stderr,
      new RegExp(`stopped watching; job ${id} keeps running .*'hpcs job-prep results ${id}'`),
    );
    const dir = join(tmp, "interrupted-result");
    const res = await eventually("the interrupted job's result", 300_000, async () => {
      const x = await home!.hpcs(["job-prep", "results", id, "--json", "--output-dir", dir]);
      if (x.code !== 0) {
        assert.match(x.stderr, /its result is not written yet/, x.stderr);
        throw new Error(x.stderr);
      }
      return JSON.parse(x.stdout) as { appExitCode: number };
    });
    assert.equal(res.appExitCode, 0);
    assert.deepEqual(await readFile(join(dir, "copy")), content);
  });
});
