import assert from "node:assert/strict";
import { SpiffeId } from "../../../../lib/spiffe-id.js";
import type { AttestedNode, NodeAttestor } from "../../../../server/service/node-attestation.js";
import { NodeTokens } from "../../../../server/service/nodes.js";
import { type NodeTokenRequest, ServiceError } from "../../../../server/service/types.js";
import { FakeSpire } from "../../../support/node-fakes.js";

const ctx = { requestId: "t" };
const TD = "hpcs.test";

class FakeAttestor implements NodeAttestor {
  calls = 0;
  groups = ["bob", "shared", "proj-b"];
  async attest(req: NodeTokenRequest): Promise<AttestedNode> {
    this.calls++;
    return { node: req.node, user: req.user, groups: this.groups };
  }
}

function setup(agentModel: "site" | "per-job" = "per-job") {
  const spire = new FakeSpire();
  const attestor = new FakeAttestor();
  const tokens = new NodeTokens({ spire, attestor, trustDomain: TD, agentModel, ttlSeconds: 600 });
  return { spire, attestor, tokens };
}

function oneLineError(c: string) {
  return (err: unknown) => err instanceof ServiceError && err.code === c && !/[\r\n]/.test(err.message);
}

describe("NodeTokens.nodeJoinToken (per-job)", () => {
  it("creates the user alias and one alias per group, parented to the join token, in one batch", async () => {
    const { spire, tokens } = setup();
    const res = await tokens.nodeJoinToken(ctx, { node: "n1", user: "bob" });
    assert.equal(res.agentSpiffeId, `spiffe://${TD}/h/n1/u/bob`);
    assert.deepEqual(
      res.aliases,
      ["bob", "shared", "proj-b"].map((g) => `spiffe://${TD}/h/n1/g/${g}`),
    );
    assert.deepEqual(spire.calls, ["createJoinToken", "batchCreateEntries"]);
    assert.equal(spire.tokens[0]?.agentId, undefined, "SPIRE's own alias would not expire");
    assert.equal(spire.tokens[0]?.ttlSeconds, 600);
    const parent = `spiffe://${TD}/spire/agent/join_token/${res.joinToken}`;
    assert.equal(spire.entries.length, 4);
    for (const e of spire.entries) {
      assert.equal(e.parentId.toString(), parent);
      assert.deepEqual(e.selectors, [{ type: "spiffe_id", value: parent }]);
      assert.equal(e.expiresAt?.getTime(), res.expiresAt.getTime());
    }
  });

  for (const [fld, bad] of [
    ["node", "a;b"],
    ["user", "../x"],
    ["node", "x".repeat(300)],
    ["user", ""],
    ["node", "a\nb"],
  ] as const) {
    it(`refuses ${fld} ${JSON.stringify(bad.slice(0, 12))} with one line, before attesting, creating nothing`, async () => {
      const { spire, attestor, tokens } = setup();
      const req = { node: "n1", user: "bob", [fld]: bad };
      await assert.rejects(tokens.nodeJoinToken(ctx, req), (err: unknown) => {
        return oneLineError("invalid_argument")(err) && (err as Error).message.includes(fld);
      });
      assert.equal(attestor.calls, 0);
      assert.deepEqual(spire.calls, []);
    });
  }

  it("refuses a bad group name from attestation before creating any token", async () => {
    const { spire, attestor, tokens } = setup();
    attestor.groups = ["shared", "Bad Group"];
    await assert.rejects(
      tokens.nodeJoinToken(ctx, { node: "n1", user: "bob" }),
      oneLineError("invalid_argument"),
    );
    assert.deepEqual(spire.calls, []);
  });

  it("rolls back the aliases when SPIRE refuses one of them", async () => {
    const { spire, tokens } = setup();
    spire.refuse.add(`spiffe://${TD}/h/n1/g/shared`);
    await assert.rejects(tokens.nodeJoinToken(ctx, { node: "n1", user: "bob" }), oneLineError("unavailable"));
    assert.equal(spire.entries.length, 0);
  });

  it("propagates the attestor's refusal and creates nothing", async () => {
    const spire = new FakeSpire();
    const attestor: NodeAttestor = {
      attest: async () => {
        throw new ServiceError("unauthenticated", "no");
      },
    };
    const tokens = new NodeTokens({ spire, attestor, trustDomain: TD, agentModel: "per-job" });
    await assert.rejects(
      tokens.nodeJoinToken(ctx, { node: "n1", user: "bob" }),
      oneLineError("unauthenticated"),
    );
    assert.deepEqual(spire.calls, []);
  });
});

describe("NodeTokens.nodeJoinToken (site)", () => {
  it("makes a token whose alias is the node only", async () => {
    const { spire, tokens } = setup("site");
    const res = await tokens.nodeJoinToken(ctx, { node: "n1", user: "bob" });
    assert.equal(res.agentSpiffeId, `spiffe://${TD}/h/n1`);
    assert.deepEqual(res.aliases, []);
    assert.equal(spire.tokens[0]?.agentId, `spiffe://${TD}/h/n1`);
    assert.deepEqual(spire.calls, ["createJoinToken"]);
  });
});

describe("NodeTokens.endJob", () => {
  it("deletes the aliases and evicts the agent", async () => {
    const { spire, tokens } = setup();
    const res = await tokens.nodeJoinToken(ctx, { node: "n1", user: "bob" });
    const agent = `spiffe://${TD}/spire/agent/join_token/${res.joinToken}`;
    spire.agents.add(agent);
    await tokens.endJob(ctx, { node: "n1", user: "bob", joinToken: res.joinToken });
    assert.equal(spire.entries.length, 0);
    assert.ok(!spire.agents.has(agent));
    await assert.rejects(
      tokens.endJob(ctx, { node: "n1", user: "bob", joinToken: res.joinToken }),
      oneLineError("not_found"),
    );
  });

  it("refuses a node or user that does not match the token, touching nothing", async () => {
    const { spire, tokens } = setup();
    const res = await tokens.nodeJoinToken(ctx, { node: "n1", user: "bob" });
    await assert.rejects(
      tokens.endJob(ctx, { node: "n1", user: "alice", joinToken: res.joinToken }),
      oneLineError("permission_denied"),
    );
    await assert.rejects(
      tokens.endJob(ctx, { node: "n2", user: "bob", joinToken: res.joinToken }),
      oneLineError("permission_denied"),
    );
    assert.equal(spire.entries.length, 4);
  });

  it("refuses a malformed token", async () => {
    const { tokens } = setup();
    await assert.rejects(
      tokens.endJob(ctx, { node: "n1", user: "bob", joinToken: "../x" }),
      oneLineError("invalid_argument"),
    );
  });

  it("ends a job whose agent never attested", async () => {
    const { spire, tokens } = setup();
    const res = await tokens.nodeJoinToken(ctx, { node: "n1", user: "bob" });
    await tokens.endJob(ctx, { node: "n1", user: "bob", joinToken: res.joinToken });
    assert.equal(spire.entries.length, 0);
  });

  it("is refused in the site model", async () => {
    const { tokens } = setup("site");
    await assert.rejects(
      tokens.endJob(ctx, { node: "n1", user: "bob", joinToken: "abc" }),
      oneLineError("failed_precondition"),
    );
  });

  it("rejects a bad trust domain at construction", () => {
    assert.throws(
      () =>
        new NodeTokens({
          spire: new FakeSpire(),
          attestor: new FakeAttestor(),
          trustDomain: "Bad TD",
          agentModel: "per-job",
        }),
    );
  });
});

describe("AgentSweeper", () => {
  it("evicts join-token agents without entries and keeps the others", async () => {
    const { AgentSweeper } = await import("../../../../server/service/sweeper.js");
    const spire = new FakeSpire();
    const withAlias = SpiffeId.parse(`spiffe://${TD}/spire/agent/join_token/a`);
    const bare = SpiffeId.parse(`spiffe://${TD}/spire/agent/join_token/b`);
    const other = SpiffeId.parse(`spiffe://${TD}/spire/agent/x509pop/c`);
    await spire.batchCreateEntries([
      {
        spiffeId: SpiffeId.parse(`spiffe://${TD}/c/x`),
        parentId: withAlias,
        selectors: [{ type: "a", value: "b" }],
      },
    ]);
    for (const a of [withAlias, bare, other]) spire.agents.add(a.toString());
    const sweeper = new AgentSweeper(spire, { listJoinTokenAgents: async () => [withAlias, bare, other] });
    const res = await sweeper.sweep();
    assert.deepEqual(res.evicted, [bare.toString()]);
    assert.equal(res.kept, 2);
    assert.ok(spire.agents.has(withAlias.toString()) && spire.agents.has(other.toString()));
  });

  it("sweepExpiredAliases deletes only expired entries with the given IDs", async () => {
    const { sweepExpiredAliases } = await import("../../../../server/service/sweeper.js");
    const spire = new FakeSpire();
    const parent = SpiffeId.parse(`spiffe://${TD}/spire/agent/join_token/a`);
    const alias = SpiffeId.parse(`spiffe://${TD}/h/n1/u/bob`);
    const other = SpiffeId.parse(`spiffe://${TD}/h/n1/u/alice`);
    const sel = [{ type: "spiffe_id", value: parent.toString() }];
    const now = new Date("2026-01-01T00:00:00Z");
    await spire.batchCreateEntries([
      { spiffeId: alias, parentId: parent, selectors: sel, expiresAt: new Date(now.getTime() - 1000) },
      { spiffeId: alias, parentId: parent, selectors: sel, expiresAt: new Date(now.getTime() + 1000) },
      { spiffeId: alias, parentId: parent, selectors: [{ type: "x", value: "y" }] },
      { spiffeId: other, parentId: parent, selectors: sel, expiresAt: new Date(now.getTime() - 1000) },
    ]);
    const deleted = await sweepExpiredAliases(spire, [alias], now);
    assert.equal(deleted.length, 1);
    assert.equal(spire.entries.length, 3);
    assert.ok(spire.entries.some((e) => e.spiffeId.equals(other)));
  });
});
