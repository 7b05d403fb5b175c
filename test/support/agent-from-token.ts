import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eventually, run, runOk } from "./exec.js";
import type { StackEnv } from "./stack-env.js";

/**
 * A real spire-agent attested with a join token someone else obtained (e.g. from nodeJoinToken),
 * the way a per-job agent starts on a compute node. Unlike TestAgent it registers nothing and
 * cleans nothing up in SPIRE: what exists under the token is the code under test's business.
 */
export class TokenAgent {
  private constructor(
    private readonly env: StackEnv,
    readonly dir: string,
    readonly socket: string,
    /** spiffe://<td>/spire/agent/join_token/<token>: the ID SPIRE gives the attested agent. */
    readonly nodeId: string,
    private readonly child: ChildProcess,
  ) {}

  static async start(env: StackEnv, joinToken: string): Promise<TokenAgent> {
    if (!/^[A-Za-z0-9-]{1,128}$/.test(joinToken)) throw new Error("join token is not a SPIRE token");
    const dir = await mkdtemp(join(tmpdir(), "hpcs-token-agent-"));
    const socket = join(dir, "agent.sock");
    await writeFile(
      join(dir, "agent.conf"),
      `agent {
  data_dir = "${dir}/data"
  log_level = "WARN"
  server_address = "${env.spire.server_address}"
  server_port = "${env.spire.server_port}"
  socket_path = "${socket}"
  trust_bundle_path = "${env.spire.bundle}"
  trust_domain = "${env.trust_domain}"
  join_token = "${joinToken}"
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
`,
    );
    const child = spawn(env.spire.agent_bin, ["run", "-config", join(dir, "agent.conf")], {
      stdio: ["ignore", "ignore", "ignore"],
    });
    const agent = new TokenAgent(
      env,
      dir,
      socket,
      `spiffe://${env.trust_domain}/spire/agent/join_token/${joinToken}`,
      child,
    );
    try {
      await eventually("spire-agent healthy", 30_000, () =>
        runOk(env.spire.agent_bin, ["healthcheck", "-socketPath", socket]),
      );
    } catch (err) {
      await agent.stop();
      throw err;
    }
    return agent;
  }

  /**
   * The SPIFFE IDs of every JWT-SVID this process (the caller, root in tests) gets from the agent
   * right now; [] when the agent has none for it.
   */
  async jwtSpiffeIds(audience: string): Promise<string[]> {
    const args = [
      "api",
      "fetch",
      "jwt",
      "-audience",
      audience,
      "-socketPath",
      this.socket,
      "-output",
      "json",
    ];
    const r = await run(this.env.spire.agent_bin, args);
    if (r.code !== 0) {
      if (/no identity issued|PermissionDenied/i.test(r.stderr)) return [];
      throw new Error(`spire-agent api fetch jwt exited ${r.code}: ${r.stderr.trim()}`);
    }
    const out = JSON.parse(r.stdout) as { svids?: { svid: string }[] }[];
    return out
      .flatMap((o) => o.svids ?? [])
      .map((s) => {
        const payload = s.svid.split(".")[1] ?? "";
        return String(
          (JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as { sub?: string }).sub,
        );
      })
      .sort();
  }

  async stop(): Promise<void> {
    this.child.kill("SIGKILL");
    await rm(this.dir, { recursive: true, force: true });
  }
}
