import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { SpiffeId } from "../../../lib/spiffe-id.js";
import { clientRole, grantRole } from "../../../lib/vault/jwt-role.js";
import {
  clientPolicy,
  clientPolicyName,
  grantPolicy,
  grantPolicyName,
  secretPath,
  serverPolicy,
} from "../../../lib/vault/policies.js";
import { type KeeperEvent, TokenKeeper } from "../../../lib/vault/token-keeper.js";
import { VaultClient } from "../../../lib/vault/vault-client.js";
import { VaultError } from "../../../lib/vault/vault-error.js";
import { httpsJson } from "../../support/https-json.js";
import { nonce, TestAgent } from "../../support/spire.js";
import { loadStackEnv, type StackEnv } from "../../support/stack-env.js";

// The real bench Vault and SPIRE: root writes policies and roles from policies.ts / jwt-role.ts, a real
// spire-agent issues JWT-SVIDs, and the tokens they log in to are held to exactly what the design allows.
describe("vault: client, policies and token keeper against the bench's Vault", () => {
  const n = nonce();
  const clientId = `it-${n}`;
  const otherId = `it-${n}-other`;
  const secret = "dataset-1";
  const audience = "vault";
  let env: StackEnv;
  let root: VaultClient;
  let agent: TestAgent | undefined;
  let keeper: TokenKeeper | undefined;
  let workloadId = "";
  let grantId = "";
  const policies: string[] = [];
  const roles: string[] = [];
  const kvPaths = new Set<string>();

  before(async () => {
    env = loadStackEnv();
    root = new VaultClient({
      url: env.vault.url,
      caPem: readFileSync(env.ca_cert),
      timeoutMs: 10_000,
      token: env.vault.root_token,
      kvMount: env.vault.kv_mount,
      jwtMount: env.vault.jwt_mount,
    });
    workloadId = SpiffeId.of(env.trust_domain, "c", clientId, "workload").toString();
    grantId = SpiffeId.of(env.trust_domain, "c", clientId, "s", secret).toString();
    agent = await TestAgent.start(env, `spiffe://${env.trust_domain}/it-vault/agent-${n}`);
    const uid = `unix:uid:${process.getuid?.() ?? 0}`;
    await agent.register(workloadId, [uid]);
    await agent.register(grantId, [uid]);
  });

  after(async () => {
    keeper?.stop();
    if (!root) return;
    for (const p of kvPaths) await root.kvDestroyAll(p).catch(() => undefined);
    for (const r of roles) await root.deleteJwtRole(r).catch(() => undefined);
    for (const p of policies) await root.deletePolicy(p).catch(() => undefined);
    await agent?.stop();
  });

  const kvMount = () => env.vault.kv_mount;
  const theAgent = (): TestAgent => {
    if (!agent) throw new Error("spire-agent did not start (see before hook)");
    return agent;
  };
  const client = (token: string) => root.withToken(token);
  const denied = async (p: Promise<unknown>, what: string) => {
    await assert.rejects(p, (e: unknown) => {
      assert.ok(e instanceof VaultError, `${what}: ${String(e)}`);
      assert.equal(e.status, 403, `${what}: ${e.message}`);
      assert.ok(!e.message.includes("\n"));
      return true;
    });
  };

  async function writeClientRole(name: string, ttl?: { tokenTtlSec: number; tokenMaxTtlSec: number }) {
    const { spec } = clientRole({ trustDomain: env.trust_domain, clientId, audiences: [audience], ...ttl });
    roles.push(name);
    await root.writeJwtRole(name, spec);
    return spec;
  }

  it("writes the client policy and a jwt role bound to the client's SPIFFE ID", async () => {
    const name = clientPolicyName(clientId);
    const hcl = clientPolicy(clientId, { kvMount: kvMount() });
    policies.push(name);
    await root.writePolicy(name, hcl);
    assert.equal(await root.readPolicy(name), hcl);
    const spec = await writeClientRole(name);
    assert.deepEqual(await root.readJwtRole(name), spec);
    assert.equal(spec.boundSubject, workloadId);
  });

  it("logs in with a real JWT-SVID; the client may create but not read, update or touch another client", async () => {
    const jwt = await theAgent().fetchJwt(audience, workloadId);
    const login = await root.loginJwt(clientPolicyName(clientId), jwt);
    assert.ok(login.policies.includes(clientPolicyName(clientId)), login.policies.join(","));
    assert.ok(login.leaseDurationSec > 0);
    const c = client(login.token);

    const path = secretPath(clientId, secret);
    kvPaths.add(path);
    assert.equal(await c.kvWrite(path, { key: `k-${n}` }, { cas: 0 }), 1);
    await denied(c.kvRead(path), "read own secret");
    await denied(c.kvWrite(path, { key: "overwrite" }), "update own secret");
    await denied(c.kvReadMetadata(path), "read own metadata");
    await denied(c.kvDestroyAll(path), "destroy own secret");

    const other = secretPath(otherId, secret);
    kvPaths.add(other);
    await denied(c.kvWrite(other, { key: "x" }), "create under another client");
    await denied(c.readPolicy(clientPolicyName(clientId)), "read policies");
    assert.deepEqual((await root.kvRead(path))?.data, { key: `k-${n}` });
  });

  it("refuses a JWT-SVID fetched for another audience, in one line", async () => {
    const jwt = await theAgent().fetchJwt(`not-vault-${n}`, workloadId);
    await assert.rejects(root.loginJwt(clientPolicyName(clientId), jwt), (e: unknown) => {
      assert.ok(e instanceof VaultError);
      assert.match(e.message, /^vault jwt login auth\/[a-z0-9_/-]+\/login: 400 .*aud/);
      assert.ok(!e.message.includes(jwt) && !e.message.includes("\n"), e.message);
      return true;
    });
  });

  it("a grant's token reads exactly its secret and nothing else", async () => {
    const name = grantPolicyName(clientId, secret);
    policies.push(name);
    await root.writePolicy(name, grantPolicy(clientId, secret, { kvMount: kvMount() }));
    const { spec } = grantRole({ trustDomain: env.trust_domain, clientId, secret, audiences: [audience] });
    roles.push(name);
    await root.writeJwtRole(name, spec);

    const sibling = secretPath(clientId, "dataset-2");
    kvPaths.add(sibling);
    await root.kvWrite(sibling, { key: "sibling" });

    const login = await root.loginJwt(name, await theAgent().fetchJwt(audience, grantId));
    const g = client(login.token);
    assert.deepEqual((await g.kvRead(secretPath(clientId, secret)))?.data, { key: `k-${n}` });
    await denied(g.kvRead(sibling), "read a sibling secret");
    await denied(g.kvWrite(secretPath(clientId, secret), { key: "x" }), "update the granted secret");
    await denied(g.kvWrite(secretPath(clientId, "new"), { key: "x" }), "create next to it");
    await denied(g.kvReadMetadata(secretPath(clientId, secret)), "read its metadata");

    // The client's own SVID cannot log in to the grant's role.
    const cjwt = await theAgent().fetchJwt(audience, workloadId);
    await assert.rejects(
      root.loginJwt(name, cjwt),
      (e: unknown) => e instanceof VaultError && e.status === 400,
    );
  });

  it("writes and reads kv metadata", async () => {
    const path = secretPath(clientId, secret);
    await root.kvWriteMetadata(path, {
      customMetadata: { owner: clientId, grant: grantPolicyName(clientId, secret) },
      deleteVersionAfterSec: 3600,
    });
    const md = await root.kvReadMetadata(path);
    assert.deepEqual(md?.customMetadata, { owner: clientId, grant: grantPolicyName(clientId, secret) });
    assert.equal(md?.deleteVersionAfter, "1h0m0s");
    assert.equal(md?.currentVersion, 1);
    assert.deepEqual((await root.kvRead(path))?.customMetadata, md?.customMetadata);
    assert.equal(await root.kvRead(secretPath(clientId, "absent")), undefined);
  });

  it("the hpcs-server policy manages hpcs-* roles and policies, but not its own, nor anything else", async () => {
    const self = `hpcs-server-it-${n}`;
    policies.push(self);
    await root.writePolicy(self, serverPolicy({ serverRole: self, jwtMount: env.vault.jwt_mount }));
    const created = await httpsJson(`${env.vault.url}/v1/auth/token/create`, {
      ca: readFileSync(env.ca_cert),
      method: "POST",
      headers: { "x-vault-token": env.vault.root_token },
      body: { policies: [self], ttl: "2m", no_parent: true },
    });
    assert.equal(created.status, 200, JSON.stringify(created.body?.errors));
    const server = client(created.body.auth.client_token as string);
    try {
      const managed = `hpcs-client-it-${n}-m`;
      policies.push(managed);
      roles.push(managed);
      await server.writePolicy(managed, clientPolicy(`it-${n}-m`, { kvMount: kvMount() }));
      assert.equal(await server.readPolicy(managed), clientPolicy(`it-${n}-m`, { kvMount: kvMount() }));
      const { spec } = clientRole({
        trustDomain: env.trust_domain,
        clientId: `it-${n}-m`,
        audiences: [audience],
      });
      await server.writeJwtRole(managed, spec);
      await server.deleteJwtRole(managed);
      await server.deletePolicy(managed);

      await denied(server.writePolicy(self, 'path "*" { capabilities = ["sudo"] }'), "widen its own policy");
      await denied(server.writeJwtRole(self, spec), "rebind its own role");
      policies.push(`other-${n}`);
      roles.push(`other-${n}`);
      await denied(server.writePolicy(`other-${n}`, ""), "write a non-hpcs policy");
      await denied(server.writeJwtRole(`other-${n}`, spec), "write a non-hpcs role");
      await denied(server.kvRead(secretPath(clientId, secret)), "read a secret");
      await denied(server.kvWrite(secretPath(clientId, "by-server"), { k: "v" }), "write a secret");
      assert.equal(
        await root.readPolicy(self),
        serverPolicy({ serverRole: self, jwtMount: env.vault.jwt_mount }),
      );
    } finally {
      await server.revokeSelf().catch(() => undefined);
    }
  });

  it("the token keeper keeps a login alive past the role's max TTL (token_ttl=3s, token_max_ttl=6s)", async function () {
    this.timeout(60_000);
    const name = `${clientPolicyName(clientId)}-ttl`;
    await writeClientRole(name, { tokenTtlSec: 3, tokenMaxTtlSec: 6 });
    const events: KeeperEvent[] = [];
    keeper = await TokenKeeper.start({
      login: async () => root.loginJwt(name, await theAgent().fetchJwt(audience, workloadId)),
      renew: (t) => root.renewSelf(t),
      onEvent: (e) => events.push(e),
    });
    const first = keeper.token();
    const k = root.withToken(() => (keeper as TokenKeeper).token());
    const started = Date.now();
    let i = 0;
    // Bounded polling: a write every 500 ms for at least 9 s (1.5 x max TTL), at most 30 s.
    while (Date.now() - started < 9_000 || events.filter((e) => e.kind === "login").length < 2) {
      assert.ok(Date.now() - started < 30_000, `no re-login within 30 s: ${JSON.stringify(events)}`);
      const path = secretPath(clientId, `keeper-${i++}`);
      kvPaths.add(path);
      await k.kvWrite(path, { i });
      await new Promise((r) => setTimeout(r, 500));
    }
    assert.ok(
      events.some((e) => e.kind === "renewed"),
      "renewed at least once",
    );
    assert.notEqual(keeper.token(), first, "a new login replaced the first token");
    // The first token is past its max TTL: Vault no longer knows it.
    await assert.rejects(root.renewSelf(first), (e: unknown) => e instanceof VaultError && e.status === 403);
    keeper.stop();
  });
});
