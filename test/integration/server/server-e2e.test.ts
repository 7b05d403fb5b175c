import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { SpiffeId } from "../../../lib/spiffe-id.js";
import { SpireServerClient } from "../../../lib/spire/server-client.js";
import { clientPolicyName, grantPolicyName, secretPath } from "../../../lib/vault/policies.js";
import { VaultClient } from "../../../lib/vault/vault-client.js";
import { VaultError } from "../../../lib/vault/vault-error.js";
import { nodeTokenPath } from "../../../server/service/node-attestation.js";
import { AgentWithToken } from "../../support/agent-with-token.js";
import { eventually } from "../../support/exec.js";
import { HpcsServerProcess } from "../../support/hpcs-server.js";
import { httpsJson, type JsonResponse } from "../../support/https-json.js";
import { nonce } from "../../support/spire.js";
import { loadStackEnv, type StackEnv } from "../../support/stack-env.js";

// From dist/test/integration/server/: four levels up is the repository root, which holds proto/.
const PROTO = fileURLToPath(new URL("../../../../proto/hpcs/v1/hpcs.proto", import.meta.url));

type Unary = (
  req: object,
  md: grpc.Metadata,
  cb: (err: grpc.ServiceError | null, res: never) => void,
) => void;
type HpcsStub = grpc.Client & Record<"Grant" | "Revoke" | "ListGrants" | "Health", Unary>;

interface GrantSummaryMsg {
  secret: string;
  spiffe_id: string;
  vault_role: string;
  nodes: string[];
  users: string[];
  groups: string[];
}

// The real `hpcs-server serve` process, bootstrapped like an operator would (test/support/hpcs-server.ts),
// on the real bench: SPIRE, Vault, real spire-agents started from the join tokens it hands out. Every
// call goes over the network: JSON/HTTP, the original's /api routes, and gRPC with TLS.
describe("hpcs-server end to end (real process, HTTP + gRPC)", function () {
  this.timeout(180_000);
  const n = nonce();
  const idA = `e2e-${n}-a`;
  const idB = `e2e-${n}-b`;
  const secret = `data-${n}`;
  const secret2 = `late-${n}`;
  const badSecret = `bad-${n}`;
  const node = `e2e-${n}-node`;
  const nodes = [1, 2, 3].map((i) => `e2e-${n}-n${i}`);
  const users = ["alice", "bob"];
  const groups = ["proj"];
  const uid0 = [{ type: "unix", value: "uid:0" }];

  let env: StackEnv;
  let ca: Buffer;
  let srv: HpcsServerProcess | undefined;
  let spire: SpireServerClient;
  let root: VaultClient;
  let stub: HpcsStub | undefined;
  const agents: AgentWithToken[] = [];
  const issuedNodeTokens: string[] = [];
  const nodeAliases: string[] = [];
  let agentA: AgentWithToken | undefined;
  let agentB: AgentWithToken | undefined;
  let workloadA = "";
  let workloadB = "";
  let vaultRoleA = "";

  const must = <T>(v: T | undefined, what: string): T => {
    if (v === undefined) throw new Error(`${what} missing (an earlier test failed)`);
    return v;
  };
  const server = () => must(srv, "server");
  const jwtA = (aud = "hpcs-server") => must(agentA, "agent A").fetchJwt(aud, workloadA);
  const jwtB = (aud = "hpcs-server") => must(agentB, "agent B").fetchJwt(aud, workloadB);

  const http = (method: string, path: string, body?: unknown, jwt?: string): Promise<JsonResponse> =>
    httpsJson(`${server().url}${path}`, {
      ca,
      method,
      body,
      headers: jwt ? { authorization: `Bearer ${jwt}` } : {},
    });

  const rpc = <T>(method: "Grant" | "Revoke" | "ListGrants" | "Health", req: object, jwt: string) =>
    new Promise<T>((resolve, reject) => {
      const md = new grpc.Metadata();
      md.set("authorization", `Bearer ${jwt}`);
      must(stub, "gRPC stub")[method](req, md, (err, res) => (err ? reject(err) : resolve(res as T)));
    });

  const entriesOf = async (...segments: string[]) =>
    (await spire.listEntries({ bySpiffeId: SpiffeId.of(env.trust_domain, ...segments) })).length;

  /** A failed HTTP call: the status, and a one-line error naming the problem. */
  const refused = (r: JsonResponse, status: number, match?: RegExp) => {
    assert.equal(r.status, status, JSON.stringify(r.body));
    const msg = String(r.body?.error?.message ?? r.body?.message ?? "");
    assert.ok(msg.length > 0 && !msg.includes("\n"), `one-line message: ${JSON.stringify(r.body)}`);
    if (match) assert.match(msg, match);
  };

  before(async () => {
    env = loadStackEnv();
    ca = readFileSync(env.ca_cert);
    spire = new SpireServerClient({ socketPath: env.spire.admin_socket });
    root = new VaultClient({
      url: env.vault.url,
      caPem: ca,
      timeoutMs: 10_000,
      token: env.vault.root_token,
      kvMount: env.vault.kv_mount,
      jwtMount: env.vault.jwt_mount,
    });
    srv = await HpcsServerProcess.start(env);
    const def = protoLoader.loadSync(PROTO, { keepCase: true, longs: Number, enums: String, defaults: true });
    const pkg = grpc.loadPackageDefinition(def) as unknown as {
      hpcs: { v1: { Hpcs: grpc.ServiceClientConstructor } };
    };
    stub = new pkg.hpcs.v1.Hpcs(srv.grpcAddress, grpc.credentials.createSsl(ca)) as unknown as HpcsStub;
  });

  after(async () => {
    stub?.close();
    for (const a of agents) await a.stop().catch(() => undefined);
    if (spire) {
      const td = env.trust_domain;
      const ids: SpiffeId[] = [];
      for (const id of [idA, idB]) {
        ids.push(SpiffeId.of(td, "c", id), SpiffeId.of(td, "c", id, "workload"));
        for (const s of [secret, secret2, badSecret]) ids.push(SpiffeId.of(td, "c", id, "s", s));
      }
      ids.push(SpiffeId.of(td, "h", node, "u", "alice"), ...nodeAliases.map((a) => SpiffeId.parse(a)));
      for (const sid of ids) {
        const es = await spire.listEntries({ bySpiffeId: sid }).catch(() => []);
        if (es.length > 0) await spire.batchDeleteEntries(es.map((e) => e.id)).catch(() => undefined);
      }
      for (const id of [idA, idB]) {
        const names = [
          clientPolicyName(id),
          ...[secret, secret2, badSecret].map((s) => grantPolicyName(id, s)),
        ];
        for (const name of names) {
          await root.deleteJwtRole(name).catch(() => undefined);
          await root.deletePolicy(name).catch(() => undefined);
        }
        const paths = [`hpcs-server/enrollments/${id}`, `hpcs-server/grants/${id}`];
        for (const s of [secret, secret2, badSecret]) paths.push(secretPath(id, s));
        for (const p of paths) await root.kvDestroyAll(p).catch(() => undefined);
      }
      for (const t of issuedNodeTokens) {
        await root.kvDestroyAll(nodeTokenPath("hpcs-server/node-tokens", t)).catch(() => undefined);
      }
      spire.close();
    }
    await srv?.stop();
  });

  it("enrolls client A (CLI), registers it over HTTP and its workload gets JWT-SVIDs", async () => {
    const bad = await server().run(["enroll", "a;b", "--json"]);
    assert.equal(bad.code, 2);
    assert.equal(bad.stderr.trim().split("\n").length, 1, bad.stderr);

    const e = await server().enroll(idA);
    assert.equal(e.clientName, idA);
    const r = await http("POST", "/v1/clients/register", {
      clientName: idA,
      enrollmentSecret: e.enrollmentSecret,
      selectors: uid0,
    });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.workloadSpiffeId, `spiffe://${env.trust_domain}/c/${idA}/workload`);
    workloadA = r.body.workloadSpiffeId as string;
    vaultRoleA = r.body.vaultRole as string;

    // The secret is single-use.
    refused(
      await http("POST", "/v1/clients/register", {
        clientName: idA,
        enrollmentSecret: e.enrollmentSecret,
        selectors: uid0,
      }),
      401,
    );

    agentA = await AgentWithToken.start(env, r.body.joinToken as string);
    agents.push(agentA);
    assert.match(await jwtA(), /^ey/);
    assert.match(await jwtA("vault"), /^ey/);
  });

  it("grants a secret to 3 nodes × 2 users + 1 group (HTTP) and lists it over gRPC", async () => {
    const r = await http("POST", "/v1/grants", { secret, nodes, users, groups }, await jwtA());
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.spiffeId, `spiffe://${env.trust_domain}/c/${idA}/s/${secret}`);
    assert.equal(r.body.entriesCreated, 9);
    assert.equal(await entriesOf("c", idA, "s", secret), 9);

    const list = await rpc<{ grants: GrantSummaryMsg[] }>("ListGrants", {}, await jwtA());
    const g = list.grants.find((x) => x.secret === secret);
    assert.ok(g, JSON.stringify(list));
    assert.deepEqual([...g.nodes].sort(), [...nodes].sort());
    assert.deepEqual([...g.users].sort(), users);
    assert.deepEqual(g.groups, groups);
  });

  it("lets the client's workload create the secret in Vault, but not read it", async () => {
    const anon = new VaultClient({
      url: env.vault.url,
      caPem: ca,
      timeoutMs: 10_000,
      kvMount: env.vault.kv_mount,
      jwtMount: env.vault.jwt_mount,
    });
    const login = await anon.loginJwt(vaultRoleA, await jwtA("vault"));
    const client = anon.withToken(login.token);
    await client.kvWrite(secretPath(idA, secret), { key: `k-${n}` });
    await assert.rejects(
      client.kvRead(secretPath(idA, secret)),
      (e: unknown) => e instanceof VaultError && e.status === 403,
    );
  });

  it("refuses a wrong audience, invalid names (nothing created) and another client's JWT", async () => {
    // A JWT-SVID of A, but for Vault's audience.
    refused(await http("POST", "/v1/grants", { secret, nodes, users }, await jwtA("vault")), 401, /audience/);
    await assert.rejects(rpc("ListGrants", {}, await jwtA("vault")), (e: grpc.ServiceError) => {
      assert.equal(e.code, grpc.status.UNAUTHENTICATED);
      return true;
    });

    const jwt = await jwtA();
    for (const bad of ["a;b", "../x", "x".repeat(300), ""]) {
      refused(await http("POST", "/v1/grants", { secret: bad, nodes, users }, jwt), 400, /secret/);
      refused(await http("POST", "/v1/grants", { secret: badSecret, nodes: [bad], users }, jwt), 400);
      refused(await http("POST", "/v1/grants", { secret: badSecret, nodes, users: [bad] }, jwt), 400);
      refused(await http("POST", "/v1/grants", { secret: badSecret, nodes, groups: [bad] }, jwt), 400);
    }
    assert.equal(await entriesOf("c", idA, "s", badSecret), 0);
    assert.equal(await root.readPolicy(grantPolicyName(idA, badSecret)), undefined);
    assert.equal(await root.readJwtRole(grantPolicyName(idA, badSecret)), undefined);

    // Client B, through the original's routes.
    const e = await server().enroll(idB);
    const reg = await http("POST", "/api/client/register", {
      client_name: idB,
      enrollment_secret: e.enrollmentSecret,
      selectors: uid0,
    });
    assert.equal(reg.status, 200, JSON.stringify(reg.body));
    assert.equal(reg.body.success, true);
    assert.equal(reg.body.client_id, idB);
    workloadB = reg.body.workload_spiffeID as string;
    refused(
      await http("POST", "/api/client/register", {
        client_name: idB,
        enrollment_secret: e.enrollmentSecret,
        selectors: uid0,
      }),
      401,
    );
    agentB = await AgentWithToken.start(env, reg.body.token as string);
    agents.push(agentB);

    // B names A's secret: it gets a grant in its own namespace, A's is untouched.
    const cw = await http("POST", "/api/client/create-workloads", {
      secret,
      jwt: await jwtB(),
      compute_nodes: [nodes[0]],
      users: ["alice"],
      groups: [],
    });
    assert.equal(cw.status, 200, JSON.stringify(cw.body));
    assert.equal(cw.body.success, true);
    assert.equal(cw.body.spiffeID, `spiffe://${env.trust_domain}/c/${idB}/s/${secret}`);
    assert.equal(cw.body.secrets_path, `hpcs/${idB}/${secret}`);
    assert.deepEqual(cw.body.compute_nodes_added, { [nodes[0] as string]: { users: ["alice"], groups: [] } });
    const listB = await rpc<{ grants: GrantSummaryMsg[] }>("ListGrants", {}, await jwtB());
    assert.deepEqual(
      listB.grants.map((g) => g.spiffe_id),
      [`spiffe://${env.trust_domain}/c/${idB}/s/${secret}`],
    );
    // B's revoke removes only B's grant; a second one finds nothing; A's 9 entries stay.
    const rv = await http("DELETE", `/v1/grants/${secret}`, undefined, await jwtB());
    assert.equal(rv.status, 200, JSON.stringify(rv.body));
    assert.equal(rv.body.entriesDeleted, 1);
    refused(await http("DELETE", `/v1/grants/${secret}`, undefined, await jwtB()), 404);
    await assert.rejects(rpc("Revoke", { secret }, await jwtB()), (err: grpc.ServiceError) => {
      assert.equal(err.code, grpc.status.NOT_FOUND);
      return true;
    });
    assert.equal(await entriesOf("c", idA, "s", secret), 9);
    assert.ok(await root.readJwtRole(grantPolicyName(idA, secret)));
  });

  it("issues operator node tokens (CLI) that work once, for exactly their node and user", async () => {
    const alice = await server().nodeToken(node, "alice");
    const bob = await server().nodeToken(node, "bob");
    issuedNodeTokens.push(alice.operatorToken, bob.operatorToken);

    // bob's token, presented for alice: a real token, but not for this user.
    refused(
      await http("POST", `/api/agents/token?hostname=${node}&user=alice`, {
        operator_token: bob.operatorToken,
      }),
      403,
      /another node or user/,
    );
    const ok = await http("POST", `/api/agents/token?hostname=${node}&user=alice`, {
      operator_token: alice.operatorToken,
    });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.equal(ok.body.success, true);
    assert.equal(ok.body.spiffeID, `spiffe://${env.trust_domain}/h/${node}/u/alice`);
    assert.match(ok.body.token as string, /^[A-Za-z0-9-]+$/);
    nodeAliases.push(ok.body.spiffeID as string, ...(ok.body.aliases as string[]));
    // Used once.
    refused(
      await http("POST", `/api/agents/token?hostname=${node}&user=alice`, {
        operator_token: alice.operatorToken,
      }),
      401,
    );
  });

  it("issues a job token over /v1/nodes/token and removes its aliases at /v1/nodes/end-job", async () => {
    const issued = await server().nodeToken(node, "bob");
    issuedNodeTokens.push(issued.operatorToken);
    const tok = await http("POST", "/v1/nodes/token", {
      node,
      user: "bob",
      operatorToken: issued.operatorToken,
    });
    assert.equal(tok.status, 200, JSON.stringify(tok.body));
    assert.equal(tok.body.agentSpiffeId, `spiffe://${env.trust_domain}/h/${node}/u/bob`);
    nodeAliases.push(tok.body.agentSpiffeId as string, ...(tok.body.aliases as string[]));
    assert.equal(await entriesOf("h", node, "u", "bob"), 1);

    // Only the holder of the join token can end the job, and only for its own node and user.
    refused(
      await http("POST", "/v1/nodes/end-job", { node, user: "alice", joinToken: tok.body.joinToken }),
      403,
    );
    const end = await http("POST", "/v1/nodes/end-job", { node, user: "bob", joinToken: tok.body.joinToken });
    assert.equal(end.status, 200, JSON.stringify(end.body));
    assert.equal(await entriesOf("h", node, "u", "bob"), 0);
  });

  it("is stateless: after a restart the grant is still listed; revoke (gRPC) removes entries, role, policy", async () => {
    await server().restart();
    const list = await rpc<{ grants: GrantSummaryMsg[] }>("ListGrants", {}, await jwtA());
    assert.ok(
      list.grants.some((g) => g.secret === secret),
      JSON.stringify(list),
    );
    const r = await rpc<{ entries_deleted: number; role_deleted: boolean; policy_deleted: boolean }>(
      "Revoke",
      { secret, delete_secret: true },
      await jwtA(),
    );
    assert.equal(r.entries_deleted, 9);
    assert.equal(r.role_deleted, true);
    assert.equal(r.policy_deleted, true);
    assert.equal(await entriesOf("c", idA, "s", secret), 0);
    assert.equal(await root.readJwtRole(grantPolicyName(idA, secret)), undefined);
    assert.equal(await root.readPolicy(grantPolicyName(idA, secret)), undefined);
    const after = await rpc<{ grants: GrantSummaryMsg[] }>("ListGrants", {}, await jwtA());
    assert.ok(!after.grants.some((g) => g.secret === secret));
  });

  it("survives its own Vault token expiring (token_ttl 4s, token_max_ttl 8s)", async () => {
    await server().setRoleTtl(4, 8);
    try {
      await server().restart();
      const from = server().log.length;
      const started = Date.now();
      // The token issued at start-up cannot outlive 8 s: wait for the server's next login, and past 10 s.
      await eventually("a fresh Vault login after token_max_ttl", 30_000, async () => {
        const logins =
          server()
            .log.slice(from)
            .match(/"vault":"login"/g) ?? [];
        if (logins.length < 2 || Date.now() - started < 10_000) throw new Error(`${logins.length} logins`);
      });
      const r = await http(
        "POST",
        "/v1/grants",
        { secret: secret2, nodes: [nodes[0]], users: ["alice"] },
        await jwtA(),
      );
      assert.equal(r.status, 200, JSON.stringify(r.body));
      const rv = await http("DELETE", `/v1/grants/${secret2}`, undefined, await jwtA());
      assert.equal(rv.status, 200, JSON.stringify(rv.body));
      assert.equal(await entriesOf("c", idA, "s", secret2), 0);
    } finally {
      await server().setRoleTtl(120, 600);
    }
  });

  it("writes its audit lines to stdout by default, whole JSON lines between pino's", () => {
    const lines = server().log.trim().split("\n").slice(1); // the first may be cut by the log buffer
    const parsed = lines.map((l) => {
      try {
        return JSON.parse(l) as {
          type?: string;
          action?: string;
          result?: string;
          target?: { secret?: string };
        };
      } catch {
        throw new Error(`not one JSON object per line: ${l.slice(0, 200)}`);
      }
    });
    const audit = parsed.filter((l) => l.type === "audit");
    assert.ok(
      audit.some((l) => l.action === "grant.create" && l.result === "ok" && l.target?.secret === secret2),
      JSON.stringify(audit.slice(-5)),
    );
    assert.ok(
      audit.some((l) => l.action === "grant.revoke" && l.result === "ok" && l.target?.secret === secret2),
    );
  });
});
