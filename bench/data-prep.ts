/**
 * `npm run bench -- data-prep`: a directory → encrypted artifact uploaded to the bench's sshd as
 * alice, three ways, each in its own process(es) so peak RSS is the method's own:
 *   - ours: openArtifactStream (tar + encryption in a worker thread) → uploadStream (cat on an exec channel, or SFTP);
 *   - (a) `tar -c | gpg --symmetric --cipher-algo AES256 | ssh alice@… 'cat > …'`, three processes
 *     piped together (no shell on this side);
 *   - (b) the original's way: the whole tar read into memory, encrypted in one openpgp.js call
 *     (non-streaming), written to a local file, then uploaded;
 * then ours again on a bigger dataset, to show its memory does not grow with the data.
 *
 * Every remote file (and `.part`) and local temp file it creates is removed on every exit path,
 * Ctrl-C included.
 */

import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { ARTIFACT_CHUNK_BYTES } from "../client/artifact/artifact-stream.js";
import { ArtifactSecret } from "../client/artifact/secret.js";
import { remove } from "../client/ssh/remote-files.js";
import { SshSession } from "../client/ssh/ssh-session.js";
import type { UploadOptions } from "../client/ssh/upload.js";
import { loadStackEnv, sshUser, type StackEnv } from "../test/support/stack-env.js";
import type { ChildReport } from "./data-prep-child.js";
import { ensureDataset, type Dataset } from "./dataset.js";

export const DATA_PREP_USAGE =
  "data-prep [--gib N] [--big-gib M] [--repeat R] [--skip-original] [--transport auto|sftp] [--sftp-chunk-kib K] [--in-flight N] [--json]   dir → encrypt → upload: ours vs tar|gpg|ssh vs in-memory";

const MIB = 1024 * 1024;
/** SFTP WRITEs outstanding for ours and (b): 8 × 255 KiB ≈ 2 MiB in flight. */
const DEFAULT_IN_FLIGHT = 8;
/** The acceptance bound on ours' peak RSS (decimal MB, the stricter reading of "200 MB"). */
const RSS_LIMIT_BYTES = 200e6;

interface Row {
  method: string;
  gib: number;
  seconds: number;
  /** Plaintext (dataset) bytes per second, in MB/s. */
  mbPerSec: number;
  peakRssMiB: number;
  /** How peak RSS was measured. */
  rssNote: string;
  ciphertextBytes: number;
  /** Seconds of every run, when the row is the median of several. */
  runs?: number[];
}

type Alice = ReturnType<typeof sshUser>;

export async function dataPrepBench(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      gib: { type: "string", default: "1" },
      "big-gib": { type: "string", default: "4" },
      repeat: { type: "string", default: "3" },
      "skip-original": { type: "boolean", default: false },
      transport: { type: "string", default: "auto" },
      "sftp-chunk-kib": { type: "string" },
      "in-flight": { type: "string" },
      json: { type: "boolean", default: false },
    },
  });
  const transport = values.transport;
  if (transport !== "auto" && transport !== "sftp") throw new Error("--transport wants auto or sftp");
  // Ours uploads as data-prep does: cat on an exec channel ("auto"), or whole artifact chunks per
  // SFTP WRITE (see ARTIFACT_CHUNK_BYTES) where it falls back, or with --transport sftp.
  const upload: Pick<UploadOptions, "chunkSize" | "maxInFlight" | "transport"> = {
    transport,
    chunkSize:
      values["sftp-chunk-kib"] === undefined
        ? ARTIFACT_CHUNK_BYTES
        : positive(values["sftp-chunk-kib"]) * 1024,
    maxInFlight: values["in-flight"] === undefined ? DEFAULT_IN_FLIGHT : positive(values["in-flight"]),
  };

  const gib = positive(values.gib);
  const repeat = positive(values.repeat);
  const bigGib = Number(values["big-gib"]);
  if (!Number.isInteger(bigGib) || bigGib < 0) throw new Error("--big-gib wants an integer ≥ 0 (0: skip)");
  const log = (line: string): void => void process.stderr.write(`data-prep: ${line}\n`);

  const env = loadStackEnv();
  const alice = sshUser(env, "alice");
  const session = await connect(env, alice);
  const tag = randomBytes(4).toString("hex");
  const local = await mkdtemp(join(tmpdir(), "hpcs-bench-data-prep-"));
  const remoteNames: string[] = [];
  const children = new Set<ChildProcess>();
  // Ctrl-C (or a TERM) stops whatever runs; the finally below then removes everything.
  const interrupted = new AbortController();
  const onSignal = (sig: NodeJS.Signals): void => {
    log(`${sig}: stopping and cleaning up...`);
    interrupted.abort(new Error(`interrupted by ${sig}`));
    killAll(children);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  const rows: Row[] = [];
  const datasets: Dataset[] = [];
  try {
    const run = { env, alice, session, local, children, signal: interrupted.signal, upload };
    // Each run's upload is removed right after it (the next run must not compete with its
    // writeback), and remembered until then so that an interruption removes it too.
    let runs = 0;
    const once = async (method: Method, dataset: Dataset, size: number): Promise<Row> => {
      const name = `bench-${tag}-${++runs}`;
      remoteNames.push(name);
      const r = await METHODS[method](dataset, size, name, run);
      await removeRemote(env, alice, session, [name], log);
      return r;
    };
    const small = await ensureDataset(gib, log);
    datasets.push(small);
    await warmCache(small, run);
    // Ours and (a) alternate, `repeat` times each: the bench's load drifts (other work on two
    // cores), and alternation exposes both to the same drift. Which one goes first alternates too,
    // so neither always inherits the other's writeback. Each row shows the median run.
    const pairs: Record<"ours" | "gpg", Row[]> = { ours: [], gpg: [] };
    for (let i = 1; i <= repeat; i++) {
      for (const method of i % 2 === 1 ? (["ours", "gpg"] as const) : (["gpg", "ours"] as const)) {
        log(`${method === "ours" ? "ours" : "(a) tar | gpg | ssh"} on ${gib} GiB (run ${i}/${repeat})...`);
        pairs[method].push(await once(method, small, gib));
      }
    }
    rows.push(median(pairs.ours), median(pairs.gpg));
    if (!values["skip-original"]) {
      log(`(b) in memory (the original's way) on ${gib} GiB...`);
      rows.push(await once("original", small, gib));
    }
    if (bigGib > 0) {
      const big = await ensureDataset(bigGib, log);
      datasets.push(big);
      await warmCache(big, run);
      log(`ours on ${bigGib} GiB...`);
      rows.push(await once("ours", big, bigGib));
    }
  } finally {
    killAll(children);
    await removeRemote(env, alice, session, remoteNames, log);
    session.close();
    await rm(local, { recursive: true, force: true });
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }

  const verdict = acceptance(rows, gib, bigGib);
  if (values.json) {
    process.stdout.write(
      JSON.stringify({
        bench: "data-prep",
        cpus: cpus().length,
        node: process.version,
        datasets,
        rows,
        ...verdict,
      }) + "\n",
    );
  } else {
    process.stdout.write(table(rows, datasets, verdict) + "\n");
  }
  return 0;
}

type Method = "ours" | "gpg" | "original";
const METHODS: Record<Method, (d: Dataset, gib: number, name: string, run: RunContext) => Promise<Row>> = {
  ours: runOurs,
  gpg: runGpgPipeline,
  original: runOriginal,
};

/** The run with the median time, with every run's seconds and the largest peak RSS of all. */
function median(runs: Row[]): Row {
  const sorted = [...runs].sort((a, b) => a.seconds - b.seconds);
  const mid = sorted[Math.floor((sorted.length - 1) / 2)] as Row;
  return {
    ...mid,
    runs: runs.map((r) => r.seconds),
    peakRssMiB: Math.max(...runs.map((r) => r.peakRssMiB)),
  };
}

interface RunContext {
  env: StackEnv;
  alice: Alice;
  /** The parent's own connection: checks and cleanup. */
  session: SshSession;
  local: string;
  children: Set<ChildProcess>;
  signal: AbortSignal;
  upload: Pick<UploadOptions, "chunkSize" | "maxInFlight" | "transport">;
}

/**
 * Reads every file once so that every method starts from the same, warm page cache. (Not `tar -cf
 * /dev/null`: GNU tar notices /dev/null and skips reading the contents.)
 */
async function warmCache(dataset: Dataset, run: RunContext): Promise<void> {
  const sink = (): Writable => new Writable({ write: (_c, _e, cb) => cb() });
  for (const e of await readdir(dataset.dir, { withFileTypes: true, recursive: true })) {
    run.signal.throwIfAborted();
    if (e.isFile()) await pipeline(createReadStream(join(e.parentPath, e.name)), sink());
  }
}

async function runOurs(dataset: Dataset, gib: number, name: string, run: RunContext): Promise<Row> {
  const report = await runNodeChild("ours", dataset, name, run);
  const via = run.upload.transport === "sftp" ? "SFTP" : "ssh cat";
  return row(
    `ours: GNU tar → worker (encrypt) → ${via}`,
    gib,
    dataset,
    report,
    "process peak (VmHWM) + tar's",
  );
}

async function runOriginal(dataset: Dataset, gib: number, name: string, run: RunContext): Promise<Row> {
  const report = await runNodeChild("original", dataset, name, run);
  return row("(b) tar → Buffer → openpgp → file → upload", gib, dataset, report, "process peak (VmHWM)");
}

/**
 * One method in a fresh Node process running data-prep-child.js directly (not run.js, which loads
 * every benchmark's modules), so its peak RSS is its own.
 */
async function runNodeChild(method: string, dataset: Dataset, name: string, run: RunContext) {
  const entry = fileURLToPath(new URL("./data-prep-child.js", import.meta.url));
  const { chunkSize, maxInFlight, transport } = run.upload;
  const args = [
    entry,
    method,
    dataset.dir,
    name,
    String(chunkSize),
    String(maxInFlight),
    transport ?? "auto",
  ];
  const [out] = await spawnAll([{ file: process.execPath, args }], run);
  const last = (out ?? "").trim().split("\n").pop() ?? "";
  return JSON.parse(last) as ChildReport;
}

/**
 * (a): ssh, gpg and tar spawned in that order, each one's stdout the next one's stdin (the parent
 * passes the write end and never reads, so no byte goes astray), under /usr/bin/time for each
 * process's peak RSS. Reported RSS: the sum of the three peaks (an upper bound of their simultaneous
 * total; sshd's side is counted for no method).
 */
async function runGpgPipeline(dataset: Dataset, gib: number, name: string, run: RunContext): Promise<Row> {
  const home = await mkdtemp(join(run.local, "gnupg-"));
  const passFile = join(home, "passphrase");
  await writeFile(passFile, ArtifactSecret.generate().passphrase(), { mode: 0o600 });
  const rss = ["ssh", "gpg", "tar"].map((p) => join(run.local, `${name}.${p}.rss`));
  const remote = `${run.alice.scratch}/${name}`;
  // ssh runs the remote command through the remote user's shell (OpenSSH has no argv form); the path
  // is built from the bench's own scratch dir and a hex name, checked to need no quoting.
  if (!/^[\w./-]+$/.test(remote)) throw new Error(`unexpected characters in remote path ${remote}`);
  const { env, alice } = run;
  const ssh = [
    "-p",
    String(env.ssh.port),
    "-i",
    alice.key,
    "-o",
    "BatchMode=yes",
    "-o",
    "IdentitiesOnly=yes",
  ];
  ssh.push("-o", "StrictHostKeyChecking=yes", "-o", `UserKnownHostsFile=${env.ssh.known_hosts}`);
  ssh.push(`${alice.name}@${env.ssh.host}`, `cat > ${remote}`);
  const gpg = ["--homedir", home, "--batch", "--no-tty", "--pinentry-mode", "loopback"];
  gpg.push("--passphrase-file", passFile, "--no-symkey-cache", "--symmetric", "--cipher-algo", "AES256");
  // Like for like: ours does not compress (and the data is incompressible: gpg's default zlib would
  // only burn CPU).
  gpg.push("--compress-algo", "none", "--output", "-");
  const timed = (file: string, args: string[], rssFile: string) => ({
    file: "/usr/bin/time",
    args: ["-f", "%M", "-o", rssFile, file, ...args],
  });
  const t0 = process.hrtime.bigint();
  try {
    await spawnAll(
      [
        timed("ssh", ssh, rss[0] as string),
        timed("gpg", gpg, rss[1] as string),
        timed("tar", ["-C", dataset.dir, "-c", "."], rss[2] as string),
      ],
      run,
    );
  } finally {
    await new Promise<void>((resolve) => {
      const k = spawn("gpgconf", ["--homedir", home, "--kill", "gpg-agent"], { stdio: "ignore" });
      k.on("close", () => resolve());
      k.on("error", () => resolve());
    });
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  let rssKiB = 0;
  for (const f of rss) rssKiB += Number((await readFile(f, "utf8")).trim().split("\n").pop());
  const ciphertextBytes = await remoteSize(run, remote);
  return {
    method: "(a) tar | gpg --symmetric | ssh 'cat >'",
    gib,
    seconds,
    mbPerSec: dataset.bytes / 1e6 / seconds,
    peakRssMiB: rssKiB / 1024,
    rssNote: "sum of the 3 processes' peaks (/usr/bin/time %M)",
    ciphertextBytes,
  };
}

/**
 * Spawns `steps` as a pipeline, the last one first: each later step's stdout is the earlier one's
 * stdin. Resolves with each step's stdout (only the first step's is captured) once all exited 0;
 * rejects with the first failure's stderr, one line.
 */
async function spawnAll(steps: { file: string; args: string[] }[], run: RunContext): Promise<string[]> {
  run.signal.throwIfAborted();
  const outputs: string[] = [];
  const exits: Promise<void>[] = [];
  let downstream: ChildProcess | undefined;
  for (const [i, step] of steps.entries()) {
    const stdin = i === steps.length - 1 ? "ignore" : "pipe";
    const stdout = downstream?.stdin ?? "pipe";
    // Own process group: a TERM to /usr/bin/time alone would leave its child running (it does not
    // forward signals), so an interruption kills the whole group (see killAll).
    const child = spawn(step.file, step.args, { stdio: [stdin, stdout, "pipe"], detached: true });
    run.children.add(child);
    // The child holds its own copy of the pipe now; ours must close, or the reader never sees EOF.
    downstream?.stdin?.destroy();
    let stderr = "";
    child.stderr?.on("data", (c: Buffer) => (stderr += c.toString()));
    let out = "";
    child.stdout?.on("data", (c: Buffer) => (out += c.toString()));
    exits.push(
      new Promise<void>((resolve, reject) => {
        child.on("error", (err) => reject(new Error(`${step.args[4] ?? step.file}: ${err.message}`)));
        child.on("close", (code, signal) => {
          run.children.delete(child);
          outputs[i] = out;
          if (code === 0) resolve();
          else {
            const what = step.file === "/usr/bin/time" ? (step.args[4] ?? step.file) : step.file;
            const why = stderr.trim().split("\n").filter(Boolean).pop() ?? "";
            reject(new Error(`${what} exited ${code ?? signal}${why ? `: ${why}` : ""}`));
          }
        });
      }),
    );
    downstream = child;
  }
  const results = await Promise.allSettled(exits);
  const failed = results.find((r) => r.status === "rejected");
  run.signal.throwIfAborted();
  if (failed) throw failed.reason;
  return outputs;
}

/**
 * Removes each name and its `.part` from alice's scratch dir. Over a fresh connection if the long-lived
 * one was dropped meanwhile (sshd restarted, idle timeout), so nothing is left behind either way.
 */
async function removeRemote(
  env: StackEnv,
  alice: Alice,
  session: SshSession,
  names: string[],
  log: (line: string) => void,
): Promise<void> {
  const paths = names.flatMap((n) => [`${alice.scratch}/${n}`, `${alice.scratch}/${n}.part`]);
  let s = session;
  for (const path of paths) {
    try {
      await remove(s, path);
    } catch {
      try {
        if (s === session) s = await connect(env, alice);
        await remove(s, path);
      } catch (err) {
        log(`could not remove ${path}: ${(err as Error).message}`);
      }
    }
  }
  if (s !== session) s.close();
}

/** TERM to each child's process group (they are spawned detached, as group leaders). */
function killAll(children: Set<ChildProcess>): void {
  for (const c of children) {
    if (c.pid === undefined) continue;
    try {
      process.kill(-c.pid, "SIGTERM");
    } catch {
      // already gone
    }
  }
}

async function remoteSize(run: RunContext, path: string): Promise<number> {
  const sftp = await run.session.sftp();
  try {
    return await new Promise<number>((resolve, reject) =>
      sftp.stat(path, (err, st) => (err ? reject(err) : resolve(st.size))),
    );
  } finally {
    sftp.end();
  }
}

function row(method: string, gib: number, dataset: Dataset, r: ChildReport, rssNote: string): Row {
  return {
    method,
    gib,
    seconds: r.seconds,
    mbPerSec: dataset.bytes / 1e6 / r.seconds,
    // A child (GNU tar) runs alongside the process all along: its peak counts on top, as (a)'s three.
    peakRssMiB: (r.maxRssBytes + r.childMaxRssBytes) / MIB,
    rssNote,
    ciphertextBytes: r.ciphertextBytes,
  };
}

interface Verdict {
  throughputRatio: number | undefined;
  throughputOk: boolean;
  /**
   * In how many of the back-to-back pairs of runs ours was the faster: the ratio of medians moves
   * with the bench's load, a pair's two runs share most of it.
   */
  pairsWon?: { won: number; of: number };
  /** Median over the pairs of (a)'s seconds / ours': the throughput ratio within each pair. */
  pairRatioMedian?: number;
  rssOk: boolean;
  accepted: boolean;
}

/** The issue's target: ours ≥ 1.0× (a)'s throughput, and ours' peak RSS ≤ 200 MB at every size. */
function acceptance(rows: Row[], gib: number, bigGib: number): Verdict {
  const ours = rows.filter((r) => r.method.startsWith("ours"));
  const oursSmall = ours.find((r) => r.gib === gib);
  const a = rows.find((r) => r.method.startsWith("(a)") && r.gib === gib);
  const throughputRatio = oursSmall && a ? oursSmall.mbPerSec / a.mbPerSec : undefined;
  const throughputOk = throughputRatio !== undefined && throughputRatio >= 1.0;
  const rssOk =
    ours.length === (bigGib > 0 ? 2 : 1) && ours.every((r) => r.peakRssMiB * MIB <= RSS_LIMIT_BYTES);
  const pairs = (oursSmall?.runs ?? []).map((t, i) => [t, a?.runs?.[i]] as const);
  const pairsWon =
    a?.runs && pairs.length > 0
      ? { won: pairs.filter(([o, g]) => g !== undefined && o < g).length, of: pairs.length }
      : undefined;
  const ratios = pairs.flatMap(([o, g]) => (g === undefined ? [] : [g / o])).sort((x, y) => x - y);
  const mid = Math.floor(ratios.length / 2);
  const pairRatioMedian =
    ratios.length === 0
      ? undefined
      : ratios.length % 2
        ? ratios[mid]
        : ((ratios[mid - 1] as number) + (ratios[mid] as number)) / 2;
  return { throughputRatio, throughputOk, pairsWon, pairRatioMedian, rssOk, accepted: throughputOk && rssOk };
}

function table(rows: Row[], datasets: Dataset[], v: Verdict): string {
  const f = (n: number, d = 1): string => n.toFixed(d);
  const w = Math.max(...rows.map((r) => r.method.length));
  const lines = [
    ...datasets.map(
      (d) =>
        `dataset ${f(d.bytes / 1024 / MIB, 2)} GiB: ${d.files} files (${d.small} small ≤ 64 KiB, ${d.medium} medium 1–32 MiB, ${d.large} large 128–384 MiB) in ${d.dir}`,
    ),
    `machine: ${cpus().length} CPUs (${cpus()[0]?.model ?? "?"}), Node ${process.version}; MB/s = dataset bytes / wall seconds`,
    "",
    `${"method".padEnd(w)}  size     seconds     MB/s   peak RSS (MiB)`,
    ...rows.map(
      (r) =>
        `${r.method.padEnd(w)}  ${`${r.gib} GiB`.padEnd(6)} ${f(r.seconds, 2).padStart(9)} ${f(r.mbPerSec).padStart(8)} ${f(r.peakRssMiB).padStart(16)}   ${r.rssNote}${r.runs ? `; median of ${r.runs.map((x) => f(x, 2)).join(", ")} s` : ""}`,
    ),
    "",
    ...(v.pairsWon
      ? [
          `pairs: ours faster in ${v.pairsWon.won} of ${v.pairsWon.of} back-to-back pairs` +
            (v.pairRatioMedian === undefined
              ? ""
              : `; median of the pairs' ratios ${f(v.pairRatioMedian, 2)}×`),
        ]
      : []),
    `acceptance: ours / (a) throughput = ${v.throughputRatio === undefined ? "n/a" : `${f(v.throughputRatio, 2)}×`} (target ≥ 1.00×: ${v.throughputOk ? "ok" : "FAIL"}); ` +
      `ours peak RSS ≤ 200 MB (${f(RSS_LIMIT_BYTES / MIB)} MiB) at every size: ${v.rssOk ? "ok" : "FAIL"} → ${v.accepted ? "ACCEPTED" : "NOT ACCEPTED"}`,
  ];
  return lines.join("\n");
}

function connect(env: StackEnv, alice: Alice): Promise<SshSession> {
  return SshSession.connect({
    host: env.ssh.host,
    port: env.ssh.port,
    username: alice.name,
    privateKeyPath: alice.key,
    knownHostsPath: env.ssh.known_hosts,
  });
}

function positive(s: string): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n <= 0)
    throw new Error(`expected a positive integer, got ${JSON.stringify(s)}`);
  return n;
}
