import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { httpsJson } from "../../support/https-json.js";
import { nonce, spireServer, TestAgent } from "../../support/spire.js";
import { loadStackEnv, type StackEnv } from "../../support/stack-env.js";

// SPIRE server (admin socket) -> join token -> spire-agent -> JWT-SVID -> Vault jwt login -> kv.
describe("stack: SPIRE and Vault", () => {
  const n = nonce();
  let env: StackEnv;
  let ca: Buffer;
  let agentId = "";
  let workloadId = "";
  before(() => {
    env = loadStackEnv();
    ca = readFileSync(env.ca_cert);
    agentId = `spiffe://${env.trust_domain}/smoke/agent-${n}`;
    workloadId = `spiffe://${env.trust_domain}/smoke/workload-${n}`;
  });
  const vault = (path: string, method = "GET", body?: unknown, token = env.vault.root_token) =>
    httpsJson(`${env.vault.url}/v1/${path}`, { ca, method, body, headers: { "x-vault-token": token } });
  let agent: TestAgent | undefined;
  let jwt = "";

  after(async () => {
    if (!env) return;
    await agent?.stop();
    await vault(`auth/jwt/role/smoke-${n}`, "DELETE");
    await vault(`sys/policies/acl/smoke-${n}`, "DELETE");
    await vault(`kv/metadata/smoke/${n}`, "DELETE");
  });

  it("creates a join token through the admin API socket", async () => {
    const t = (await spireServer(env, ["token", "generate", "-ttl", "60"])) as { value: string };
    assert.match(t.value, /^[0-9a-f-]{36}$/);
  });

  it("attests a spire-agent with a join token and issues a JWT-SVID to a registered workload", async () => {
    agent = await TestAgent.start(env, agentId);
    await agent.register(workloadId, ["unix:uid:0"]);
    jwt = await agent.fetchJwt("vault");
    const claims = JSON.parse(Buffer.from(jwt.split(".")[1] ?? "", "base64url").toString("utf8"));
    assert.equal(claims.sub, workloadId);
    assert.deepEqual(claims.aud, ["vault"]);
    assert.equal(claims.iss, env.spire.jwt_issuer);
  });

  it("serves SPIRE's JWT signing keys through the OIDC discovery provider", async () => {
    const doc = await httpsJson(`${env.oidc.url}/.well-known/openid-configuration`, { ca });
    assert.equal(doc.status, 200);
    assert.equal(doc.body.issuer, env.spire.jwt_issuer);
    const keys = await httpsJson(doc.body.jwks_uri, { ca });
    const kid = JSON.parse(Buffer.from(jwt.split(".")[0] ?? "", "base64url").toString("utf8")).kid;
    assert.ok(
      keys.body.keys.some((k: { kid: string }) => k.kid === kid),
      "JWT-SVID's kid is in the JWKS",
    );
  });

  it("logs in to Vault's jwt auth with the JWT-SVID and writes and reads kv", async () => {
    const policy = `path "kv/data/smoke/${n}/*" { capabilities = ["create", "read", "update"] }`;
    assert.equal((await vault(`sys/policies/acl/smoke-${n}`, "PUT", { policy })).status, 204);
    const role = {
      role_type: "jwt",
      user_claim: "sub",
      bound_audiences: ["vault"],
      bound_subject: workloadId,
      token_policies: [`smoke-${n}`],
      token_ttl: "2m",
    };
    assert.equal((await vault(`auth/jwt/role/smoke-${n}`, "POST", role)).status, 204);

    const login = await vault("auth/jwt/login", "POST", { role: `smoke-${n}`, jwt }, "");
    assert.equal(login.status, 200, JSON.stringify(login.body));
    const token: string = login.body.auth.client_token;
    assert.ok(login.body.auth.policies.includes(`smoke-${n}`));

    const w = await vault(`kv/data/smoke/${n}/secret`, "POST", { data: { key: `value-${n}` } }, token);
    assert.equal(w.status, 200, JSON.stringify(w.body));
    const r = await vault(`kv/data/smoke/${n}/secret`, "GET", undefined, token);
    assert.equal(r.body.data.data.key, `value-${n}`);

    // Least privilege holds: the same token cannot read outside its path.
    const other = await vault("kv/data/smoke/elsewhere", "GET", undefined, token);
    assert.equal(other.status, 403);
  });

  it("refuses a JWT-SVID whose subject the role is not bound to", async () => {
    const role = {
      role_type: "jwt",
      user_claim: "sub",
      bound_audiences: ["vault"],
      bound_subject: `${workloadId}-x`,
    };
    assert.equal((await vault(`auth/jwt/role/smoke-${n}`, "POST", role)).status, 204);
    const login = await vault("auth/jwt/login", "POST", { role: `smoke-${n}`, jwt }, "");
    assert.equal(login.status, 400);
    assert.match(JSON.stringify(login.body.errors), /sub/);
  });
});
