/**
 * The upload's default transport: the bytes go into `cat` on an exec channel instead of SFTP WRITEs.
 * It is cheaper at both ends: no per-request framing, copy and status on our side, and `cat` instead
 * of sftp-server on theirs. On the 2-CPU bench, where client, sshd and disk share the cores, that is
 * ~1 CPU-s less per GiB shipped (bench/README.md "data-prep").
 *
 * The remote command is a constant. The path travels as the first line of stdin, where `read -r`
 * puts it into a variable that is only ever expanded inside double quotes, so no shell parses it:
 * the same guarantee SFTP gives. (remote-name.ts also whitelists the path, and it never holds a
 * newline.) `sh -c '…'` reads the same to bash, zsh, dash, ksh, tcsh and fish login shells. The
 * remote opens the file before it prints the ready marker, and no data is sent before the marker.
 * Where no command can run (ForceCommand internal-sftp, a restricted shell, no `sh`), the marker
 * never comes, and the caller falls back to SFTP.
 */

import { createHash } from "node:crypto";
import type { Readable } from "node:stream";
import type { Client, ClientChannel } from "ssh2";
import { sourceChunks, type Written } from "./written.js";

const READY = "hpcs-cat-ready";

/** Opens `$p` (umask 077: a file it has to create is the user's alone), says so, then copies stdin into it. */
export const CAT_COMMAND = `sh -c 'umask 077 && IFS= read -r p && exec 3>"$p" && echo ${READY} && exec cat >&3'`;

/** The remote `cat` (or the shell before it) exited non-zero or was killed; `detail` is its stderr's first line. */
export class CatFailed extends Error {
  constructor(
    readonly code: number | null,
    readonly signal: string | undefined,
    readonly detail: string,
  ) {
    super(detail || (signal ? `remote cat killed by ${signal}` : `remote cat exited with status ${code}`));
  }
}

/** The channel (or the whole connection) closed before the remote said how it ended. */
export class ChannelLost extends Error {
  constructor() {
    super("the SSH channel closed before the remote command reported its exit status");
  }
}

/**
 * Starts the remote `cat` writing to `path` and waits (at most `readyTimeoutMs`) until it has the
 * file open. Undefined when no command can run there; the channel is closed then.
 */
export async function openCat(
  client: Client,
  path: string,
  command: string = CAT_COMMAND,
  readyTimeoutMs = 20_000,
): Promise<CatChannel | undefined> {
  if (/[\n\r]/.test(path)) throw new Error(`remote path ${JSON.stringify(path)} contains a line break`);
  const channel = await withTimeout(
    new Promise<ClientChannel | undefined>((resolve) => {
      try {
        client.exec(command, (err, ch) => resolve(err ? undefined : ch));
      } catch {
        resolve(undefined); // ssh2 throws synchronously when the connection is already gone
      }
    }),
    readyTimeoutMs,
  );
  if (!channel) return undefined;
  const cat = new CatChannel(client, channel);
  channel.write(`${path}\n`);
  if (await cat.ready(readyTimeoutMs)) return cat;
  await cat.abort();
  return undefined;
}

export class CatChannel {
  private stdout = "";
  private stderr = "";
  private exit: { code: number | null; signal?: string } | undefined;
  private closed = false;
  private readonly waiters = new Set<() => void>();
  private readonly onClientClose = (): void => this.markClosed();

  constructor(
    private readonly client: Client,
    private readonly channel: ClientChannel,
  ) {
    // Both streams must be read, or ssh2 stops granting window and never emits "close".
    channel.on("data", (d: Buffer) => {
      if (this.stdout.length < 4096) this.stdout += d.toString("utf8");
      this.notify();
    });
    channel.stderr.on("data", (d: Buffer) => {
      if (this.stderr.length < 4096) this.stderr += d.toString("utf8");
    });
    channel.on("exit", (code: number | null, signal?: string) => {
      this.exit = { code, signal: signal ?? undefined };
      this.notify();
    });
    channel.on("close", () => this.markClosed());
    channel.on("error", () => this.markClosed());
    client.on("close", this.onClientClose);
  }

  /**
   * Sends `source` and ends the remote file; resolves once `cat` has exited 0. A source failure is
   * thrown as SourceError; the remote's as CatFailed or ChannelLost.
   */
  async write(source: Readable): Promise<Written> {
    const hash = createHash("sha256");
    let bytes = 0;
    try {
      for await (const chunk of sourceChunks(source)) {
        if (this.exit || this.closed) throw this.failure();
        hash.update(chunk);
        bytes += chunk.length;
        if (!this.channel.write(chunk))
          await this.until(() => this.exit !== undefined || this.closed, "drain");
      }
      this.channel.end(); // EOF once ssh2 has sent everything: cat flushes, closes the file and exits
      await this.until(() => this.closed);
      if (this.exit?.code !== 0) throw this.failure();
      return { bytes, sha256: hash.digest("hex") };
    } finally {
      this.client.off("close", this.onClientClose);
    }
  }

  /** Closes the channel (sshd then ends `cat`) and waits, bounded, until it is closed. */
  async abort(): Promise<void> {
    this.channel.close();
    await withTimeout(
      this.until(() => this.closed),
      10_000,
    );
    this.client.off("close", this.onClientClose);
  }

  ready(timeoutMs: number): Promise<boolean> {
    const isReady = (): boolean => this.stdout.split("\n").slice(0, -1).includes(READY);
    return withTimeout(
      this.until(() => isReady() || this.exit !== undefined || this.closed).then(isReady),
      timeoutMs,
    ).then((r) => r === true);
  }

  private failure(): Error {
    if (!this.exit) return new ChannelLost();
    const line = this.stderr.split("\n").find((l) => l.trim() !== "") ?? "";
    return new CatFailed(this.exit.code, this.exit.signal, line.trim());
  }

  private markClosed(): void {
    this.closed = true;
    this.notify();
  }

  private notify(): void {
    const waiting = [...this.waiters];
    this.waiters.clear();
    for (const wake of waiting) wake();
  }

  /** Resolves when `done()` holds, re-checking whenever the channel reports something (or `event` fires). */
  private async until(done: () => boolean, event?: "drain"): Promise<void> {
    let fired = false;
    const onEvent = (): void => {
      fired = true;
      this.notify();
    };
    if (event) this.channel.once(event, onEvent);
    try {
      while (!fired && !done()) await new Promise<void>((r) => this.waiters.add(r));
    } finally {
      if (event) this.channel.off(event, onEvent);
    }
  }
}

/** `p`'s value, or undefined once `ms` have passed. */
function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
