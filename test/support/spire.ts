import { randomBytes } from "node:crypto";
import { agentConfig as clientAgentConfig, ClientAgent } from "../../client/identity/client-agent.js";
import { eventually, runOk } from "./exec.js";
import type { StackEnv } from "./stack-env.js";

/** A short random suffix so concurrent and repeated runs never share SPIFFE IDs or Vault paths. */
export function nonce(): string {
  return randomBytes(6).toString("hex");
}

/**
 * The HCL of a spire-agent on the bench (join_token attestation, unix workload attestor, memory keys):
 * the client's own config (client/identity/client-agent.ts), for tests that run the agent themselves.
 */
export function agentConfig(env: StackEnv, dir: string, socket: string, joinToken: string): string {
  return clientAgentConfig({
    serverAddress: env.spire.server_address,
    serverPort: env.spire.server_port,
    trustDomain: env.trust_domain,
    trustBundlePath: env.spire.bundle,
    joinToken,
    dir,
    socketPath: socket,
  });
}

/** spire-server CLI against the bench's admin socket (JSON output). */
export async function spireServer(env: StackEnv, args: string[]): Promise<unknown> {
  const out = await runOk(env.spire.server_bin, [
    ...args,
    "-socketPath",
    env.spire.admin_socket,
    "-output",
    "json",
  ]);
  return out.trim() ? JSON.parse(out) : undefined;
}

/**
 * Removes what SPIRE holds for a join-token agent: the given entries, every entry parented to its node
 * ID (the aliases `token generate -spiffeID` or the server made), and the attested agent itself.
 */
export async function forgetAgent(env: StackEnv, nodeId: string, entryIds: string[] = []): Promise<void> {
  const aliases = (await spireServer(env, ["entry", "show", "-parentID", nodeId]).catch(() => ({}))) as {
    entries?: { id: string }[];
  };
  for (const id of [...entryIds, ...(aliases.entries ?? []).map((e) => e.id)]) {
    await spireServer(env, ["entry", "delete", "-entryID", id]).catch(() => undefined);
  }
  await spireServer(env, ["agent", "evict", "-spiffeID", nodeId]).catch(() => undefined);
}

/**
 * A spire-agent started with a fresh join token, for tests. Its node SPIFFE ID is `agentId`.
 * stop() stops it, evicts it and deletes the entries the test registered under it.
 */
export class TestAgent {
  private constructor(
    private readonly env: StackEnv,
    private readonly agent: ClientAgent,
    readonly agentId: string,
    /** The agent's own ID, from its join token; agentId is an alias of it. */
    readonly nodeId: string,
    private readonly entryIds: string[] = [],
  ) {}

  get dir(): string {
    return this.agent.dir;
  }

  get socket(): string {
    return this.agent.socketPath;
  }

  static async start(env: StackEnv, agentId: string): Promise<TestAgent> {
    const token = (await spireServer(env, ["token", "generate", "-spiffeID", agentId, "-ttl", "300"])) as {
      value: string;
    };
    const nodeId = `spiffe://${env.trust_domain}/spire/agent/join_token/${token.value}`;
    try {
      const agent = await ClientAgent.start({
        serverAddress: env.spire.server_address,
        serverPort: env.spire.server_port,
        trustDomain: env.trust_domain,
        trustBundlePath: env.spire.bundle,
        joinToken: token.value,
        agentBin: env.spire.agent_bin,
      });
      return new TestAgent(env, agent, agentId, nodeId);
    } catch (err) {
      // The token's alias entry exists already; the agent may have attested before failing.
      await forgetAgent(env, nodeId);
      throw err;
    }
  }

  /** Registers a workload entry parented to this agent; removed again by stop(). */
  async register(spiffeId: string, selectors: string[]): Promise<string> {
    const args = ["entry", "create", "-parentID", this.agentId, "-spiffeID", spiffeId];
    for (const s of selectors) args.push("-selector", s);
    const res = (await spireServer(this.env, args)) as { results: { entry: { id: string } }[] };
    const id = res.results[0]?.entry.id;
    if (!id) throw new Error(`entry create returned no id: ${JSON.stringify(res)}`);
    this.entryIds.push(id);
    return id;
  }

  /** Fetches a JWT-SVID through the agent's Workload API, waiting for the entry to sync. */
  async fetchJwt(audience: string, spiffeId?: string): Promise<string> {
    return eventually("JWT-SVID", 60_000, async () => {
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
      if (spiffeId) args.push("-spiffeID", spiffeId);
      const out = JSON.parse(await runOk(this.env.spire.agent_bin, args)) as { svids?: { svid: string }[] }[];
      const svid = out.flatMap((o) => o.svids ?? [])[0]?.svid;
      if (!svid) throw new Error(`no svid in ${JSON.stringify(out)}`);
      return svid;
    });
  }

  async stop(): Promise<void> {
    await this.agent.stop();
    await forgetAgent(this.env, this.nodeId, this.entryIds);
  }
}
