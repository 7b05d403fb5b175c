/**
 * Issue 7 items 4–6 on the real `hpcs-server serve` process and the real bench (SPIRE, Vault, real
 * spire-agents started from the join tokens it hands out): expiring grants and their sweeper,
 * revocation before a job starts, the audit log (one JSON line per action, no secret in it or in the
 * server's log), request ids, and rate limits on the registration and node-token routes (HTTP 429 +
 * Retry-After, gRPC RESOURCE_EXHAUSTED). Jobs are per-job agents for user root (the tests fetch SVIDs
 * as root) on made-up nodes, with operator node tokens.
 */

import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
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

const PROTO = fileURLToPath(new URL("../../../../proto/hpcs/v1/hpcs.proto", import.meta.url));
type Unary = (
  req: object,
  md: grpc.Metadata,
  cb: (err: grpc.ServiceError | null, res: never) => void,
) => void;
type HpcsStub = grpc.Client & Record<"RegisterClient", Unary>;

interface AuditLine {
  type: string;
  time: string;
  requestId: string;
  action: string;
  result: string;
  caller?: string;
  callerVerified?: boolean;
  code?: string;
  reason?: string;
  target?: Record<string, unknown>;
}

describe("hpcs-server security controls: expiring grants, revocation, audit log, rate limits (real process)", function () {
  this.timeout(120_000);
  const n = nonce();
  const client = `sec-${n}`;
  const nodeN = `sec-${n}-n`;
  const nodeM = `sec-${n}-m`;
  const expiring = `exp-${n}`;
  const revoked = `rev-${n}`;
  const control = `ctl-${n}`;
  const secrets = [expiring, revoked, control];
  const uid0 = [{ type: "unix", value: "uid:0" }];
  const LIFETIME_MS = 40_000;

  let env: StackEnv;
  let ca: Buffer;
  let spire: SpireServerClient;
  let root: VaultClient;
  let anon: VaultClient;
  let srv: HpcsServerProcess | undefined;
  let auditDir = "";
  let stub: HpcsStub | undefined;
  const agents: AgentWithToken[] = [];
  const jobAliases: string[] = [];
  const operatorTokens: string[] = [];
  /** Every secret value the test handles: none may appear in the audit log or the server's log. */
  const used: string[] = [];
  let clientAgent: AgentWithToken | undefined;
  let jobN: AgentWithToken | undefined;
  let jobNToken = "";
  let workload = "";
  let firstEnrollmentSecret = "";
  let clientRole = "";
  let deadline = new Date(0);
  let expiringJwt = "";
  let expiringVaultToken = "";

  const must = <T>(v: T | undefined, what: string): T => {
    if (v === undefined) throw new Error(`${what} missing (an earlier test failed)`);
    return v;
  };
  const server = () => must(srv, "server");
  const keep = <T extends string>(s: T): T => {
    used.push(s);
    return s;
  };
  const sid = (s: string) => `spiffe://${env.trust_domain}/c/${client}/s/${s}`;
  const clientJwt = async (aud = "hpcs-server") =>
    keep(await must(clientAgent, "client agent").fetchJwt(aud, workload));
  const http = (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) =>
    httpsJson(`${server().url}${path}`, { ca, method, body, headers });
  const bearer = async () => ({ authorization: `Bearer ${await clientJwt()}` });
  const entriesOf = async (secret: string) => spire.listEntries({ bySpiffeId: SpiffeId.parse(sid(secret)) });
  const auditLines = async (): Promise<AuditLine[]> =>
    (await readFile(join(auditDir, "audit.log"), "utf8"))
      .split("\n")
      .filter((l) => l.trim() !== "")
      .map((l) => JSON.parse(l) as AuditLine);
  const ok = (r: JsonResponse, what: string) =>
    assert.equal(r.status, 200, `${what}: ${JSON.stringify(r.body)}`);

  /** A job on `node` as root: operator token → /v1/nodes/token → its own spire-agent. */
  async function startJob(
    node: string,
    requestId: string,
  ): Promise<{ agent: AgentWithToken; token: string }> {
    const op = await server().nodeToken(node, "root");
    operatorTokens.push(keep(op.operatorToken));
    const r = await http(
      "POST",
      "/v1/nodes/token",
      { node, user: "root", operatorToken: op.operatorToken },
      { "x-request-id": requestId },
    );
    ok(r, "node token");
    assert.equal(r.headers["x-request-id"], requestId, "the job can log the server's request id");
    keep(r.body.joinToken as string);
    jobAliases.push(r.body.agentSpiffeId as string, ...(r.body.aliases as string[]));
    const agent = await AgentWithToken.start(env, r.body.joinToken as string);
    agents.push(agent);
    return { agent, token: r.body.joinToken as string };
  }

  /** As the client does in data-prep: write the secret with its create-only role. */
  async function writeSecret(secret: string): Promise<void> {
    const login = await anon.loginJwt(clientRole, await clientJwt("vault"));
    keep(login.token);
    await anon
      .withToken(login.token)
      .kvWrite(secretPath(client, secret), { key: keep(`value-${secret}-${n}`) });
  }

  before(async () => {
    env = loadStackEnv();
    ca = readFileSync(env.ca_cert);
    spire = new SpireServerClient({ socketPath: env.spire.admin_socket });
    const vaultOpts = {
      url: env.vault.url,
      caPem: ca,
      timeoutMs: 10_000,
      kvMount: env.vault.kv_mount,
      jwtMount: env.vault.jwt_mount,
    };
    root = new VaultClient({ ...vaultOpts, token: env.vault.root_token });
    anon = new VaultClient(vaultOpts);
    auditDir = await mkdtemp(join(tmpdir(), "hpcs-audit-"));
    srv = await HpcsServerProcess.start(env, {
      extraServerKeys: [
        `audit-log = ${join(auditDir, "audit.log")}`,
        "sweep-interval = 2s",
        "rate-limit-register = 4/min",
        "rate-limit-node-token = 8/min",
      ],
    });
    const def = protoLoader.loadSync(PROTO, { keepCase: true, longs: Number, enums: String, defaults: true });
    const pkg = grpc.loadPackageDefinition(def) as unknown as {
      hpcs: { v1: { Hpcs: grpc.ServiceClientConstructor } };
    };
    stub = new pkg.hpcs.v1.Hpcs(srv.grpcAddress, grpc.credentials.createSsl(ca)) as unknown as HpcsStub;

    const e = await srv.enroll(client);
    const reg = await http(
      "POST",
      "/v1/clients/register",
      {
        clientName: client,
        enrollmentSecret: (firstEnrollmentSecret = keep(e.enrollmentSecret)),
        selectors: uid0,
      },
      { "x-request-id": `reg-${n}` },
    );
    ok(reg, "register");
    assert.equal(reg.headers["x-request-id"], `reg-${n}`);
    keep(reg.body.joinToken as string);
    keep(reg.body.nextEnrollmentSecret as string);
    workload = reg.body.workloadSpiffeId as string;
    clientRole = reg.body.vaultRole as string;
    clientAgent = await AgentWithToken.start(env, reg.body.joinToken as string);
    agents.push(clientAgent);
  });

  after(async () => {
    stub?.close();
    for (const a of agents) await a.stop().catch(() => undefined);
    if (spire) {
      const ids = [
        ...secrets.map((s) => sid(s)),
        `spiffe://${env.trust_domain}/c/${client}`,
        workload || `spiffe://${env.trust_domain}/c/${client}/workload`,
        ...jobAliases,
      ];
      for (const id of ids) {
        const es = await spire.listEntries({ bySpiffeId: SpiffeId.parse(id) }).catch(() => []);
        if (es.length > 0) await spire.batchDeleteEntries(es.map((x) => x.id)).catch(() => undefined);
      }
      spire.close();
    }
    if (root) {
      for (const name of [clientPolicyName(client), ...secrets.map((s) => grantPolicyName(client, s))]) {
        await root.deleteJwtRole(name).catch(() => undefined);
        await root.deletePolicy(name).catch(() => undefined);
      }
      const paths = [
        `hpcs-server/enrollments/${client}`,
        `hpcs-server/grants/${client}`,
        ...secrets.map((s) => secretPath(client, s)),
        ...operatorTokens.map((t) => nodeTokenPath("hpcs-server/node-tokens", t)),
      ];
      for (const p of paths) await root.kvDestroyAll(p).catch(() => undefined);
    }
    await srv?.stop();
    if (auditDir) await rm(auditDir, { recursive: true, force: true });
  });

  it("an expiring grant carries its deadline in the entries, the role's token TTL and the secret's metadata", async () => {
    await writeSecret(expiring);
    deadline = new Date(Date.now() + LIFETIME_MS);
    const g = await http(
      "POST",
      "/v1/grants",
      { secret: expiring, nodes: [nodeN], users: ["root"], expiresAt: deadline.toISOString() },
      await bearer(),
    );
    ok(g, "grant");
    assert.equal(g.body.expiresAt, deadline.toISOString());
    const entries = await entriesOf(expiring);
    assert.equal(entries.length, 1);
    const entryExpiry = must(entries[0]?.expiresAt, "entry expiry").getTime();
    assert.ok(
      Math.abs(entryExpiry - deadline.getTime()) < 1000,
      `entry expires ${entryExpiry}, grant ${deadline.getTime()}`,
    );
    const role = must(await root.readJwtRole(grantPolicyName(client, expiring)), "grant role");
    assert.ok(
      role.tokenMaxTtlSec !== undefined && role.tokenMaxTtlSec <= LIFETIME_MS / 1000,
      JSON.stringify(role),
    );
    const meta = must(await root.kvReadMetadata(secretPath(client, expiring)), "secret metadata");
    assert.equal(meta.customMetadata["hpcs-expires-at"], deadline.toISOString());

    // Before the deadline a job on the node logs in with the grant's role and reads the key.
    const job = await startJob(nodeN, `job-${n}-token`);
    jobN = job.agent;
    jobNToken = job.token;
    expiringJwt = keep(await jobN.fetchJwt("vault", sid(expiring)));
    const login = await anon.loginJwt(grantPolicyName(client, expiring), expiringJwt);
    expiringVaultToken = keep(login.token);
    // The role's token TTL is the time left at grant time: a token issued later may outlive the
    // deadline by the delay since the grant, until the sweeper deletes its policy (last test).
    assert.ok(login.leaseDurationSec <= LIFETIME_MS / 1000, String(login.leaseDurationSec));
    const read = await anon.withToken(login.token).kvRead(secretPath(client, expiring));
    assert.equal(read?.data.key, `value-${expiring}-${n}`);
  });

  it("revocation: the role is gone at once, and a job that starts afterwards never gets the SVID", async () => {
    await writeSecret(revoked);
    const auth = await bearer();
    ok(
      await http("POST", "/v1/grants", { secret: revoked, nodes: [nodeN, nodeM], users: ["root"] }, auth),
      "grant",
    );
    ok(await http("POST", "/v1/grants", { secret: control, nodes: [nodeM], users: ["root"] }, auth), "grant");
    // An SVID fetched before the revocation (by the job already running on N)...
    const early = keep(await must(jobN, "job on N").fetchJwt("vault", sid(revoked)));

    const rv = await http("DELETE", `/v1/grants/${revoked}?deleteSecret=true`, undefined, await bearer());
    ok(rv, "revoke");
    assert.deepEqual(rv.body, {
      entriesDeleted: 2,
      roleDeleted: true,
      policyDeleted: true,
      secretDeleted: true,
    });
    // ...no longer logs in: the role is deleted.
    await assert.rejects(
      anon.loginJwt(grantPolicyName(client, revoked), early),
      (e: unknown) => e instanceof VaultError,
    );

    // A job on M started after the revocation receives the control grant, never the revoked one.
    const { agent } = await startJob(nodeM, `job-${n}-m`);
    const ids = await eventually("job on M synced", 30_000, async () => {
      const got = await agent.jwtSpiffeIds("vault");
      if (!got.includes(sid(control))) throw new Error(`no control SVID yet: ${got.join(", ")}`);
      return got;
    });
    assert.ok(!ids.includes(sid(revoked)), `revoked SVID reached a new job: ${ids.join(", ")}`);
  });

  it("audits every action and refusal as one JSON line, carrying the caller's request id", async () => {
    // Refusals: a used enrollment secret, a forged JWT, bob's operator token presented for root.
    const bad = await http(
      "POST",
      "/v1/clients/register",
      { clientName: client, enrollmentSecret: firstEnrollmentSecret, selectors: uid0 },
      { "x-request-id": `bad-reg-${n}` },
    );
    assert.equal(bad.status, 401);
    assert.equal(bad.body.error.requestId, `bad-reg-${n}`);
    const jwt = await clientJwt();
    const [h, p] = jwt.split(".");
    const forged = `${h}.${p}.${Buffer.from("not the signature").toString("base64url")}`;
    const fg = await http(
      "POST",
      "/v1/grants",
      { secret: control, nodes: [nodeN], users: ["root"] },
      {
        authorization: `Bearer ${keep(forged)}`,
      },
    );
    assert.equal(fg.status, 401);
    const bob = await server().nodeToken(nodeN, "bob");
    operatorTokens.push(keep(bob.operatorToken));
    const wrong = await http("POST", "/v1/nodes/token", {
      node: nodeN,
      user: "root",
      operatorToken: bob.operatorToken,
    });
    assert.equal(wrong.status, 403);
    // A malformed request id is replaced, never echoed.
    const ej = await http(
      "POST",
      "/v1/nodes/end-job",
      { node: nodeN, user: "root", joinToken: jobNToken },
      { "x-request-id": "bad id; rm -rf /" },
    );
    ok(ej, "end-job");
    assert.match(String(ej.headers["x-request-id"]), /^[0-9a-f-]{36}$/);

    const lines = await auditLines();
    for (const l of lines) {
      assert.equal(l.type, "audit");
      assert.ok(!Number.isNaN(Date.parse(l.time)));
      assert.ok(["ok", "refused", "error"].includes(l.result), JSON.stringify(l));
      assert.ok(l.requestId.length > 0);
    }
    const find = (action: string, result: string, pred: (l: AuditLine) => boolean = () => true) => {
      const l = lines.find((x) => x.action === action && x.result === result && pred(x));
      assert.ok(
        l,
        `no ${action} ${result} line in ${JSON.stringify(lines.map((x) => [x.action, x.result]))}`,
      );
      return l;
    };
    find("enrollment.issue", "ok", (l) => l.target?.clientName === client);
    const reg = find("client.register", "ok", (l) => l.requestId === `reg-${n}`);
    assert.equal(reg.caller, `spiffe://${env.trust_domain}/c/${client}`);
    assert.equal(reg.callerVerified, true);
    const gr = find("grant.create", "ok", (l) => l.target?.secret === expiring);
    assert.equal(gr.caller, workload);
    assert.equal(gr.target?.expiresAt, deadline.toISOString());
    find("grant.revoke", "ok", (l) => l.target?.secret === revoked && l.target.secretDeleted === true);
    find("node-token.issue", "ok", (l) => l.target?.node === nodeN && l.target.user === "root");
    const tok = find("node.token", "ok", (l) => l.requestId === `job-${n}-token`);
    assert.equal(tok.caller, `spiffe://${env.trust_domain}/h/${nodeN}/u/root`);
    find("node.end-job", "ok", (l) => l.requestId === ej.headers["x-request-id"]);
    const r1 = find("client.register", "refused", (l) => l.requestId === `bad-reg-${n}`);
    assert.equal(r1.code, "unauthenticated");
    assert.equal(r1.callerVerified, false);
    assert.equal(r1.caller, `client:${client}`);
    const r2 = find("grant.create", "refused", (l) => l.code === "unauthenticated");
    assert.equal(r2.caller, workload, "the claimed subject, unverified");
    assert.equal(r2.callerVerified, false);
    find(
      "node.token",
      "refused",
      (l) => l.code === "permission_denied" && l.caller === `node:${nodeN}/user:root`,
    );
  });

  it("rate-limits registration (HTTP 429 + Retry-After, then gRPC RESOURCE_EXHAUSTED) and node tokens", async () => {
    let status = 0;
    let last: JsonResponse | undefined;
    for (let i = 0; i < 8 && status !== 429; i++) {
      last = await http("POST", "/v1/clients/register", {
        clientName: client,
        enrollmentSecret: `wrong-${i}`,
        selectors: uid0,
      });
      status = last.status;
      if (status !== 429) assert.equal(status, 401, JSON.stringify(last.body));
    }
    assert.equal(status, 429, "no 429 within 8 registrations at 4/min");
    assert.ok(Number(last?.headers["retry-after"]) >= 1, JSON.stringify(last?.headers));
    assert.equal(last?.body.error.code, "resource_exhausted");
    assert.match(
      String(last?.body.error.message),
      /rate limit: at most 4 registrations per 60 s from 127\.0\.0\.1; retry in \d+ s/,
    );

    // The budget is per address, shared by both transports.
    const md = new grpc.Metadata();
    md.set("x-request-id", `grpc-reg-${n}`);
    await assert.rejects(
      new Promise((resolve, reject) =>
        must(stub, "gRPC stub").RegisterClient(
          { client_name: client, enrollment_secret: "wrong", selectors: uid0 },
          md,
          (err, res) => (err ? reject(err) : resolve(res)),
        ),
      ),
      (e: grpc.ServiceError) => {
        assert.equal(e.code, grpc.status.RESOURCE_EXHAUSTED, e.message);
        assert.ok(Number(e.metadata.get("retry-after")[0]) >= 1);
        assert.equal(e.metadata.get("x-request-id")[0], `grpc-reg-${n}`);
        return true;
      },
    );

    // The original's token route counts against the node-token budget (8/min).
    status = 0;
    for (let i = 0; i < 12 && status !== 429; i++) {
      last = await http("POST", `/api/agents/token?hostname=${nodeN}&user=root`, {
        operator_token: `wrong-${i}`,
      });
      status = last.status;
    }
    assert.equal(status, 429, "no 429 within 12 node-token calls at 8/min");
    assert.equal(last?.body.success, false);
    assert.ok(Number(last?.headers["retry-after"]) >= 1);

    const limited = (await auditLines()).filter((l) => l.code === "resource_exhausted");
    assert.ok(limited.some((l) => l.action === "client.register" && l.result === "refused"));
    assert.ok(limited.some((l) => l.action === "client.register" && l.requestId === `grpc-reg-${n}`));
    assert.ok(limited.some((l) => l.action === "node.token" && l.result === "refused"));
  });

  it("after the deadline the sweeper has removed entries, role, policy and secret: the grant's Vault login fails", async () => {
    const role = grantPolicyName(client, expiring);
    await eventually(
      "expired grant swept",
      Math.max(0, deadline.getTime() - Date.now()) + 20_000,
      async () => {
        // In the order the sweep removes them (grants.ts remove): the last one gone means the sweep
        // is through; checking only the first ones raced with the rest of the same sweep.
        if ((await entriesOf(expiring)).length > 0) throw new Error("entries still there");
        if (await root.readJwtRole(role)) throw new Error("role still there");
        if ((await root.readPolicy(role)) !== undefined) throw new Error("policy still there");
        if ((await root.kvReadMetadata(secretPath(client, expiring))) !== undefined) {
          throw new Error("secret and metadata still there");
        }
      },
    );
    assert.ok(Date.now() >= deadline.getTime(), "swept before the deadline");
    // The job's JWT-SVID is still valid, but its role is gone; its earlier Vault token reads nothing.
    await assert.rejects(anon.loginJwt(role, expiringJwt), (e: unknown) => e instanceof VaultError);
    const late = await anon
      .withToken(expiringVaultToken)
      .kvRead(secretPath(client, expiring))
      .catch((e: unknown) => e);
    assert.ok(late === undefined || (late instanceof VaultError && late.status === 403), String(late));
    const list = await http("GET", "/v1/grants", undefined, await bearer());
    ok(list, "list");
    assert.ok(!(list.body.grants as { secret: string }[]).some((g) => g.secret === expiring));

    const swept = (await auditLines()).find(
      (l) => l.action === "grant.expire" && l.target?.secret === expiring,
    );
    assert.ok(swept, "no grant.expire audit line");
    assert.equal(swept.result, "ok");
    assert.equal(swept.target?.secretDeleted, true);
  });

  it("neither the audit log nor the server's log contains any secret used in this test", async () => {
    const audit = await readFile(join(auditDir, "audit.log"), "utf8");
    assert.ok(audit.split("\n").length > 15, "the audit log is unexpectedly short");
    const logs = { "audit log": audit, "server log": server().log };
    assert.ok(used.length >= 15, `only ${used.length} secrets collected`);
    for (const s of used) {
      assert.ok(s.length >= 16, `secret too short to grep: ${s.length}`);
      for (const [name, text] of Object.entries(logs)) {
        assert.ok(!text.includes(s), `${name} contains a secret (${s.slice(0, 6)}…)`);
      }
    }
  });
});
