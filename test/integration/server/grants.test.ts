import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { parseServerConfig, type ServerConfig } from "../../../lib/config/server-config.js";
import { SpiffeId } from "../../../lib/spiffe-id.js";
import { SpireServerClient } from "../../../lib/spire/server-client.js";
import { clientPolicyName, grantPolicyName, secretPath } from "../../../lib/vault/policies.js";
import { VaultClient } from "../../../lib/vault/vault-client.js";
import { VaultError } from "../../../lib/vault/vault-error.js";
import { CallerAuthenticator } from "../../../server/service/caller.js";
import { ClientRegistrar } from "../../../server/service/clients.js";
import { Enrollments } from "../../../server/service/enrollment.js";
import { GrantService } from "../../../server/service/grants.js";
import { type RegisterClientResponse, ServiceError } from "../../../server/service/types.js";
import { AgentWithToken } from "../../support/agent-with-token.js";
import { nonce } from "../../support/spire.js";
import { loadStackEnv, type StackEnv } from "../../support/stack-env.js";

// The real bench: SPIRE over its admin socket, Vault with the root token (the production server uses
// its own, narrower token), real spire-agents started from the join tokens registerClient hands out.
describe("server/service: enrollment, client registration and grants on the bench", function () {
  this.timeout(180_000);
  const n = nonce();
  const idA = `gr-${n}-a`;
  const idB = `gr-${n}-b`;
  const secret = `data-${n}`;
  const nodes = [1, 2, 3].map((i) => `gr-${n}-n${i}`);
  const users = ["alice", "bob"];
  const groups = ["proj"];
  const uidSelector = { type: "unix", value: `uid:${process.getuid?.() ?? 0}` };
  const warnings: string[] = [];

  let env: StackEnv;
  let config: ServerConfig;
  let spire: SpireServerClient;
  let vault: VaultClient;
  let enrollments: Enrollments;
  let registrar: ClientRegistrar;
  let grants: GrantService;
  const agents: AgentWithToken[] = [];
  let regA: RegisterClientResponse | undefined;
  let regB: RegisterClientResponse | undefined;
  let agentA: AgentWithToken | undefined;
  let agentB: AgentWithToken | undefined;
  let jwtA = "";
  let jwtB = "";

  before(async () => {
    env = loadStackEnv();
    config = parseServerConfig(
      `[spire-server]
address = ${env.spire.server_address}
port = ${env.spire.server_port}
trust-domain = ${env.trust_domain}
socket-path = ${env.spire.admin_socket}
[vault]
url = ${env.vault.url}
audience = vault
kv-mount = ${env.vault.kv_mount}
jwt-mount = ${env.vault.jwt_mount}
[hpcs-server]
agent-model = per-job
`,
      "grants.test.ini",
    );
    spire = new SpireServerClient({ socketPath: env.spire.admin_socket });
    vault = new VaultClient({
      url: env.vault.url,
      caPem: readFileSync(env.ca_cert),
      timeoutMs: 10_000,
      token: env.vault.root_token,
      kvMount: env.vault.kv_mount,
      jwtMount: env.vault.jwt_mount,
    });
    enrollments = new Enrollments({ vault });
    registrar = new ClientRegistrar({
      config,
      spire,
      vault,
      enrollments,
      logger: { warn: (_o, msg) => warnings.push(msg) },
    });
    const caller = new CallerAuthenticator({ spire, trustDomain: env.trust_domain });
    grants = new GrantService({ config, spire, vault, caller });
  });

  after(async () => {
    if (!spire) return;
    for (const a of agents) await a.stop().catch(() => undefined);
    for (const id of [idA, idB]) {
      const td = env.trust_domain;
      for (const sid of [SpiffeId.of(td, "c", id, "workload"), SpiffeId.of(td, "c", id, "s", secret)]) {
        const es = await spire.listEntries({ bySpiffeId: sid }).catch(() => []);
        if (es.length > 0) await spire.batchDeleteEntries(es.map((e) => e.id)).catch(() => undefined);
      }
      for (const name of [clientPolicyName(id), grantPolicyName(id, secret)]) {
        await vault.deleteJwtRole(name).catch(() => undefined);
        await vault.deletePolicy(name).catch(() => undefined);
      }
      for (const p of [`hpcs-server/enrollments/${id}`, `hpcs-server/grants/${id}`, secretPath(id, secret)]) {
        await vault.kvDestroyAll(p).catch(() => undefined);
      }
    }
    spire.close();
  });

  const code = (c: string | string[]) => (e: unknown) => {
    assert.ok(e instanceof ServiceError, String(e));
    assert.ok(([] as string[]).concat(c).includes(e.code), `${e.code}: ${e.message}`);
    assert.ok(!e.message.includes("\n"));
    return true;
  };
  const must = <T>(v: T | undefined, what: string): T => {
    if (v === undefined) throw new Error(`${what} missing (an earlier test failed)`);
    return v;
  };

  it("enrolls and registers two clients; a secret works once; a wrong one is refused", async () => {
    const a = await enrollments.enroll(idA, 600);
    const b = await enrollments.enroll(idB, 600);
    await assert.rejects(
      registrar.registerClient(
        { requestId: "t" },
        { clientName: idA, enrollmentSecret: b.secret, selectors: [uidSelector] },
      ),
      code("unauthenticated"),
    );
    regA = await registrar.registerClient(
      { requestId: "t" },
      { clientName: idA, enrollmentSecret: a.secret, selectors: [uidSelector] },
    );
    await assert.rejects(
      registrar.registerClient(
        { requestId: "t" },
        { clientName: idA, enrollmentSecret: a.secret, selectors: [uidSelector] },
      ),
      code("unauthenticated"),
    );
    await assert.rejects(enrollments.enroll(idA, 600), code("already_exists"));
    regB = await registrar.registerClient(
      { requestId: "t" },
      { clientName: idB, enrollmentSecret: b.secret, selectors: [uidSelector] },
    );
    assert.equal(regA.workloadSpiffeId, `spiffe://${env.trust_domain}/c/${idA}/workload`);
    assert.ok(regA.joinTokenExpiresAt.getTime() > Date.now());
    assert.equal(warnings.length, 0);
  });

  it("the join token starts a real agent; the workload gets JWT-SVIDs for hpcs-server and vault", async () => {
    const rA = must(regA, "client A");
    const rB = must(regB, "client B");
    agentA = await AgentWithToken.start(env, rA.joinToken);
    agents.push(agentA);
    agentB = await AgentWithToken.start(env, rB.joinToken);
    agents.push(agentB);
    jwtA = await agentA.fetchJwt("hpcs-server", rA.workloadSpiffeId);
    jwtB = await agentB.fetchJwt("hpcs-server", rB.workloadSpiffeId);
    const vaultJwt = await agentA.fetchJwt("vault", rA.workloadSpiffeId);
    assert.ok(vaultJwt);
    const caller = new CallerAuthenticator({ spire, trustDomain: env.trust_domain });
    assert.equal(await caller.authenticate({ requestId: "t", bearerJwt: jwtA }), idA);
    // A JWT-SVID for Vault is not one for the server.
    await assert.rejects(
      caller.authenticate({ requestId: "t", bearerJwt: vaultJwt }),
      code("unauthenticated"),
    );
  });

  it("grants 3 nodes × (2 users + 1 group) once, idempotently, and lists it", async () => {
    const ctx = { requestId: "t", bearerJwt: jwtA };
    const g = await grants.grant(ctx, { secret, nodes, users, groups });
    assert.equal(g.entriesCreated, 9);
    const again = await grants.grant(ctx, { secret, nodes, users, groups });
    assert.equal(again.entriesCreated, 0);
    assert.equal(again.entriesExisting, 9);
    const entries = await spire.listEntries({ bySpiffeId: SpiffeId.parse(g.spiffeId) });
    assert.equal(entries.length, 9);
    const parents = entries.map((e) => e.parentId.toString()).sort();
    assert.equal(new Set(parents).size, 9);
    assert.ok(parents.includes(`spiffe://${env.trust_domain}/h/${nodes[0]}/u/alice`));
    assert.ok(parents.includes(`spiffe://${env.trust_domain}/h/${nodes[2]}/g/proj`));
    assert.match((await vault.readPolicy(g.vaultRole)) ?? "", /capabilities = \["read"\]/);
    assert.equal((await vault.readJwtRole(g.vaultRole))?.boundSubject, g.spiffeId);

    const list = await grants.listGrants(ctx);
    assert.deepEqual(
      list.map((x) => [x.secret, x.nodes, x.users, x.groups]),
      [[secret, [...nodes].sort(), users, groups]],
    );
    assert.deepEqual(await grants.listGrants({ requestId: "t", bearerJwt: jwtB }), []);
  });

  it("the client's workload can create its secret through its Vault role but not read it", async () => {
    const rA = must(regA, "client A");
    const vaultJwt = await must(agentA, "agent A").fetchJwt("vault", rA.workloadSpiffeId);
    const login = await vault.loginJwt(rA.vaultRole, vaultJwt);
    const asClient = vault.withToken(login.token);
    await asClient.kvWrite(secretPath(idA, secret), { key: "k" }, { cas: 0 });
    await assert.rejects(asClient.kvRead(secretPath(idA, secret)), (e: unknown) => {
      assert.ok(e instanceof VaultError && e.status === 403, String(e));
      return true;
    });
    // Nor another client's prefix.
    await assert.rejects(asClient.kvWrite(secretPath(idB, secret), { key: "x" }), (e: unknown) => {
      assert.ok(e instanceof VaultError && e.status === 403, String(e));
      return true;
    });
    await asClient.revokeSelf().catch(() => undefined);
  });

  it("client B cannot revoke A's grant; forged and missing JWTs are refused", async () => {
    const spiffeIdA = SpiffeId.of(env.trust_domain, "c", idA, "s", secret);
    await assert.rejects(
      grants.revoke({ requestId: "t", bearerJwt: jwtB }, { secret }),
      code(["not_found", "permission_denied"]),
    );
    // B granting "the same" name only ever touches B's own namespace.
    const gB = await grants.grant(
      { requestId: "t", bearerJwt: jwtB },
      { secret, nodes: [nodes[0] as string], users: ["alice"], groups: [] },
    );
    assert.equal(gB.spiffeId, `spiffe://${env.trust_domain}/c/${idB}/s/${secret}`);
    await grants.revoke({ requestId: "t", bearerJwt: jwtB }, { secret });

    // A's payload with B's subject, A's signature: invalid.
    const [h, p, s] = jwtA.split(".");
    const claims = JSON.parse(Buffer.from(p ?? "", "base64url").toString()) as Record<string, unknown>;
    const forged = [
      h,
      Buffer.from(
        JSON.stringify({ ...claims, sub: `spiffe://${env.trust_domain}/c/${idB}/workload` }),
      ).toString("base64url"),
      s,
    ].join(".");
    await assert.rejects(
      grants.revoke({ requestId: "t", bearerJwt: forged }, { secret }),
      code("unauthenticated"),
    );
    await assert.rejects(grants.revoke({ requestId: "t" }, { secret }), code("unauthenticated"));
    assert.equal((await spire.listEntries({ bySpiffeId: spiffeIdA })).length, 9);
  });

  it("invalid names are refused with one line and create nothing", async () => {
    const ctx = { requestId: "t", bearerJwt: jwtA };
    const bad = `bad-${n}`;
    for (const change of [
      { nodes: ["a;b"] },
      { users: ["../x"] },
      { groups: ["g".repeat(300)] },
      { nodes: [] as string[] },
    ]) {
      await assert.rejects(
        grants.grant(ctx, { secret: bad, nodes, users, groups, ...change }),
        code("invalid_argument"),
      );
    }
    await assert.rejects(
      grants.grant(ctx, { secret: "a;b", nodes, users, groups }),
      code("invalid_argument"),
    );
    assert.equal(
      (await spire.listEntries({ bySpiffeId: SpiffeId.of(env.trust_domain, "c", idA, "s", bad) })).length,
      0,
    );
    assert.equal(await vault.readPolicy(grantPolicyName(idA, bad)), undefined);
    assert.equal(await vault.readJwtRole(grantPolicyName(idA, bad)), undefined);
  });

  it("revoke removes entries, role, policy and the secret", async () => {
    const ctx = { requestId: "t", bearerJwt: jwtA };
    const r = await grants.revoke(ctx, { secret, deleteSecret: true });
    assert.deepEqual(r, { entriesDeleted: 9, roleDeleted: true, policyDeleted: true, secretDeleted: true });
    const name = grantPolicyName(idA, secret);
    assert.equal(
      (await spire.listEntries({ bySpiffeId: SpiffeId.of(env.trust_domain, "c", idA, "s", secret) })).length,
      0,
    );
    assert.equal(await vault.readPolicy(name), undefined);
    assert.equal(await vault.readJwtRole(name), undefined);
    assert.equal(await vault.kvReadMetadata(secretPath(idA, secret)), undefined);
    assert.deepEqual(await grants.listGrants(ctx), []);
  });
});
