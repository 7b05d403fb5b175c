import { ClientAgent } from "../../client/identity/client-agent.js";
import { eventually, run, runOk } from "./exec.js";
import { forgetAgent } from "./spire.js";
import type { StackEnv } from "./stack-env.js";

/**
 * A real spire-agent started from a join token the code under test handed out (registerClient's, or
 * nodeJoinToken's), the way a client or a per-job agent starts: the client's own ClientAgent
 * (client/identity/client-agent.ts). stop() stops it, deletes the alias entries SPIRE made for the
 * token (parented to the agent's node ID) and evicts it, so nothing of it outlives the test.
 */
export class AgentWithToken {
  private constructor(
    private readonly env: StackEnv,
    private readonly agent: ClientAgent,
    /** spiffe://<td>/spire/agent/join_token/<token>. */
    readonly nodeId: string,
  ) {}

  get dir(): string {
    return this.agent.dir;
  }

  get socket(): string {
    return this.agent.socketPath;
  }

  static async start(env: StackEnv, joinToken: string): Promise<AgentWithToken> {
    const agent = await ClientAgent.start({
      serverAddress: env.spire.server_address,
      serverPort: env.spire.server_port,
      trustDomain: env.trust_domain,
      trustBundlePath: env.spire.bundle,
      joinToken,
      agentBin: env.spire.agent_bin,
    });
    return new AgentWithToken(env, agent, `spiffe://${env.trust_domain}/spire/agent/join_token/${joinToken}`);
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
    await this.agent.stop();
    await forgetAgent(this.env, this.nodeId);
  }
}
