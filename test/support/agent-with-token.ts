import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eventually, run, runOk } from "./exec.js";
import { agentConfig, forgetAgent } from "./spire.js";
import type { StackEnv } from "./stack-env.js";

/**
 * A real spire-agent started from a join token the code under test handed out (registerClient's, or
 * nodeJoinToken's), the way a client or a per-job agent starts. stop() kills it, deletes the alias entries SPIRE made for the
 * token (parented to the agent's node ID) and evicts it, so nothing of it outlives the test.
 */
export class AgentWithToken {
  private constructor(
    private readonly env: StackEnv,
    readonly dir: string,
    readonly socket: string,
    /** spiffe://<td>/spire/agent/join_token/<token>. */
    readonly nodeId: string,
    private readonly child: ChildProcess,
  ) {}

  static async start(env: StackEnv, joinToken: string): Promise<AgentWithToken> {
    if (!/^[A-Za-z0-9-]{1,128}$/.test(joinToken)) throw new Error("join token is not a SPIRE token");
    const dir = await mkdtemp(join(tmpdir(), "hpcs-client-agent-"));
    const socket = join(dir, "agent.sock");
    await writeFile(join(dir, "agent.conf"), agentConfig(env, dir, socket, joinToken));
    const child = spawn(env.spire.agent_bin, ["run", "-config", join(dir, "agent.conf")], {
      stdio: ["ignore", "ignore", "ignore"],
    });
    const agent = new AgentWithToken(
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

  /** A JWT-SVID for `spiffeId` and `audience`, waiting for the entry to reach the agent. */
  async fetchJwt(audience: string, spiffeId: string): Promise<string> {
    return eventually("JWT-SVID", 60_000, async () => {
      const out = JSON.parse(
        await runOk(this.env.spire.agent_bin, [
          "api",
          "fetch",
          "jwt",
          "-audience",
          audience,
          "-spiffeID",
          spiffeId,
          "-socketPath",
          this.socket,
          "-output",
          "json",
        ]),
      ) as { svids?: { svid: string }[] }[];
      const svid = out.flatMap((o) => o.svids ?? [])[0]?.svid;
      if (!svid) throw new Error(`no svid in ${JSON.stringify(out)}`);
      return svid;
    });
  }

  async stop(): Promise<void> {
    this.child.kill("SIGTERM");
    await forgetAgent(this.env, this.nodeId);
    await rm(this.dir, { recursive: true, force: true });
  }
}
