/**
 * DESIGN "Agents and isolation", per-job model, on the real bench: bob, holding a valid token and
 * running his own spire-agent on a node where alice is granted, never receives alice's SVID — not
 * even when asking as root, because no entry of alice's is parented to any ID his agent holds.
 * Node tokens come from NodeTokens with the operator attestor backed by the real Vault.
 */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { SpiffeId } from "../../../lib/spiffe-id.js";
import { Code, type EntrySpec, SpireError } from "../../../lib/spire/registration.js";
import { SpireServerClient } from "../../../lib/spire/server-client.js";
import { VaultClient } from "../../../lib/vault/vault-client.js";
import { NssGroupResolver, OperatorAttestor } from "../../../server/service/node-attestation.js";
import { NodeTokens } from "../../../server/service/nodes.js";
import { ServiceError } from "../../../server/service/types.js";
import { AgentWithToken } from "../../support/agent-with-token.js";
import { eventually } from "../../support/exec.js";
import { nonce } from "../../support/spire.js";
import { loadStackEnv, type StackEnv } from "../../support/stack-env.js";

const ctx = { requestId: "isolation-test" };

function code(c: string) {
  return (err: unknown) => err instanceof ServiceError && err.code === c;
}

describe("per-job node tokens: isolation between users on one node (real SPIRE + Vault)", function () {
  this.timeout(120_000);

  let env: StackEnv;
  let spire: SpireServerClient;
  let attestor: OperatorAttestor;
  let nodes: NodeTokens;
  const N = `nd-${nonce()}`;
  const M = `nd-${nonce()}`;
  const client = `iso-${nonce()}`;
  const grantIds: string[] = [];
  const operatorTokens: string[] = [];
  const jobs: { node: string; user: string; joinToken: string }[] = [];
  const agents: AgentWithToken[] = [];
  let id: (path: string) => SpiffeId;
  let secretId: (s: string) => string;

  before(async () => {
    env = loadStackEnv();
    id = (path) => SpiffeId.parse(`spiffe://${env.trust_domain}${path}`);
    secretId = (s) => `spiffe://${env.trust_domain}/c/${client}/s/${s}`;
    spire = new SpireServerClient({ socketPath: env.spire.admin_socket });
    const vault = new VaultClient({
      url: env.vault.url,
      caPem: readFileSync(env.ca_cert),
      timeoutMs: 10_000,
      token: env.vault.root_token,
      kvMount: env.vault.kv_mount,
    });
    attestor = new OperatorAttestor(vault, new NssGroupResolver());
    nodes = new NodeTokens({
      spire,
      attestor,
      trustDomain: env.trust_domain,
      agentModel: "per-job",
      ttlSeconds: 600,
    });

    // What a per-job grant creates. Every fetch below runs as root, so each grant also gets a
    // unix:uid:0 twin: if alice's entry ever reached bob's agent, root would receive it.
    const grant = (secret: string, parent: string, selectors: string[]): EntrySpec[] =>
      selectors.map((s) => {
        const [type, ...rest] = s.split(":");
        return {
          spiffeId: SpiffeId.parse(secretId(secret)),
          parentId: id(parent),
          selectors: [{ type: type ?? "", value: rest.join(":") }],
        };
      });
    const results = await spire.batchCreateEntries([
      ...grant("alice-data", `/h/${N}/u/alice`, ["unix:user:alice", "unix:uid:0"]),
      ...grant("bob-data", `/h/${N}/u/bob`, ["unix:uid:0"]),
      ...grant("shared-data", `/h/${N}/g/shared`, ["unix:uid:0"]),
      ...grant("proja-data", `/h/${N}/g/proj-a`, ["unix:uid:0"]),
      ...grant("m-bob-data", `/h/${M}/u/bob`, ["unix:uid:0"]),
    ]);
    for (const r of results) {
      if (r.status === "error") throw new Error(`grant entry: ${r.message}`);
      grantIds.push(r.id);
    }
  });

  after(async () => {
    for (const a of agents) await a.stop();
    for (const j of jobs) await nodes?.endJob(ctx, j).catch(() => undefined);
    if (grantIds.length > 0) await spire.batchDeleteEntries(grantIds).catch(() => undefined);
    for (const t of operatorTokens) await attestor?.revoke(t).catch(() => undefined);
    spire?.close();
  });

  async function issue(node: string, user: string, ttl = 300): Promise<string> {
    const { token } = await attestor.issue(node, user, ttl);
    operatorTokens.push(token);
    return token;
  }

  async function redeem(node: string, user: string, operatorToken: string) {
    const res = await nodes.nodeJoinToken(ctx, { node, user, operatorToken });
    jobs.push({ node, user, joinToken: res.joinToken });
    return res;
  }

  /** Waits until `present` all arrived, then returns everything the agent handed root. */
  async function syncedIds(agent: AgentWithToken, present: string[]): Promise<string[]> {
    return eventually("agent synced", 15_000, async () => {
      const ids = await agent.jwtSpiffeIds("vault");
      const missing = present.filter((p) => !ids.includes(p));
      if (missing.length > 0) throw new Error(`still missing ${missing.join(", ")}; have ${ids.join(", ")}`);
      return ids;
    });
  }

  let bobJob: { joinToken: string; agentSpiffeId: string; aliases: string[] };

  it("redeems a token only for its node and user, and only once", async () => {
    const token = await issue(N, "bob");
    await assert.rejects(
      nodes.nodeJoinToken(ctx, { node: N, user: "alice", operatorToken: token }),
      code("permission_denied"),
    );
    await assert.rejects(
      nodes.nodeJoinToken(ctx, { node: M, user: "bob", operatorToken: token }),
      code("permission_denied"),
    );
    bobJob = await redeem(N, "bob", token);
    assert.equal(bobJob.agentSpiffeId, `spiffe://${env.trust_domain}/h/${N}/u/bob`);
    const groupAliases = ["bob", "shared", "proj-b"].map((g) => `spiffe://${env.trust_domain}/h/${N}/g/${g}`);
    assert.deepEqual([...bobJob.aliases].sort(), groupAliases.sort());
    await assert.rejects(
      nodes.nodeJoinToken(ctx, { node: N, user: "bob", operatorToken: token }),
      code("unauthenticated"),
    );

    // The aliases are real SPIRE entries under the join token's agent ID, expiring with the token.
    const entries = await spire.listEntries({
      byParentId: id(`/spire/agent/join_token/${bobJob.joinToken}`),
    });
    assert.deepEqual(
      entries.map((e) => e.spiffeId.toString()).sort(),
      [bobJob.agentSpiffeId, ...groupAliases].sort(),
    );
    for (const e of entries) assert.ok(e.expiresAt && e.expiresAt.getTime() > Date.now());
  });

  it("refuses an expired operator token", async () => {
    const token = await issue(N, "bob", 1);
    await new Promise((r) => setTimeout(r, 1500));
    await assert.rejects(
      nodes.nodeJoinToken(ctx, { node: N, user: "bob", operatorToken: token }),
      code("unauthenticated"),
    );
  });

  it("bob's own agent on N gets bob's and the shared group's grants, never alice's or proj-a's", async () => {
    const agent = await AgentWithToken.start(env, bobJob.joinToken);
    agents.push(agent);
    // Positive controls first: once they arrived, the agent has synced every entry it will get.
    const ids = await syncedIds(agent, [secretId("bob-data"), secretId("shared-data")]);
    assert.ok(!ids.includes(secretId("alice-data")), `bob's agent got alice's SVID: ${ids.join(", ")}`);
    assert.ok(!ids.includes(secretId("proja-data")), `bob's agent got proj-a's SVID: ${ids.join(", ")}`);
    assert.ok(!ids.includes(secretId("m-bob-data")), `bob's agent on N got a grant for node M`);
  });

  it("alice's own agent on N does get alice's grant (and not bob's)", async () => {
    const res = await redeem(N, "alice", await issue(N, "alice"));
    const agent = await AgentWithToken.start(env, res.joinToken);
    agents.push(agent);
    const ids = await syncedIds(agent, [
      secretId("alice-data"),
      secretId("shared-data"),
      secretId("proja-data"),
    ]);
    assert.ok(!ids.includes(secretId("bob-data")), `alice's agent got bob's SVID: ${ids.join(", ")}`);
  });

  it("endJob removes bob's aliases and evicts his agent", async () => {
    const agentId = id(`/spire/agent/join_token/${bobJob.joinToken}`);
    await assert.rejects(
      nodes.endJob(ctx, { node: N, user: "alice", joinToken: bobJob.joinToken }),
      code("permission_denied"),
    );
    await nodes.endJob(ctx, { node: N, user: "bob", joinToken: bobJob.joinToken });
    assert.deepEqual(await spire.listEntries({ byParentId: agentId }), []);
    await assert.rejects(spire.evictAgent(agentId), (err: unknown) => {
      return err instanceof SpireError && err.code === Code.NOT_FOUND;
    });
    await assert.rejects(
      nodes.endJob(ctx, { node: N, user: "bob", joinToken: bobJob.joinToken }),
      code("not_found"),
    );
  });
});
