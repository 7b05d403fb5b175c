/**
 * Commands on the login node over the SSH session's exec channel. SSH hands the command line to the
 * user's login shell, so an argv is turned into one line of single-quoted words (shell-quote.ts, the
 * same quoting as the job script's): every value reaches the program as exactly one argument,
 * whatever characters it holds.
 */

import type { ClientChannel } from "ssh2";
import type { SshSession } from "../ssh/ssh-session.js";
import { shellQuote } from "./shell-quote.js";

export interface ExecResult {
  code: number | null;
  signal: string | undefined;
  stdout: string;
  stderr: string;
}

/** Output kept per stream; commands run here print a few lines (sbatch, squeue, sha256sum). */
const MAX_CAPTURE = 1024 * 1024;

/** The command line that makes the remote shell run exactly `argv`. */
export function commandLine(argv: readonly string[]): string {
  if (argv.length === 0) throw new Error("empty remote command");
  if (argv.some((w) => w.includes("\0"))) throw new Error("a NUL byte cannot be passed to a remote command");
  return argv.map(shellQuote).join(" ");
}

/** Opens an exec channel for `argv`; the caller reads and closes it. */
export function openExec(session: SshSession, argv: readonly string[]): Promise<ClientChannel> {
  const line = commandLine(argv);
  return new Promise((resolve, reject) => {
    session.client.exec(line, (err, channel) => {
      if (err) reject(new Error(`cannot run ${argv[0]} on ${session.host}: ${err.message}`));
      else resolve(channel);
    });
  });
}

/**
 * Runs `argv` to completion and collects its output; never rejects on a non-zero exit (callers decide
 * what a status means). `signal` closes the channel and rejects.
 */
export async function execArgv(
  session: SshSession,
  argv: readonly string[],
  opts: { signal?: AbortSignal; stdin?: string } = {},
): Promise<ExecResult> {
  opts.signal?.throwIfAborted();
  const channel = await openExec(session, argv);
  return new Promise((resolve, reject) => {
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outLen = 0;
    let errLen = 0;
    const onAbort = (): void => {
      channel.close();
      reject(new Error(`${argv[0]} on ${session.host} aborted`));
    };
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    channel.on("data", (b: Buffer) => {
      if (outLen < MAX_CAPTURE) out.push(b);
      outLen += b.length;
    });
    channel.stderr.on("data", (b: Buffer) => {
      if (errLen < MAX_CAPTURE) err.push(b);
      errLen += b.length;
    });
    channel.on("close", (code: number | null, signal?: string) => {
      opts.signal?.removeEventListener("abort", onAbort);
      resolve({
        code: code ?? null,
        signal,
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: Buffer.concat(err).toString("utf8"),
      });
    });
    channel.end(opts.stdin ?? "");
  });
}

/** Like execArgv, but a non-zero exit is an error naming the command and its first stderr line. */
export async function execOk(
  session: SshSession,
  argv: readonly string[],
  opts: { signal?: AbortSignal } = {},
): Promise<string> {
  const r = await execArgv(session, argv, opts);
  if (r.code !== 0) {
    const why = firstLine(r.stderr) || `exit ${r.code ?? r.signal ?? "?"}`;
    throw new Error(`${argv[0]} failed on ${session.host}: ${why}`);
  }
  return r.stdout;
}

export function firstLine(s: string): string {
  return s.trim().split("\n", 1)[0]?.trim() ?? "";
}
