import { createHash } from "node:crypto";
import { chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import Dockerode from "dockerode";
import * as openpgp from "openpgp";
import { create as tarCreate } from "tar";
import { type ArtifactInfo, parseInfo } from "../../client/data-prep/info-file.js";
import { type JobArtifact, type JobScriptParams, renderJobScript } from "../../client/job-prep/job-script.js";
import { eventually, run, runOk } from "./exec.js";
import { HpcsClientHome } from "./hpcs-client.js";
import { HpcsServerProcess } from "./hpcs-server.js";
import { ClientTraces } from "./job-side.js";
import { nonce } from "./spire.js";
import { loadStackEnv, sshUser, type StackEnv } from "./stack-env.js";

/**
 * The app of the end-to-end job tests (busybox sh). It writes to /sd-container/output/result: its
 * arguments (one `arg=[…]` line each), `env=[…]` if HPCS_TEST_ENV is set, `sha256sum` of every file
 * under /sd-container/encrypted (paths sorted) and the total word count. Arguments steer it:
 * `wait-release` waits until the test creates .release in the -i scripts dir (bound read-only in the
 * container); `exit N` exits N; `mark` first writes /proc/uptime to app-start (bench/job-startup.ts).
 */
const APP_SCRIPT = `#!/bin/sh
# First instruction: the job benchmark's "app started" mark (same clock as the runtime's marks).
if [ "\${1:-}" = mark ]; then cat /proc/uptime >/sd-container/output/app-start; fi
out=/sd-container/output/result
for a in "$@"; do printf 'arg=[%s]\\n' "$a"; done >"$out"
if [ -n "\${HPCS_TEST_ENV+set}" ]; then printf 'env=[%s]\\n' "$HPCS_TEST_ENV" >>"$out"; fi
cd /sd-container/encrypted || exit 90
find . -type f | sort | while IFS= read -r f; do sha256sum "$f"; done >>"$out"
printf 'words=%s\\n' "$(find . -type f | sort | while IFS= read -r f; do cat "$f"; done | wc -w)" >>"$out"
if [ "\${1:-}" = wait-release ]; then
  while [ ! -e /sd-container/tools/input_logic/jobs/.release ]; do sleep 0.3; done
fi
if [ "\${1:-}" = exit ]; then exit "$2"; fi
exit 0
`;

const DOCKERFILE = `ARG BASE
FROM \${BASE}
COPY app.sh /app.sh
ENTRYPOINT ["/bin/sh", "/app.sh"]
`;

export interface JobRun {
  id: string;
  user: string;
  workdir: string;
  jobDir: string;
  /** The job's stdout/stderr file. */
  outputFile: string;
  /** Where a result would be: <workdir>/output/<jobName>-<id>.tar.gpg. */
  resultPath: string;
}

export interface JobEnd {
  state: string;
  /** The batch script's exit code (ExitCode=N:signal). */
  exitCode: number;
  log: string;
}

export interface SubmitOptions {
  user: string;
  /** Created (owned by `user`) if missing. */
  workdir: string;
  jobName: string;
  app: JobArtifact;
  data: JobArtifact[];
  args?: string[];
  singularityFlags?: string[];
  inputScripts?: string;
  /** Extra environment for sbatch (exported into the job). */
  env?: Record<string, string>;
}

/**
 * sha256 lines and word count as the app computes them, from the plaintext datasets: each is a
 * directory (a tar payload, unpacked at /sd-container/encrypted/<name>/) or a file (at …/<name>).
 */
export async function expectedSummary(datasets: { name: string; path: string }[]): Promise<string> {
  const files: { shown: string; local: string }[] = [];
  const walk = async (local: string, shown: string): Promise<void> => {
    const st = await stat(local);
    if (st.isFile()) {
      files.push({ shown, local });
      return;
    }
    for (const e of await readdir(local, { withFileTypes: true })) {
      if (e.isDirectory() || e.isFile()) await walk(join(local, e.name), `${shown}/${e.name}`);
    }
  };
  for (const d of datasets) await walk(d.path, `./${d.name}`);
  files.sort((a, b) => (a.shown < b.shown ? -1 : a.shown > b.shown ? 1 : 0));
  const lines: string[] = [];
  let words = 0;
  for (const f of files) {
    const body = await readFile(f.local);
    lines.push(`${createHash("sha256").update(body).digest("hex")}  ${f.shown}`);
    // As busybox wc -w counts: runs of non-space bytes with at least one printable character.
    words += body
      .toString("latin1")
      .split(/[ \t\n\v\f\r]+/)
      .filter((w) => /[\x21-\x7e]/.test(w)).length;
  }
  return `${lines.join("\n")}\nwords=${words}\n`;
}

/**
 * One shared set-up for the job-runtime tests: the real hpcs server (MUNGE node attestation), alice's
 * client home, an app image built FROM the bench's busybox and shipped by `hpcs container-prep`, a
 * dataset with a random marker shipped by `hpcs data-prep` (granted to alice on vm, and a second copy
 * granted to another node, a third to alice's group proj-a only), a single-file dataset (payload
 * file), an output key pair, and the tools a job needs in a 0755 dir (the bench's
 * spire-agent lives under root's 0700 home).
 */
export class JobFixture {
  readonly jobs: JobRun[] = [];

  private constructor(
    readonly env: StackEnv,
    readonly srv: HpcsServerProcess,
    readonly home: HpcsClientHome,
    readonly traces: ClientTraces,
    readonly prefix: string,
    readonly tmp: string,
    readonly toolsDir: string,
    readonly tag: string,
    readonly marker: string,
    readonly datasetDir: string,
    readonly app: ArtifactInfo,
    readonly data: ArtifactInfo,
    readonly dataOtherNode: ArtifactInfo,
    /** A single file shipped as payload `file`. */
    readonly dataFile: ArtifactInfo,
    readonly dataFilePath: string,
    /** The dataset granted to group proj-a only (alice is a member, bob is not). */
    readonly dataGroup: ArtifactInfo,
    readonly publicKey: string,
    readonly privateKey: string,
  ) {}

  static async create(): Promise<JobFixture> {
    const env = loadStackEnv();
    const n = nonce();
    const prefix = `jr-${n}`;
    const tag = `hpcs-test/job-runtime:${n}`.toLowerCase();
    const scratch = sshUser(env, "alice").scratch;
    const tmp = await mkdtemp(join(tmpdir(), "job-fixture-"));
    const toolsDir = await mkdtemp(join(tmpdir(), "job-tools-"));
    let srv: HpcsServerProcess | undefined;
    let home: HpcsClientHome | undefined;
    const traces = new ClientTraces(env, prefix);
    try {
      await chmod(toolsDir, 0o755);
      await copyFile(env.spire.agent_bin, join(toolsDir, "spire-agent"));
      await chmod(join(toolsDir, "spire-agent"), 0o755);
      // The app image.
      const docker = new Dockerode({ socketPath: env.docker.socket });
      const ctx = join(tmp, "context");
      await mkdir(ctx);
      await writeFile(join(ctx, "Dockerfile"), DOCKERFILE);
      await writeFile(join(ctx, "app.sh"), APP_SCRIPT, { mode: 0o755 });
      const progress = await docker.buildImage(
        Readable.from(tarCreate({ cwd: ctx, portable: true }, ["."])),
        {
          t: tag,
          buildargs: { BASE: env.docker.test_image },
        },
      );
      const out = await new Promise<{ error?: string }[]>((resolve, reject) =>
        docker.modem.followProgress(progress, (err: Error | null, res: { error?: string }[]) =>
          err ? reject(err) : resolve(res),
        ),
      );
      const failed = out.find((o) => o.error);
      if (failed) throw new Error(`docker build failed: ${failed.error}`);
      // The dataset, with a marker that must never appear in plaintext on shared storage.
      const marker = `HPCS-MARKER-${n}-${createHash("sha256").update(n).digest("hex").slice(0, 16)}`;
      const datasetDir = join(tmp, "dataset");
      await mkdir(join(datasetDir, "sub dir"), { recursive: true });
      await writeFile(join(datasetDir, "a.txt"), `alpha beta ${marker} gamma\n`);
      await writeFile(join(datasetDir, "sub dir", "b.txt"), `one two three\nfour ${marker}\n`);
      await writeFile(join(datasetDir, "c.bin"), Buffer.from([0, 1, 2, 3, 255, 10]));
      const dataFilePath = join(tmp, "notes v1.txt");
      await writeFile(dataFilePath, `single file ${marker}\n`);

      srv = await HpcsServerProcess.start(env, { nodeAttestation: "munge" });
      home = await HpcsClientHome.create(env, srv, prefix, "alice");
      const work = join(tmp, "work");
      await mkdir(work);
      const ship = async (args: string[], name: string, who = ["-u", "alice"]): Promise<ArtifactInfo> => {
        const r = await home!.hpcs([
          ...args,
          "--data-path",
          name,
          "--data-path-at-rest",
          scratch,
          ...who,
          "--json",
        ]);
        if (r.code !== 0)
          throw new Error(`${args[0]} exited ${r.code}: ${r.stderr}\nserver: ${srv!.lastLines()}`);
        const infoPath = join(scratch, `${name}.info.yaml`);
        return parseInfo(await readFile(infoPath, "utf8"), infoPath);
      };
      const app = await ship(
        ["container-prep", "-b", tag, "-d", env.docker.socket, "--work-dir", work, "-c", env.slurm.node],
        `${prefix}-app.sif.gpg`,
      );
      const data = await ship(["data-prep", "-i", datasetDir, "-c", env.slurm.node], `${prefix}-ds.tar.gpg`);
      const dataOtherNode = await ship(
        ["data-prep", "-i", datasetDir, "-c", "othernode"],
        `${prefix}-other.tar.gpg`,
      );
      const dataFile = await ship(
        ["data-prep", "-i", dataFilePath, "-c", env.slurm.node],
        `${prefix}-notes.gpg`,
      );
      const dataGroup = await ship(
        ["data-prep", "-i", datasetDir, "-c", env.slurm.node],
        `${prefix}-group.tar.gpg`,
        ["-g", "proj-a"],
      );
      await docker
        .getImage(tag)
        .remove({ force: true })
        .catch(() => undefined);
      const key = await openpgp.generateKey({
        type: "ecc",
        curve: "curve25519Legacy",
        userIDs: [{ name: `hpcs job ${prefix}` }],
        format: "armored",
      });
      return new JobFixture(
        env,
        srv,
        home,
        traces,
        prefix,
        tmp,
        toolsDir,
        tag,
        marker,
        datasetDir,
        app,
        data,
        dataOtherNode,
        dataFile,
        dataFilePath,
        dataGroup,
        key.publicKey,
        key.privateKey,
      );
    } catch (err) {
      await traces.forget().catch(() => undefined);
      await home?.remove();
      await srv?.stop();
      await rm(tmp, { recursive: true, force: true });
      await rm(toolsDir, { recursive: true, force: true });
      await removeScratch(scratch, prefix);
      throw err;
    }
  }

  /** The contract's JobArtifact for an info file. */
  artifact(info: ArtifactInfo, path = info.path_at_rest): JobArtifact {
    const base = info.path_at_rest.split("/").pop() ?? "";
    return {
      path,
      sha256: info.sha256,
      secretPath: info.secret_path,
      role: info.access_role,
      spiffeId: info.spiffeID,
      payload: info.payload,
      name: info.payload_name ?? base.replace(/(\.tar)?\.gpg$/, ""),
    };
  }

  /** A dir of the user's scratch for one test (created as the user). */
  async workdir(user: string, name: string): Promise<string> {
    const dir = join(sshUser(this.env, user).scratch, `${this.prefix}-${name}`);
    await runOk("runuser", ["-u", user, "--", "mkdir", "-p", "--", dir]);
    return dir;
  }

  /** As `user`: writes a file (via runuser, so the user owns it). */
  async writeAs(user: string, path: string, content: string | Buffer, mode = "600"): Promise<void> {
    await runOk(
      "runuser",
      ["-u", user, "--", "sh", "-c", 'umask 077 && cat >"$1" && chmod "$2" "$1"', "sh", path, mode],
      {
        input: content,
      },
    );
  }

  /** Renders the script for `o`, uploads it with the CA, bundle and public key, sbatch as the user. */
  async submit(o: SubmitOptions): Promise<JobRun> {
    const jobDir = join(o.workdir, ".hpcs", nonce());
    await runOk("runuser", ["-u", o.user, "--", "mkdir", "-p", "-m", "700", "--", jobDir]);
    const env = this.env;
    const ca = join(jobDir, "ca.pem");
    const bundle = join(jobDir, "bundle.pem");
    const pub = join(jobDir, "output-key.asc");
    await this.writeAs(o.user, ca, await readFile(env.ca_cert));
    await this.writeAs(o.user, bundle, await readFile(env.spire.bundle));
    await this.writeAs(o.user, pub, this.publicKey);
    const outputFile = join(jobDir, "job.out");
    const params: JobScriptParams = {
      sbatch: {
        jobName: o.jobName,
        output: outputFile,
        nodes: 1,
        partition: env.slurm.partition,
        time: "10:00",
      },
      workdir: o.workdir,
      jobDir,
      serverUrl: this.srv.url,
      serverCaFile: ca,
      vaultUrl: env.vault.url,
      vaultCaFile: ca,
      vaultAudience: "vault",
      jwtMount: env.vault.jwt_mount,
      spire: {
        address: env.spire.server_address,
        port: env.spire.server_port,
        trustDomain: env.trust_domain,
        bundleFile: bundle,
      },
      tools: { spireAgent: join(this.toolsDir, "spire-agent"), gocryptfs: "gocryptfs" },
      app: o.app,
      data: o.data,
      outputKeyFile: pub,
      runtime: "auto",
      singularityFlags: o.singularityFlags ?? [],
      args: o.args ?? [],
      ...(o.inputScripts ? { inputScripts: o.inputScripts } : {}),
    };
    const script = join(jobDir, "job.sh");
    await this.writeAs(o.user, script, renderJobScript(params), "700");
    const envArgs = Object.entries(o.env ?? {}).map(([k, v]) => `${k}=${v}`);
    const id = (
      await runOk("runuser", ["-u", o.user, "--", "env", ...envArgs, "sbatch", "--parsable", script], {
        cwd: jobDir,
      })
    ).trim();
    const job: JobRun = {
      id,
      user: o.user,
      workdir: o.workdir,
      jobDir,
      outputFile,
      resultPath: join(o.workdir, "output", `${o.jobName}-${id}.tar.gpg`),
    };
    this.jobs.push(job);
    return job;
  }

  /** JobState of a job (scontrol; jobs stay visible for a while after ending). */
  async state(job: JobRun): Promise<{ state: string; exitCode: number }> {
    const line = await runOk("scontrol", ["show", "job", "-o", job.id]);
    const state = /\bJobState=(\S+)/.exec(line)?.[1] ?? "UNKNOWN";
    const exitCode = Number(/\bExitCode=(\d+):/.exec(line)?.[1] ?? -1);
    return { state, exitCode };
  }

  /** Waits until the job has ended; its state, exit code and log. */
  async end(job: JobRun, timeoutMs = 240_000): Promise<JobEnd> {
    const s = await eventually(`job ${job.id} ended`, timeoutMs, async () => {
      const st = await this.state(job);
      if (["PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED"].includes(st.state))
        throw new Error(`still ${st.state}`);
      return st;
    });
    return { ...s, log: await this.log(job) };
  }

  async log(job: JobRun): Promise<string> {
    return readFile(job.outputFile, "utf8").catch(() => "");
  }

  /** Waits for a line in the job's log (e.g. "hpcs-job: app started"). */
  async waitForLog(job: JobRun, re: RegExp, timeoutMs = 180_000): Promise<string> {
    return eventually(`job ${job.id} log ${re}`, timeoutMs, async () => {
      const log = await this.log(job);
      if (re.test(log)) return log;
      const st = await this.state(job);
      if (!["PENDING", "RUNNING", "CONFIGURING"].includes(st.state))
        return Promise.reject(new Error(`job ended (${st.state}) without ${re}: ${log}`));
      throw new Error(`not yet: ${log.split("\n").slice(-2).join(" | ")}`);
    });
  }

  /** Decrypts a result with the output private key; its files as name → content. */
  async decryptResult(path: string): Promise<Map<string, Buffer>> {
    const message = await openpgp.readMessage({ binaryMessage: await readFile(path) });
    const decryptionKeys = await openpgp.readPrivateKey({ armoredKey: this.privateKey });
    const { data } = await openpgp.decrypt({ message, decryptionKeys, format: "binary" });
    const dir = await mkdtemp(join(this.tmp, "result-"));
    await writeFile(join(dir, "r.tar"), data as Uint8Array);
    await mkdir(join(dir, "x"));
    await runOk("tar", ["-xf", join(dir, "r.tar"), "-C", join(dir, "x")]);
    const files = new Map<string, Buffer>();
    for (const f of await readdir(join(dir, "x"))) files.set(f, await readFile(join(dir, "x", f)));
    await rm(dir, { recursive: true, force: true });
    return files;
  }

  /** Files under `roots` whose content contains `needle`; FUSE and other mount points are skipped. */
  async filesContaining(needle: string, roots: string[]): Promise<string[]> {
    const mounts = new Set(
      (await readFile("/proc/mounts", "utf8"))
        .split("\n")
        .map((l) => (l.split(" ")[1] ?? "").replace(/\\040/g, " ")),
    );
    const hits: string[] = [];
    const walk = async (dir: string): Promise<void> => {
      for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
        const p = join(dir, e.name);
        if (mounts.has(p)) continue;
        if (e.isDirectory()) await walk(p);
        else if (e.isFile()) {
          const s = await stat(p).catch(() => undefined);
          if (!s || s.size > 512 * 1024 * 1024) continue;
          const body = await readFile(p).catch(() => Buffer.alloc(0));
          if (body.includes(needle)) hits.push(p);
        }
      }
    };
    for (const r of roots) await walk(r);
    return hits;
  }

  /** gocryptfs mounts of a user (uid) right now. */
  async fuseMountsOf(uid: number): Promise<string[]> {
    return (await readFile("/proc/mounts", "utf8"))
      .split("\n")
      .filter((l) => l.includes("fuse.gocryptfs") && l.includes(`user_id=${uid},`));
  }

  /** Processes whose command line mentions `text`. */
  async processesMentioning(text: string): Promise<string[]> {
    const r = await run("ps", ["-eo", "pid,args"]);
    return r.stdout.split("\n").filter((l) => l.includes(text) && !l.includes("ps -eo"));
  }

  async dispose(): Promise<void> {
    for (const j of this.jobs) await run("scancel", [j.id]).catch(() => undefined);
    for (const j of this.jobs) await this.end(j, 60_000).catch(() => undefined);
    for (const user of ["alice", "bob"]) await removeScratch(sshUser(this.env, user).scratch, this.prefix);
    await this.traces.forget().catch(() => undefined);
    await this.home.remove();
    await this.srv.stop();
    await rm(this.tmp, { recursive: true, force: true });
    await rm(this.toolsDir, { recursive: true, force: true });
  }
}

async function removeScratch(scratch: string, prefix: string): Promise<void> {
  for (const f of await readdir(scratch).catch(() => [] as string[])) {
    if (f.startsWith(prefix)) await rm(join(scratch, f), { recursive: true, force: true });
  }
}
