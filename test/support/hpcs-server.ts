import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { serverPolicy } from "../../lib/vault/policies.js";
import { VaultClient } from "../../lib/vault/vault-client.js";
import { eventually, run } from "./exec.js";
import { httpsJson } from "./https-json.js";
import { nonce, TestAgent } from "./spire.js";
import type { StackEnv } from "./stack-env.js";

// This file runs from dist/test/support/: the server's entry point is dist/server/main.js.
export const SERVER_MAIN = fileURLToPath(new URL("../../server/main.js", import.meta.url));

/** A free TCP port on 127.0.0.1 (the kernel's choice, released at once). */
export async function freePort(): Promise<number> {
  const s = createServer();
  s.listen(0, "127.0.0.1");
  await once(s, "listening");
  const addr = s.address();
  s.close();
  if (addr === null || typeof addr === "string") throw new Error("no port");
  return addr.port;
}

export interface ServerOptions {
  /** Vault token_ttl / token_max_ttl of the server's role, in seconds (default 120 / 600). */
  tokenTtlSec?: number;
  tokenMaxTtlSec?: number;
  /** Extra `key = value` lines for [hpcs-server]. */
  extraServerKeys?: string[];
  /**
   * `operator` (default: tests hand out operator tokens) or `munge`: the bench's munged socket, so a
   * real Slurm job on this host gets its join token the way it does at a site.
   */
  nodeAttestation?: "operator" | "munge";
}

/**
 * The real `hpcs-server serve` process, bootstrapped on the bench the way an operator does it by hand
 * (README "Server (operators)", DESIGN Flow 1): its own spire-agent, a workload entry for its SPIFFE ID,
 * its Vault policy (serverPolicy) and jwt role bound to that ID, an INI file, then the process.
 * stop() undoes all of it.
 */
export class HpcsServerProcess {
  private child: ChildProcess | undefined;
  /** The server's stdout+stderr (pino JSON lines), for assertions and failure messages. */
  log = "";

  private constructor(
    readonly env: StackEnv,
    readonly id: string,
    readonly dir: string,
    readonly configPath: string,
    readonly serverRole: string,
    readonly spiffeId: string,
    readonly httpPort: number,
    readonly grpcPort: number,
    private readonly agent: TestAgent,
    private readonly root: VaultClient,
  ) {}

  get url(): string {
    return `https://localhost:${this.httpPort}`;
  }

  get grpcAddress(): string {
    return `localhost:${this.grpcPort}`;
  }

  static async start(env: StackEnv, opts: ServerOptions = {}): Promise<HpcsServerProcess> {
    const id = nonce();
    const td = env.trust_domain;
    const dir = await mkdtemp(join(tmpdir(), "hpcs-server-"));
    const root = new VaultClient({
      url: env.vault.url,
      caPem: readFileSync(env.ca_cert),
      timeoutMs: 10_000,
      token: env.vault.root_token,
      kvMount: env.vault.kv_mount,
      jwtMount: env.vault.jwt_mount,
    });
    const serverRole = `test-srv-${id}`;
    const spiffeId = `spiffe://${td}/hpcs-server/${id}`;
    // 1. The server's own agent and its workload entry (root on the utility node).
    const agent = await TestAgent.start(env, `spiffe://${td}/test-srv/${id}/agent`);
    const [httpPort, grpcPort] = [await freePort(), await freePort()];
    const srv = new HpcsServerProcess(
      env,
      id,
      dir,
      join(dir, "server.ini"),
      serverRole,
      spiffeId,
      httpPort,
      grpcPort,
      agent,
      root,
    );
    try {
      await agent.register(spiffeId, ["unix:uid:0"]);
      // As an operator checks with `spire-agent api fetch jwt`: the entry has reached the agent.
      await agent.fetchJwt("vault", spiffeId);
      // 2. Vault: the server's policy and its jwt role bound to exactly its SPIFFE ID.
      await root.writePolicy(
        serverRole,
        serverPolicy({ serverRole, kvMount: env.vault.kv_mount, jwtMount: env.vault.jwt_mount }),
      );
      await srv.setRoleTtl(opts.tokenTtlSec ?? 120, opts.tokenMaxTtlSec ?? 600);
      // 3. The INI file.
      await writeFile(
        srv.configPath,
        [
          "[spire-server]",
          `address = ${env.spire.server_address}`,
          `port = ${env.spire.server_port}`,
          `trust-domain = ${td}`,
          `socket-path = ${env.spire.admin_socket}`,
          "",
          "[spire-agent]",
          `socket-path = ${agent.socket}`,
          "",
          "[vault]",
          `url = ${env.vault.url}`,
          `ca-file = ${env.ca_cert}`,
          `server-role = ${serverRole}`,
          `kv-mount = ${env.vault.kv_mount}`,
          `jwt-mount = ${env.vault.jwt_mount}`,
          "",
          "[hpcs-server]",
          `listen = 127.0.0.1:${httpPort}`,
          `grpc-listen = 127.0.0.1:${grpcPort}`,
          `tls-cert = ${env.tls.cert}`,
          `tls-key = ${env.tls.key}`,
          "agent-model = per-job",
          ...(opts.nodeAttestation === "munge"
            ? ["node-attestation = munge", `munge-socket = ${env.munge.socket}`]
            : ["node-attestation = operator"]),
          // Every test client registers from 127.0.0.1, so the per-address default (10/min) would
          // throttle a busy test file; a test of the limits sets its own in extraServerKeys.
          ...((opts.extraServerKeys ?? []).some((k) => /^\s*rate-limit-register\s*=/.test(k))
            ? []
            : ["rate-limit-register = 300/min"]),
          ...(opts.extraServerKeys ?? []),
          "",
        ].join("\n"),
      );
      // 4. The real process.
      await srv.launch();
    } catch (err) {
      await srv.stop().catch(() => undefined);
      throw err;
    }
    return srv;
  }

  /** Rewrites the server's jwt role (its SPIFFE ID, the vault audience) with these token TTLs. */
  async setRoleTtl(ttlSec: number, maxTtlSec: number): Promise<void> {
    await this.root.writeJwtRole(this.serverRole, {
      boundSubject: this.spiffeId,
      boundAudiences: ["vault"],
      tokenPolicies: [this.serverRole],
      tokenTtlSec: ttlSec,
      tokenMaxTtlSec: maxTtlSec,
    });
  }

  private async launch(): Promise<void> {
    const child = spawn(process.execPath, [SERVER_MAIN, "serve", "--config", this.configPath], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child = child;
    const keep = (b: Buffer) => {
      this.log = (this.log + b.toString("utf8")).slice(-200_000);
    };
    child.stdout?.on("data", keep);
    child.stderr?.on("data", keep);
    let exited: string | undefined;
    child.once("exit", (code, signal) => {
      exited = `exited ${code ?? signal}`;
    });
    await eventually("hpcs-server healthy", 60_000, async () => {
      if (exited) return "exited";
      const r = await httpsJson(`${this.url}/v1/health`, { ca: readFileSync(this.env.ca_cert) });
      if (r.status !== 200) throw new Error(`health ${r.status}: ${JSON.stringify(r.body)}`);
      return "up";
    }).then(
      (state) => {
        if (state === "exited") throw new Error(`hpcs-server ${exited}: ${this.lastLines()}`);
      },
      (err: Error) => {
        throw new Error(`${err.message}; server log: ${this.lastLines()}`);
      },
    );
  }

  lastLines(n = 5): string {
    return this.log.trim().split("\n").slice(-n).join(" | ");
  }

  private async cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return run(process.execPath, [SERVER_MAIN, ...args, "--config", this.configPath]);
  }

  /** `hpcs-server enroll <name> --json`: the operator's one-time enrollment secret. */
  async enroll(name: string): Promise<{ clientName: string; enrollmentSecret: string; expiresAt: string }> {
    const r = await this.cli(["enroll", name, "--json", "--ttl", "15m"]);
    if (r.code !== 0) throw new Error(`enroll ${name} exited ${r.code}: ${r.stderr.trim()}`);
    return JSON.parse(r.stdout) as { clientName: string; enrollmentSecret: string; expiresAt: string };
  }

  /** `hpcs-server node-token <node> <user> --json`: a single-use operator node token. */
  async nodeToken(
    node: string,
    user: string,
  ): Promise<{ node: string; user: string; operatorToken: string; expiresAt: string }> {
    const r = await this.cli(["node-token", node, user, "--json", "--ttl", "15m"]);
    if (r.code !== 0) throw new Error(`node-token ${node} ${user} exited ${r.code}: ${r.stderr.trim()}`);
    return JSON.parse(r.stdout) as { node: string; user: string; operatorToken: string; expiresAt: string };
  }

  /** Runs any other subcommand against this server's config (for negative tests). */
  async run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return this.cli(args);
  }

  private async kill(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, "exit");
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  }

  /** Stops the process and starts it again from the same config (nothing is kept in between). */
  async restart(): Promise<void> {
    await this.kill();
    await this.launch();
  }

  async stop(): Promise<void> {
    await this.kill();
    await this.root.deleteJwtRole(this.serverRole).catch(() => undefined);
    await this.root.deletePolicy(this.serverRole).catch(() => undefined);
    await this.agent.stop().catch(() => undefined);
    await rm(this.dir, { recursive: true, force: true });
  }
}
