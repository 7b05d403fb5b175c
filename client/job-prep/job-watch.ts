/**
 * Watching a submitted job from the login node until it ends: its state from `squeue` (polled from
 * every 1 s, backing off to every 5 s), optionally its output streamed as it is written (`tail -F`
 * over an exec channel), and its final state and exit code from `scontrol show job` once it left the
 * queue — Slurm keeps finished jobs there for MinJobAge (300 s by default); `sacct` is only a
 * fallback, since many sites (and the test bench) run without accounting storage.
 */

import { posix } from "node:path";
import type { ClientChannel } from "ssh2";
import { readFile } from "../ssh/remote-files.js";
import type { SshSession } from "../ssh/ssh-session.js";
import { execArgv, firstLine, openExec } from "./remote-exec.js";

export interface SubmittedJob {
  jobId: string;
  cluster?: string;
}

export interface FinalState {
  /** Slurm's JobState (COMPLETED, FAILED, CANCELLED, TIMEOUT, …), or UNKNOWN when Slurm forgot it. */
  state: string;
  /** The job script's exit status; undefined when unknown. */
  exitCode?: number;
  /** The signal that ended it (ExitCode's second number), when not 0. */
  exitSignal?: number;
}

const FIRST_POLL_MS = 1000;
const MAX_POLL_MS = 5000;
/** Consecutive squeue failures (slurmctld unreachable) tolerated before giving up. */
const MAX_POLL_FAILURES = 5;
/** After the job ended, how long the output stream may lag behind the file before it is cut. */
const FOLLOW_DRAIN_MS = 10_000;

const TERMINAL = new Set([
  "COMPLETED",
  "FAILED",
  "CANCELLED",
  "TIMEOUT",
  "NODE_FAIL",
  "OUT_OF_MEMORY",
  "PREEMPTED",
  "BOOT_FAIL",
  "DEADLINE",
  "REVOKED",
  "SPECIAL_EXIT",
]);

/** Whether a queue state means the job has ended. */
export function isFinalState(state: string): boolean {
  return TERMINAL.has(state);
}

/** `sbatch --parsable` prints `<id>` or `<id>;<cluster>`. */
export function parseSbatchOutput(stdout: string): SubmittedJob {
  const line = stdout.trim().split("\n").pop()?.trim() ?? "";
  const m = /^(\d+)(?:;([A-Za-z0-9_.-]+))?$/.exec(line);
  if (!m?.[1]) throw new Error(`sbatch printed no job id (${JSON.stringify(line.slice(0, 200))})`);
  return m[2] ? { jobId: m[1], cluster: m[2] } : { jobId: m[1] };
}

/** `scontrol show job` output (one line with -o, or several) → its state and exit code. */
export function parseScontrol(text: string): FinalState | undefined {
  const state = /(?:^|\s)JobState=([A-Z_]+)/.exec(text)?.[1];
  if (!state) return undefined;
  const exit = /(?:^|\s)ExitCode=(\d+):(\d+)/.exec(text);
  const out: FinalState = { state };
  if (exit) {
    out.exitCode = Number(exit[1]);
    if (Number(exit[2]) !== 0) out.exitSignal = Number(exit[2]);
  }
  return out;
}

/** `sacct -n -X -P -o State,ExitCode` → the same; "CANCELLED by 1000" keeps its first word. */
export function parseSacct(text: string): FinalState | undefined {
  const m = /^([A-Z_]+)[^|\n]*\|(\d+):(\d+)\s*$/m.exec(text.trim());
  if (!m?.[1]) return undefined;
  const out: FinalState = { state: m[1], exitCode: Number(m[2]) };
  if (Number(m[3]) !== 0) out.exitSignal = Number(m[3]);
  return out;
}

/** The job's current state in the queue; undefined once it left it. */
export async function queueState(
  session: SshSession,
  jobId: string,
  signal?: AbortSignal,
): Promise<string | undefined> {
  const r = await execArgv(session, ["squeue", "-h", "-j", jobId, "-o", "%T"], signal ? { signal } : {});
  if (r.code === 0) return r.stdout.trim().split("\n")[0]?.trim() || undefined;
  if (/Invalid job id/i.test(r.stderr)) return undefined;
  throw new Error(`squeue failed on ${session.host}: ${firstLine(r.stderr) || `exit ${r.code ?? "?"}`}`);
}

/** After the job left the queue: scontrol, else sacct, else UNKNOWN. */
export async function finalState(
  session: SshSession,
  jobId: string,
  signal?: AbortSignal,
): Promise<FinalState> {
  const opt = signal ? { signal } : {};
  const sc = await execArgv(session, ["scontrol", "-o", "show", "job", jobId], opt);
  const fromScontrol = sc.code === 0 ? parseScontrol(sc.stdout) : undefined;
  if (fromScontrol) return fromScontrol;
  const sa = await execArgv(session, ["sacct", "-n", "-X", "-P", "-j", jobId, "-o", "State,ExitCode"], opt);
  const fromSacct = sa.code === 0 ? parseSacct(sa.stdout) : undefined;
  return fromSacct ?? { state: "UNKNOWN" };
}

export interface WatchOptions {
  /** Stream the job's output file while it runs. */
  follow?: { logFile: string; out: NodeJS.WritableStream };
  /** Called with each new queue state (PENDING, RUNNING, COMPLETING…). */
  onState?: (state: string) => void;
  signal?: AbortSignal;
  /** The wait between polls, from FIRST_POLL_MS to MAX_POLL_MS (tests shorten it). */
  pollMs?: { first: number; max: number };
}

/** Polls until the job left the queue (or reached a final state); then its final state. */
export async function watchJob(session: SshSession, jobId: string, opts: WatchOptions): Promise<FinalState> {
  const follower = opts.follow
    ? await LogFollower.start(session, opts.follow.logFile, opts.follow.out)
    : undefined;
  try {
    let delay = opts.pollMs?.first ?? FIRST_POLL_MS;
    const max = opts.pollMs?.max ?? MAX_POLL_MS;
    let last: string | undefined;
    let failures = 0;
    for (;;) {
      let state: string | undefined;
      try {
        state = await queueState(session, jobId, opts.signal);
        failures = 0;
      } catch (err) {
        opts.signal?.throwIfAborted();
        if (++failures >= MAX_POLL_FAILURES) throw err;
        state = last;
      }
      if (state === undefined || TERMINAL.has(state)) break;
      if (state !== last) opts.onState?.(state);
      last = state;
      await sleep(delay, opts.signal);
      delay = Math.min(Math.round(delay * 1.5), max);
    }
    const final = await finalState(session, jobId, opts.signal);
    if (follower) await follower.drain(opts.signal);
    return final;
  } finally {
    follower?.stop();
  }
}

/**
 * `tail -n +1 -F <file>` on the login node, stopped by closing its stdin (the remote `cat` ends and
 * kills the tail), so no remote process outlives the watch. Counting the bytes received lets drain()
 * wait until everything the job wrote has arrived.
 */
class LogFollower {
  private received = 0;
  private closed = false;

  private constructor(
    private readonly session: SshSession,
    private readonly channel: ClientChannel,
    private readonly logFile: string,
  ) {}

  static async start(session: SshSession, logFile: string, out: NodeJS.WritableStream): Promise<LogFollower> {
    const script = 'tail -n +1 -F -- "$1" 2>/dev/null & p=$!; cat >/dev/null; kill "$p" 2>/dev/null';
    const channel = await openExec(session, ["sh", "-c", script, "sh", logFile]);
    const f = new LogFollower(session, channel, logFile);
    channel.on("data", (b: Buffer) => {
      f.received += b.length;
      out.write(b);
    });
    channel.stderr.resume();
    channel.on("close", () => (f.closed = true));
    return f;
  }

  /** Waits (bounded) until the stream caught up with the file's size. */
  async drain(signal?: AbortSignal): Promise<void> {
    const deadline = Date.now() + FOLLOW_DRAIN_MS;
    const size = await remoteSize(this.session, this.logFile);
    while (!this.closed && this.received < size && Date.now() < deadline) await sleep(100, signal);
  }

  stop(): void {
    if (this.closed) return;
    this.channel.end();
    // A server that never answers must not keep the client alive.
    setTimeout(() => this.channel.close(), 2000).unref();
  }
}

function remoteSize(session: SshSession, path: string): Promise<number> {
  return session
    .sftp()
    .then(
      (sftp) =>
        new Promise<number>((resolve) =>
          sftp.stat(path, (err, st) => {
            sftp.end();
            resolve(err ? 0 : st.size);
          }),
        ),
    )
    .catch(() => 0);
}

/**
 * The last `hpcs-job: failed: …` line of the job's output (the job runtime's own reason), read from
 * at most the file's last 64 KiB; undefined when there is none or the file cannot be read.
 */
export async function lastFailureLine(session: SshSession, logFile: string): Promise<string | undefined> {
  const text = await readTail(session, logFile, 64 * 1024).catch(() => "");
  const lines = text.split("\n").filter((l) => l.startsWith("hpcs-job: failed:"));
  return lines.pop()?.trim();
}

async function readTail(session: SshSession, path: string, bytes: number): Promise<string> {
  const size = await remoteSize(session, path);
  if (size <= bytes) return (await readFile(session, path, bytes + 4096)).toString("utf8");
  const sftp = await session.sftp();
  try {
    const handle = await new Promise<Buffer>((resolve, reject) =>
      sftp.open(path, "r", (err, h) => (err ? reject(err) : resolve(h))),
    );
    const buf = Buffer.alloc(bytes);
    const n = await new Promise<number>((resolve, reject) =>
      sftp.read(handle, buf, 0, bytes, size - bytes, (err, got) => (err ? reject(err) : resolve(got))),
    );
    sftp.close(handle, () => undefined);
    return buf.subarray(0, n).toString("utf8");
  } finally {
    sftp.end();
  }
}

/** The job's output file name in its job directory. */
export function logFilePath(jobDir: string): string {
  return posix.join(jobDir, "job.out");
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new Error("interrupted"));
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(t);
      reject(new Error("interrupted"));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
