import assert from "node:assert/strict";
import { grantEntries, GrantService } from "../../../../server/service/grants.js";
import { type CallContext, ServiceError } from "../../../../server/service/types.js";
import { boom, FakeSpire, FakeVault, testConfig } from "./fakes.js";

const code = (c: string) => (e: unknown) => {
  assert.ok(e instanceof ServiceError, String(e));
  assert.equal(e.code, c, e.message);
  assert.ok(!e.message.includes("\n"), e.message);
  return true;
};

/** Callers by bearer token: "jwt-<id>" authenticates as client <id>. */
const fakeCaller = {
  async authenticate(ctx: CallContext): Promise<string> {
    const m = /^jwt-(.+)$/.exec(ctx.bearerJwt ?? "");
    if (!m?.[1]) throw new ServiceError("unauthenticated", "no JWT-SVID");
    return m[1];
  },
};

describe("server/service/grants", () => {
  const ctxA = { requestId: "r", bearerJwt: "jwt-lab-a" };
  const ctxB = { requestId: "r", bearerJwt: "jwt-lab-b" };
  let spire: FakeSpire;
  let vault: FakeVault;
  const service = (model: "site" | "per-job" = "per-job") =>
    new GrantService({ config: testConfig(model), spire, vault, caller: fakeCaller });
  const req = { secret: "data-1", nodes: ["n1", "n2", "n3"], users: ["alice", "bob"], groups: ["proj"] };

  beforeEach(() => {
    spire = new FakeSpire();
    vault = new FakeVault();
  });

  describe("grantEntries", () => {
    const base = {
      trustDomain: "hpcs.test",
      clientId: "lab-a",
      secret: "s1",
      nodes: ["n1"],
      users: ["alice"],
      groups: ["proj"],
    };
    it("site: parent is the node, selectors name user / supplementary group", () => {
      const es = grantEntries({ ...base, agentModel: "site" });
      assert.deepEqual(
        es.map((e) => [e.spiffeId.toString(), e.parentId.toString(), e.selectors]),
        [
          [
            "spiffe://hpcs.test/c/lab-a/s/s1",
            "spiffe://hpcs.test/h/n1",
            [{ type: "unix", value: "user:alice" }],
          ],
          [
            "spiffe://hpcs.test/c/lab-a/s/s1",
            "spiffe://hpcs.test/h/n1",
            [{ type: "unix", value: "supplementary_group:proj" }],
          ],
        ],
      );
    });
    it("per-job: parent is the user's or group's alias under the node", () => {
      const exp = new Date("2030-01-01T00:00:00Z");
      const es = grantEntries({ ...base, agentModel: "per-job", expiresAt: exp });
      assert.deepEqual(
        es.map((e) => [e.parentId.toString(), e.selectors[0]?.value, e.expiresAt]),
        [
          ["spiffe://hpcs.test/h/n1/u/alice", "user:alice", exp],
          ["spiffe://hpcs.test/h/n1/g/proj", "supplementary_group:proj", exp],
        ],
      );
    });
  });

  it("grants in ONE batch, idempotently, with read-only policy and role", async () => {
    const res = await service().grant(ctxA, req);
    assert.equal(res.entriesCreated, 9);
    assert.equal(res.entriesExisting, 0);
    assert.equal(res.spiffeId, "spiffe://hpcs.test/c/lab-a/s/data-1");
    assert.equal(res.secretPath, "kv/data/hpcs/lab-a/data-1");
    assert.equal(spire.batches.length, 1);
    assert.match(
      vault.policies.get(res.vaultRole) ?? "",
      /path "kv\/data\/hpcs\/lab-a\/data-1" \{\s+capabilities = \["read"\]/,
    );
    assert.equal(vault.roles.get(res.vaultRole)?.boundSubject, res.spiffeId);
    const again = await service().grant(ctxA, req);
    assert.equal(again.entriesCreated, 0);
    assert.equal(again.entriesExisting, 9);
    assert.equal(spire.entries.size, 9);

    const list = await service().listGrants(ctxA);
    assert.deepEqual(list, [
      {
        secret: "data-1",
        spiffeId: res.spiffeId,
        vaultRole: res.vaultRole,
        nodes: ["n1", "n2", "n3"],
        users: ["alice", "bob"],
        groups: ["proj"],
      },
    ]);
    assert.deepEqual(await service().listGrants(ctxB), []);
  });

  it("site model list reconstructs users and groups from selectors", async () => {
    await service("site").grant(ctxA, req);
    const [g] = await service("site").listGrants(ctxA);
    assert.deepEqual([g?.nodes, g?.users, g?.groups], [["n1", "n2", "n3"], ["alice", "bob"], ["proj"]]);
  });

  it("expiry: entries, capped role TTL and the secret's metadata when it exists", async () => {
    await vault.kvWrite("hpcs/lab-a/data-1", { key: "k" });
    const exp = new Date(Date.now() + 2 * 86400_000);
    const res = await service().grant(ctxA, { ...req, expiresAt: exp });
    assert.ok([...spire.entries.values()].every((e) => e.expiresAt?.getTime() === exp.getTime()));
    assert.equal(vault.roles.get(res.vaultRole)?.tokenMaxTtlSec, 3600);
    assert.equal(vault.kv.get("hpcs/lab-a/data-1")?.customMetadata["hpcs-expires-at"], exp.toISOString());
    const [g] = await service().listGrants(ctxA);
    assert.equal(g?.expiresAt?.getTime(), exp.getTime());
    await assert.rejects(
      service().grant(ctxA, { ...req, expiresAt: new Date(Date.now() - 1000) }),
      code("invalid_argument"),
    );
  });

  it("does not write metadata of a secret that does not exist yet (the client's create would fail)", async () => {
    await service().grant(ctxA, { ...req, expiresAt: new Date(Date.now() + 86400_000) });
    assert.ok(!vault.kv.has("hpcs/lab-a/data-1"));
  });

  const bad: [string, Record<string, unknown>][] = [
    ["secret a;b", { secret: "a;b" }],
    ["secret ../x", { secret: "../x" }],
    ["secret 300 chars", { secret: "s".repeat(300) }],
    ["secret empty", { secret: "" }],
    ["node a;b", { nodes: ["n1", "a;b"] }],
    ["node ../x", { nodes: ["../x"] }],
    ["node 300 chars", { nodes: ["n".repeat(300)] }],
    ["node empty", { nodes: [""] }],
    ["user a;b", { users: ["a;b"] }],
    ["user 300 chars", { users: ["u".repeat(300)] }],
    ["group ../x", { groups: ["../x"] }],
    ["group empty", { groups: [""] }],
    ["no nodes", { nodes: [] }],
    ["no users or groups", { users: [], groups: [] }],
    ["too many nodes", { nodes: Array.from({ length: 10_001 }, (_, i) => `n${i}`) }],
  ];
  for (const [what, change] of bad) {
    it(`refuses ${what} with one line and touches nothing`, async () => {
      await assert.rejects(
        service().grant(ctxA, { ...req, ...change } as typeof req),
        code("invalid_argument"),
      );
      assert.deepEqual(spire.calls, []);
      assert.deepEqual(vault.calls, []);
    });
  }

  it("unauthenticated callers get nothing", async () => {
    await assert.rejects(service().grant({ requestId: "r" }, req), code("unauthenticated"));
    await assert.rejects(service().revoke({ requestId: "r" }, { secret: "data-1" }), code("unauthenticated"));
    await assert.rejects(service().listGrants({ requestId: "r" }), code("unauthenticated"));
    assert.deepEqual([...spire.calls, ...vault.calls], []);
  });

  for (const step of ["batchCreateEntries", "writePolicy", "writeJwtRole", "kvWriteMetadata"]) {
    it(`rolls back when ${step} fails`, async () => {
      await vault.kvWrite("hpcs/lab-a/data-1", { key: "k" });
      (step === "batchCreateEntries" ? spire : vault).failOn.set(step, boom(step));
      await assert.rejects(service().grant(ctxA, { ...req, expiresAt: new Date(Date.now() + 86400_000) }));
      assert.equal(spire.entries.size, 0);
      assert.equal(vault.policies.size, 0);
      assert.equal(vault.roles.size, 0);
      assert.deepEqual(
        (vault.kv.get("hpcs-server/grants/lab-a")?.versions.at(-1) ?? { secrets: {} }).secrets,
        {},
      );
    });
  }

  it("rolls back the created entries when SPIRE refuses some of the batch; keeps pre-existing ones", async () => {
    await service().grant(ctxA, { ...req, nodes: ["n1"] });
    assert.equal(spire.entries.size, 3);
    spire.refuseEntries.add(5);
    await assert.rejects(service().grant(ctxA, req), code("internal"));
    assert.equal(spire.entries.size, 3);
    assert.equal(vault.policies.size, 1, "the earlier grant's policy stays");
  });

  it("revoke removes entries, role, policy and (when asked) the secret; others' revoke finds nothing", async () => {
    await vault.kvWrite("hpcs/lab-a/data-1", { key: "k" });
    const g = await service().grant(ctxA, req);
    await assert.rejects(service().revoke(ctxB, { secret: "data-1" }), code("not_found"));
    assert.equal(spire.entries.size, 9);
    const r = await service().revoke(ctxA, { secret: "data-1", deleteSecret: true });
    assert.deepEqual(r, { entriesDeleted: 9, roleDeleted: true, policyDeleted: true, secretDeleted: true });
    assert.equal(spire.entries.size, 0);
    assert.ok(!vault.roles.has(g.vaultRole) && !vault.policies.has(g.vaultRole));
    assert.ok(!vault.kv.has("hpcs/lab-a/data-1"));
    assert.deepEqual(await service().listGrants(ctxA), []);
    await assert.rejects(service().revoke(ctxA, { secret: "data-1" }), code("not_found"));
    await assert.rejects(service().revoke(ctxA, { secret: "a;b" }), code("invalid_argument"));
  });

  describe("expiry and the sweeper", () => {
    let now = Date.parse("2030-01-01T00:00:00Z");
    const timed = () =>
      new GrantService({ config: testConfig("per-job"), spire, vault, caller: fakeCaller, now: () => now });
    const deadlines = () =>
      (vault.kv.get("hpcs-server/grant-expiries")?.versions.at(-1) as { grants?: object } | undefined)
        ?.grants ?? {};

    beforeEach(() => {
      now = Date.parse("2030-01-01T00:00:00Z");
    });

    it("records the deadline; a later grant without one clears it and the secret's metadata key", async () => {
      await vault.kvWrite("hpcs/lab-a/data-1", { key: "k" });
      const exp = new Date(now + 30_000);
      const res = await timed().grant(ctxA, { ...req, expiresAt: exp });
      assert.deepEqual(deadlines(), { "lab-a/data-1": exp.toISOString() });
      assert.equal(vault.roles.get(res.vaultRole)?.tokenTtlSec, 30, "token TTL = time left");
      await timed().grant(ctxA, req);
      assert.deepEqual(deadlines(), {});
      assert.deepEqual(vault.kv.get("hpcs/lab-a/data-1")?.customMetadata, {});
      assert.equal(vault.roles.get(res.vaultRole)?.tokenTtlSec, undefined);
    });

    it("refuses a deadline less than 10 s ahead", async () => {
      await assert.rejects(
        timed().grant(ctxA, { ...req, expiresAt: new Date(now + 9_000) }),
        code("invalid_argument"),
      );
      await timed().grant(ctxA, { ...req, expiresAt: new Date(now + 10_000) });
    });

    it("sweepExpired revokes expired grants with their secret and leaves the others", async () => {
      await vault.kvWrite("hpcs/lab-a/data-1", { key: "k" });
      await vault.kvWrite("hpcs/lab-a/data-2", { key: "k2" });
      const g1 = await timed().grant(ctxA, { ...req, expiresAt: new Date(now + 20_000) });
      await timed().grant(ctxA, { ...req, secret: "data-2", expiresAt: new Date(now + 120_000) });
      assert.deepEqual(await timed().sweepExpired(new Date(now + 19_999)), []);

      const swept = await timed().sweepExpired(new Date(now + 20_000));
      assert.deepEqual(swept, [
        {
          clientId: "lab-a",
          secret: "data-1",
          expiresAt: new Date(now + 20_000),
          removed: { entriesDeleted: 9, roleDeleted: true, policyDeleted: true, secretDeleted: true },
        },
      ]);
      assert.ok(!vault.roles.has(g1.vaultRole) && !vault.policies.has(g1.vaultRole));
      assert.ok(!vault.kv.has("hpcs/lab-a/data-1"));
      assert.ok(vault.kv.has("hpcs/lab-a/data-2"));
      assert.equal(spire.entries.size, 9);
      assert.deepEqual(Object.keys(deadlines()), ["lab-a/data-2"]);
      assert.deepEqual(
        (await timed().listGrants(ctxA)).map((g) => g.secret),
        ["data-2"],
      );
      assert.deepEqual(await timed().sweepExpired(new Date(now + 20_000)), []);
    });

    it("a failed sweep is reported and retried; revoke clears the deadline", async () => {
      await timed().grant(ctxA, { ...req, expiresAt: new Date(now + 20_000) });
      vault.failOn.set("deleteJwtRole", boom("deleteJwtRole"));
      const [failed] = await timed().sweepExpired(new Date(now + 60_000));
      assert.equal(failed?.removed, undefined);
      assert.ok(failed?.error && !failed.error.includes("\n"), failed?.error);
      assert.deepEqual(Object.keys(deadlines()), ["lab-a/data-1"]);
      vault.failOn.delete("deleteJwtRole");
      const [ok] = await timed().sweepExpired(new Date(now + 60_000));
      assert.equal(ok?.removed?.roleDeleted, true);
      assert.deepEqual(deadlines(), {});

      await timed().grant(ctxA, { ...req, secret: "data-3", expiresAt: new Date(now + 20_000) });
      await timed().revoke(ctxA, { secret: "data-3" });
      assert.deepEqual(deadlines(), {});
    });
  });
});
