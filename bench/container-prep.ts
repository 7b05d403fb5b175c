/**
 * `npm run bench -- container-prep [--mib N] [--json]`: an image of about N MiB (default 512: the
 * bench's busybox plus four layers of incompressible random files), built by the bench's dockerd, taken
 * through client/container stage by stage — export, flatten, prepare, squashfs, sif, then
 * encrypt+ship (openpgp.js encryptStream of the SIF → uploadStream as alice) — with the wall
 * time and peak RSS of each stage; beside it, in the same run, the original's way:
 * `docker save | gpg --symmetric --cipher-algo AES256 | ssh alice@bench 'cat > f'`.
 *
 * Peak RSS per stage: this process's VmHWM, reset before each stage (/proc/self/clear_refs "5"), and
 * the largest VmHWM of its child processes (mksquashfs) sampled every 50 ms. The baseline's is the sum
 * of its three processes' peaks (they run at the same time). Everything it creates — the image, temp
 * directories, remote files — is removed on every exit path, Ctrl-C included.
 */

import { spawn } from "node:child_process";
import { createCipheriv, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream, writeFileSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { parseArgs } from "node:util";
import Dockerode from "dockerode";
import { create as tarCreate } from "tar";
import { encryptStream } from "../client/artifact/encrypt-stream.js";
import { ArtifactSecret } from "../client/artifact/secret.js";
import { prepareContainer, type PrepareStage } from "../client/container/prepare-container.js";
import { remove } from "../client/ssh/remote-files.js";
import { SshSession } from "../client/ssh/ssh-session.js";
import { uploadStream } from "../client/ssh/upload.js";
import { loadStackEnv, sshUser } from "../test/support/stack-env.js";
import { sampler, vmHwmSync } from "./peak-rss.js";

export const CONTAINER_PREP_USAGE =
  "container-prep [--mib N] [--json]   image → SIF → encrypt+ship, per stage, vs docker save | gpg | ssh";

const MIB = 1024 * 1024;
const LAYERS = 4;

interface StageRow {
  stage: string;
  seconds: number;
  peakRssMiB: number;
  childPeakRssMiB: number;
}

/** Incompressible bytes, generated on the fly (AES-256-CTR of zeros). */
async function writeRandom(path: string, bytes: number): Promise<void> {
  const ctr = createCipheriv("aes-256-ctr", randomBytes(32), Buffer.alloc(16));
  const zeros = Buffer.alloc(MIB);
  let left = bytes;
  const src = new Readable({
    read() {
      if (left <= 0) return void this.push(null);
      const n = Math.min(MIB, left);
      left -= n;
      this.push(ctr.update(zeros.subarray(0, n)));
    },
  });
  await pipeline(src, createWriteStream(path));
}

async function buildImage(
  docker: Dockerode,
  base: string,
  tag: string,
  dir: string,
  mib: number,
): Promise<void> {
  const ctx = join(dir, "context");
  await mkdir(ctx);
  const lines = ["ARG BASE", "FROM ${BASE}"];
  for (let i = 0; i < LAYERS; i++) {
    await writeRandom(join(ctx, `blob${i}`), Math.floor((mib * MIB) / LAYERS));
    lines.push(`COPY blob${i} /data/blob${i}`);
  }
  lines.push('ENTRYPOINT ["/bin/sh", "-c", "ls -l /data"]');
  await writeFile(join(ctx, "Dockerfile"), lines.join("\n") + "\n");
  const progress = await docker.buildImage(Readable.from(tarCreate({ cwd: ctx, portable: true }, ["."])), {
    t: tag,
    buildargs: { BASE: base },
  });
  const out = await new Promise<{ error?: string }[]>((resolve, reject) =>
    docker.modem.followProgress(progress, (err: Error | null, res: { error?: string }[]) =>
      err ? reject(err) : resolve(res),
    ),
  );
  const failed = out.find((o) => o.error);
  if (failed) throw new Error(`docker build failed: ${failed.error}`);
  await rm(ctx, { recursive: true, force: true });
}

/** `docker save tag | gpg --symmetric | ssh user@host 'cat > path'`, three processes piped here. */
async function baseline(
  tag: string,
  passFile: string,
  gnupgHome: string,
  ssh: { host: string; port: number; user: string; key: string; knownHosts: string; path: string },
): Promise<{ seconds: number; peakRssMiB: number }> {
  const t0 = process.hrtime.bigint();
  const save = spawn("docker", ["save", tag], { stdio: ["ignore", "pipe", "pipe"] });
  const gpg = spawn(
    "gpg",
    [
      "--homedir",
      gnupgHome,
      "--batch",
      "--no-tty",
      "--pinentry-mode",
      "loopback",
      "--passphrase-file",
      passFile,
    ].concat(["--no-symkey-cache", "--symmetric", "--cipher-algo", "AES256", "--output", "-"]),
    { stdio: ["pipe", "pipe", "pipe"] },
  );
  // The remote side of ssh is always a shell command line; the path is the bench's own safe name.
  const sshProc = spawn(
    "ssh",
    ["-p", String(ssh.port), "-i", ssh.key, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"].concat([
      "-o",
      `UserKnownHostsFile=${ssh.knownHosts}`,
      `${ssh.user}@${ssh.host}`,
      `cat > '${ssh.path}'`,
    ]),
    { stdio: ["pipe", "ignore", "pipe"] },
  );
  const peaks = sampler(() => [save.pid, gpg.pid, sshProc.pid].filter((p): p is number => p !== undefined));
  const exit = (c: ReturnType<typeof spawn>, name: string): Promise<void> =>
    new Promise((resolve, reject) => {
      let err = "";
      c.stderr?.on("data", (b: Buffer) => (err = (err + b.toString()).slice(-2000)));
      c.on("error", reject);
      c.on("close", (code) =>
        code === 0 ? resolve() : reject(new Error(`${name} exited ${code}: ${err.trim()}`)),
      );
    });
  await Promise.all([
    pipeline(save.stdout, gpg.stdin),
    pipeline(gpg.stdout, sshProc.stdin),
    exit(save, "docker save"),
    exit(gpg, "gpg"),
    exit(sshProc, "ssh"),
  ]);
  const peak = await peaks.stop();
  return { seconds: Number(process.hrtime.bigint() - t0) / 1e9, peakRssMiB: peak / MIB };
}

export async function containerPrepBench(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { mib: { type: "string", default: "512" }, json: { type: "boolean", default: false } },
  });
  const mib = Number(values.mib);
  if (!Number.isInteger(mib) || mib <= 0) throw new Error("--mib wants a positive integer");

  const env = loadStackEnv();
  const alice = sshUser(env, "alice");
  const docker = new Dockerode({ socketPath: env.docker.socket });
  const id = randomBytes(4).toString("hex");
  const tag = `hpcs-bench/container-prep:${id}`;
  const remoteOurs = `bench-${id}-container.sif.gpg`;
  const remoteBase = `bench-${id}-docker-save.tar.gpg`;
  const dir = await mkdtemp(join(tmpdir(), "hpcs-bench-container-"));
  const ac = new AbortController();
  const onSignal = (): void => ac.abort(new Error("interrupted"));
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  let session: SshSession | undefined;
  let cleanupPrepared: (() => Promise<void>) | undefined;
  try {
    process.stderr.write(`container-prep: building a ${mib} MiB image (${LAYERS} random layers)...\n`);
    await buildImage(docker, env.docker.test_image, tag, dir, mib);
    const imageBytes = (await docker.getImage(tag).inspect()).Size;

    const rows: StageRow[] = [];
    const childPeaks: Promise<void>[] = [];
    let current: { stage: string; t0: bigint; kids: { stop(): Promise<number> } } | undefined;
    // Synchronous, so that the stage's time and this process's peak are read exactly at its edges.
    const startStage = (stage: string): void => {
      // "5" resets this process's VmHWM: the next reading is this stage's own peak.
      try {
        writeFileSync("/proc/self/clear_refs", "5");
      } catch {
        // Older kernels: the peak is then the run's peak so far.
      }
      current = { stage, t0: process.hrtime.bigint(), kids: sampler() };
    };
    const endStage = (): void => {
      if (!current) return;
      const c = current;
      current = undefined;
      const row: StageRow = {
        stage: c.stage,
        seconds: Number(process.hrtime.bigint() - c.t0) / 1e9,
        peakRssMiB: vmHwmSync() / MIB,
        childPeakRssMiB: 0,
      };
      rows.push(row);
      childPeaks.push(c.kids.stop().then((p) => void (row.childPeakRssMiB = p / MIB)));
    };
    const onStage = (stage: PrepareStage, event: "start" | "end"): void =>
      event === "start" ? startStage(stage) : endStage();

    process.stderr.write("container-prep: hpcs stages...\n");
    const work = join(dir, "work");
    await mkdir(work);
    const t0 = process.hrtime.bigint();
    const prepared = await prepareContainer({
      source: { tag },
      docker,
      workDir: work,
      signal: ac.signal,
      onStage,
    });
    cleanupPrepared = prepared.cleanup;

    session = await SshSession.connect({
      host: env.ssh.host,
      port: env.ssh.port,
      username: alice.name,
      privateKeyPath: alice.key,
      knownHostsPath: env.ssh.known_hosts,
    });
    startStage("encrypt+ship");
    const secret = ArtifactSecret.generate();
    const shipped = await uploadStream(
      session,
      await encryptStream(createReadStream(prepared.sifPath, { highWaterMark: MIB }), secret),
      { dir: alice.scratch, name: remoteOurs, signal: ac.signal },
    );
    endStage();
    await Promise.all(childPeaks);
    const totalOurs = Number(process.hrtime.bigint() - t0) / 1e9;

    process.stderr.write("container-prep: docker save | gpg --symmetric | ssh 'cat > f'...\n");
    const gnupg = join(dir, "gnupg");
    await mkdir(gnupg, { mode: 0o700 });
    await chmod(gnupg, 0o700);
    const passFile = join(dir, "passphrase");
    await writeFile(passFile, ArtifactSecret.generate().passphrase(), { mode: 0o600 });
    const base = await baseline(tag, passFile, gnupg, {
      host: env.ssh.host,
      port: env.ssh.port,
      user: alice.name,
      key: alice.key,
      knownHosts: env.ssh.known_hosts,
      path: `${alice.scratch}/${remoteBase}`,
    });

    const result = {
      bench: "container-prep",
      mib,
      imageBytes,
      sifBytes: prepared.sifSize,
      shippedBytes: shipped.bytes,
      stages: rows,
      totalSeconds: totalOurs,
      baseline: base,
      nproc: (await readFile("/proc/cpuinfo", "utf8")).split("\n").filter((l) => l.startsWith("processor"))
        .length,
      node: process.version,
    };
    if (values.json) {
      process.stdout.write(JSON.stringify(result) + "\n");
      return 0;
    }
    const f = (n: number, d = 1): string => n.toFixed(d);
    const out = [
      `image ${f(imageBytes / MIB)} MiB (busybox + ${LAYERS} random layers), SIF ${f(prepared.sifSize / MIB)} MiB, ` +
        `shipped ${f(shipped.bytes / MIB)} MiB; ${result.nproc} CPUs, Node ${process.version}`,
      "stage                    seconds   peak RSS MiB (this process / children)",
      ...rows.map(
        (r) =>
          `${r.stage.padEnd(22)} ${f(r.seconds, 2).padStart(9)}   ${f(r.peakRssMiB).padStart(8)} / ${f(r.childPeakRssMiB)}`,
      ),
      `${"hpcs total".padEnd(22)} ${f(totalOurs, 2).padStart(9)}`,
      `${"docker save|gpg|ssh".padEnd(22)} ${f(base.seconds, 2).padStart(9)}   ${f(base.peakRssMiB).padStart(8)} (sum of the 3 processes)`,
    ];
    process.stdout.write(out.join("\n") + "\n");
    return 0;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    if (session) {
      for (const name of [remoteOurs, remoteBase]) {
        await remove(session, `${alice.scratch}/${name}`).catch(() => undefined);
      }
      session.close();
    }
    await cleanupPrepared?.().catch(() => undefined);
    await docker
      .getImage(tag)
      .remove({ force: true })
      .catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}
