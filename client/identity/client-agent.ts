/**
 * The client's own spire-agent (DESIGN flow 2): `spire-agent run` as a child process, attested with
 * the join token the hpcs server handed out at registration, serving the Workload API on a socket in a
 * fresh private directory. It lives exactly as long as one client run:
 *
 * - start() writes the config (join_token attestor, memory keys, unix workload attestor) into a new
 *   0700 directory, starts the agent and waits until it is healthy, polling with exponential backoff
 *   and a total bound; if the agent exits or the server refuses its token first, start() fails at once
 *   with the agent's last log lines (join token cut out).
 * - stop() ends it (SIGTERM, then SIGKILL after a bound) and deletes the directory; idempotent.
 * - Until stop(), a synchronous handler on process "exit" kills the agent and deletes the directory,
 *   so an uncaught exception or process.exit() never leaves an agent running. (SIGINT/SIGTERM end a
 *   Node process without "exit" unless someone handles them: the CLI turns them into an abort, which
 *   leads to stop().)
 *
 * Values reach the agent's HCL config only after validation: anything with a quote, backslash,
 * control character or template sequence is refused rather than escaped. The join token is written
 * to the 0600 config file, never to argv (where `ps` would show it).
 */

import { type ChildProcess, execFile, spawn } from "node:child_process";
import { accessSync, constants, rmSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { isIP } from "node:net";
import { tmpdir } from "node:os";
import { isAbsolute, join } from "node:path";
import { SpiffeId } from "../../lib/spiffe-id.js";

export interface ClientAgentOptions {
  /** SPIRE server host (`[spire-server] address`). */
  serverAddress: string;
  serverPort: number;
  trustDomain: string;
  /** PEM trust bundle of the SPIRE server (`[spire-server] trust-bundle`), absolute path. */
  trustBundlePath: string;
  /** The single-use join token from registration. */
  joinToken: string;
  /** The spire-agent program (`[spire-server] agent-bin`); default "spire-agent" on PATH. */
  agentBin?: string;
  /** Bound on the wait for a healthy agent; default 30 s. */
  healthTimeoutMs?: number;
  /** How long stop() waits after SIGTERM before SIGKILL; default 5 s. */
  stopTimeoutMs?: number;
  /** Where the agent's private directory is created; default the OS temp dir. */
  tmpRoot?: string;
  /** Aborts start(): the agent is stopped and start() rejects. */
  signal?: AbortSignal;
}

/** One line naming what failed and the fix; never contains the join token. */
export class ClientAgentError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ClientAgentError";
  }
}

export const DEFAULT_HEALTH_TIMEOUT_MS = 30_000;
const DEFAULT_STOP_TIMEOUT_MS = 5_000;
const STDERR_KEEP = 16 * 1024;
// sockaddr_un holds 108 bytes including the terminator.
const MAX_SOCKET_PATH = 107;
// Attestation answers after which the agent only retries in vain (its own retry loop never gives up).
const REFUSED = /failed to attest|attestation/i;
const PERMANENT = /code = (InvalidArgument|PermissionDenied|Unauthenticated|NotFound)/;

export class ClientAgent {
  private stopping: Promise<void> | undefined;
  private stderrTail = "";
  private exitInfo: string | undefined;
  private readonly exited: Promise<void>;
  private readonly onProcessExit: () => void;

  private constructor(
    private readonly child: ChildProcess,
    /** The agent's private directory (config, data, socket). */
    readonly dir: string,
    /** The Workload API socket. */
    readonly socketPath: string,
    private readonly agentBin: string,
    private readonly joinToken: string,
    private readonly stopTimeoutMs: number,
  ) {
    this.exited = new Promise((resolve) => {
      child.once("exit", (code, signal) => {
        this.exitInfo = signal ? `signal ${signal}` : `code ${code}`;
        resolve();
      });
      child.once("error", (err: NodeJS.ErrnoException) => {
        // spawn failed (ENOENT, EACCES): there will be no "exit".
        this.exitInfo = `not started: ${err.code ?? err.message}`;
        resolve();
      });
    });
    const keep = (b: Buffer) => {
      this.stderrTail = (this.stderrTail + b.toString("utf8")).slice(-STDERR_KEEP);
    };
    child.stdout?.on("data", keep);
    child.stderr?.on("data", keep);
    this.onProcessExit = () => {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
      rmSync(dir, { recursive: true, force: true });
    };
    process.on("exit", this.onProcessExit);
  }

  /** Starts the agent and resolves once it is healthy; on any failure nothing is left running. */
  static async start(opts: ClientAgentOptions): Promise<ClientAgent> {
    const config = checkOptions(opts);
    opts.signal?.throwIfAborted();
    const dir = await mkdtemp(join(opts.tmpRoot ?? tmpdir(), "hpcs-agent-"));
    const socketPath = join(dir, "agent.sock");
    if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH) {
      await rm(dir, { recursive: true, force: true });
      throw new ClientAgentError(
        `spire-agent socket path ${socketPath} is longer than a unix socket allows; use a shorter temp directory (TMPDIR)`,
      );
    }
    const confPath = join(dir, "agent.conf");
    try {
      await writeFile(confPath, agentConfig({ ...config, dir, socketPath }), { mode: 0o600, flag: "wx" });
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      throw new ClientAgentError(
        `cannot write the spire-agent config in ${dir}: ${(err as NodeJS.ErrnoException).code ?? "error"}; check the temp directory (TMPDIR)`,
      );
    }
    const agentBin = opts.agentBin ?? "spire-agent";
    let child: ChildProcess;
    try {
      child = spawn(agentBin, ["run", "-config", confPath], { stdio: ["ignore", "pipe", "pipe"] });
    } catch {
      // Only invalid arguments throw here (a missing program is reported asynchronously, below).
      await rm(dir, { recursive: true, force: true });
      throw new ClientAgentError(
        `cannot run spire-agent ${JSON.stringify(agentBin)}; set [spire-server] agent-bin to the spire-agent program`,
      );
    }
    const agent = new ClientAgent(
      child,
      dir,
      socketPath,
      agentBin,
      opts.joinToken,
      opts.stopTimeoutMs ?? DEFAULT_STOP_TIMEOUT_MS,
    );
    try {
      await agent.waitHealthy(opts.healthTimeoutMs ?? DEFAULT_HEALTH_TIMEOUT_MS, opts.signal);
    } catch (err) {
      await agent.stop();
      throw err;
    }
    return agent;
  }

  /** The child's pid (for tests and diagnostics). */
  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Whether the agent process is still running. */
  get running(): boolean {
    return this.exitInfo === undefined;
  }

  /** SIGTERM, SIGKILL after the bound, then the directory is deleted. Safe to call any number of times. */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    process.off("exit", this.onProcessExit);
    if (this.running) {
      this.child.kill("SIGTERM");
      if (!(await this.exitWithin(this.stopTimeoutMs))) {
        this.child.kill("SIGKILL");
        await this.exitWithin(this.stopTimeoutMs);
      }
    }
    await rm(this.dir, { recursive: true, force: true });
  }

  private async exitWithin(ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), ms);
    });
    const done = await Promise.race([this.exited.then(() => true as const), timeout]);
    clearTimeout(timer);
    return done;
  }

  private async waitHealthy(timeoutMs: number, signal: AbortSignal | undefined): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let delay = 100;
    for (;;) {
      if (signal?.aborted) throw new ClientAgentError("spire-agent start aborted");
      if (!this.running) {
        throw new ClientAgentError(
          `spire-agent (${this.agentBin}) exited (${this.exitInfo}) before it was healthy: ${this.lastLines()}${this.exitInfo?.startsWith("not started") ? "; set [spire-server] agent-bin to the spire-agent program" : ""}`,
        );
      }
      const refused = this.lines().find((l) => REFUSED.test(l) && PERMANENT.test(l));
      if (refused !== undefined) {
        throw new ClientAgentError(
          `the SPIRE server refused the spire-agent's join token: ${this.redact(summarize(refused))}`,
        );
      }
      if (await this.healthcheck(Math.max(1000, Math.min(5000, deadline - Date.now())), signal)) return;
      if (Date.now() + delay > deadline) {
        throw new ClientAgentError(
          `spire-agent not healthy within ${timeoutMs} ms: ${this.lastLines()}; check [spire-server] address, port and trust-bundle`,
        );
      }
      await this.pause(delay, signal);
      delay = Math.min(delay * 2, 2000);
    }
  }

  /** `spire-agent healthcheck`: exit 0 once the agent has attested and serves the Workload API. */
  private healthcheck(timeoutMs: number, signal: AbortSignal | undefined): Promise<boolean> {
    return new Promise((resolve) => {
      execFile(
        this.agentBin,
        ["healthcheck", "-socketPath", this.socketPath],
        { timeout: timeoutMs, ...(signal ? { signal } : {}) },
        (err) => resolve(err === null),
      );
    });
  }

  /** Waits `ms`, or less when the agent exits or the signal aborts (the loop then reports why). */
  private pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal?.addEventListener("abort", done, { once: true });
      void this.exited.then(done);
    });
  }

  private lines(): string[] {
    return this.stderrTail
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l !== "" && !/umask/.test(l));
  }

  /** The agent's last log lines, shortened to their message and error, join token cut out. */
  private lastLines(n = 3): string {
    const tail = this.lines().slice(-n).map(summarize).join(" | ");
    return tail === "" ? "(no log output)" : this.redact(tail).slice(-800);
  }

  private redact(s: string): string {
    return s.split(this.joinToken).join("<join-token>");
  }
}

/** logrus text line → `msg: error`; anything else unchanged. */
function summarize(line: string): string {
  const field = (k: string) => {
    const m = new RegExp(`\\b${k}="((?:[^"\\\\]|\\\\.)*)"`).exec(line);
    return m?.[1]?.replace(/\\(.)/g, "$1");
  };
  const msg = field("msg");
  if (msg === undefined) return line;
  const error = field("error");
  return error ? `${msg}: ${error}` : msg;
}

export interface AgentConfigValues {
  serverAddress: string;
  serverPort: number;
  trustDomain: string;
  trustBundlePath: string;
  joinToken: string;
}

function checkOptions(o: ClientAgentOptions): AgentConfigValues {
  const label = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
  if (
    !new RegExp(`^(?=.{1,253}$)${label}(?:\\.${label})*$`).test(o.serverAddress) &&
    isIP(o.serverAddress) === 0
  ) {
    throw new ClientAgentError(
      `SPIRE server address ${JSON.stringify(o.serverAddress)} is not a host name or IP address; fix [spire-server] address`,
    );
  }
  if (!Number.isInteger(o.serverPort) || o.serverPort < 1 || o.serverPort > 65535) {
    throw new ClientAgentError(`SPIRE server port ${o.serverPort} is not a port; fix [spire-server] port`);
  }
  try {
    SpiffeId.of(o.trustDomain);
  } catch {
    throw new ClientAgentError(
      `trust domain ${JSON.stringify(o.trustDomain)} is not a SPIFFE trust domain; fix [spire-server] trust-domain`,
    );
  }
  if (!isAbsolute(o.trustBundlePath)) {
    throw new ClientAgentError(
      `SPIRE trust bundle ${JSON.stringify(o.trustBundlePath)} is not an absolute path; fix [spire-server] trust-bundle`,
    );
  }
  try {
    accessSync(o.trustBundlePath, constants.R_OK);
  } catch (err) {
    throw new ClientAgentError(
      `cannot read the SPIRE trust bundle ${o.trustBundlePath} (${(err as NodeJS.ErrnoException).code ?? "error"}); set [spire-server] trust-bundle to the PEM from 'spire-server bundle show'`,
    );
  }
  // SPIRE join tokens are UUIDs; the value is never echoed.
  if (!/^[A-Za-z0-9-]{1,128}$/.test(o.joinToken)) {
    throw new ClientAgentError("the join token from registration is not a SPIRE join token; register again");
  }
  return {
    serverAddress: o.serverAddress,
    serverPort: o.serverPort,
    trustDomain: o.trustDomain,
    trustBundlePath: o.trustBundlePath,
    joinToken: o.joinToken,
  };
}

/** An HCL string literal, or a refusal: nothing is escaped, so what was checked is what the agent reads. */
function hcl(field: string, value: string): string {
  // eslint-disable-next-line no-control-regex -- control characters are exactly what is refused
  if (/["\\\u0000-\u001f\u007f]|\$\{|%\{/.test(value)) {
    throw new ClientAgentError(
      `spire-agent config: ${field} contains a quote, backslash, control character or template sequence; use a plain value`,
    );
  }
  return `"${value}"`;
}

/** The agent's HCL: join_token attestation, keys in memory only, unix workload attestor. */
export function agentConfig(v: AgentConfigValues & { dir: string; socketPath: string }): string {
  return `agent {
  data_dir = ${hcl("data dir", join(v.dir, "data"))}
  log_level = "WARN"
  server_address = ${hcl("server address", v.serverAddress)}
  server_port = ${hcl("server port", String(v.serverPort))}
  socket_path = ${hcl("socket path", v.socketPath)}
  trust_bundle_path = ${hcl("trust bundle path", v.trustBundlePath)}
  trust_domain = ${hcl("trust domain", v.trustDomain)}
  join_token = ${hcl("join token", v.joinToken)}
}
plugins {
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "memory" {
    plugin_data {}
  }
  WorkloadAttestor "unix" {
    plugin_data {}
  }
}
`;
}
