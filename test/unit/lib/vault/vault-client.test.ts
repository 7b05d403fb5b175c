import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { VaultClient } from "../../../../lib/vault/vault-client.js";
import { VaultError } from "../../../../lib/vault/vault-error.js";
import { InvalidVaultPathError } from "../../../../lib/vault/vault-paths.js";

interface Seen {
  method: string;
  url: string;
  token: string | undefined;
  body: string;
}

// A stand-in HTTP server speaking Vault's error format: exercises the client's request shape and its
// error lines. The real Vault is exercised in test/integration/vault.
describe("VaultClient (against a fake HTTP endpoint)", () => {
  let server: Server;
  let url = "";
  const seen: Seen[] = [];
  let reply: (req: IncomingMessage, res: ServerResponse) => void = () => undefined;

  before(async () => {
    server = createServer((req, res) => {
      let body = "";
      req.on("data", (c) => {
        body += c;
      });
      req.on("end", () => {
        seen.push({
          method: req.method ?? "",
          url: req.url ?? "",
          token: req.headers["x-vault-token"] as string,
          body,
        });
        reply(req, res);
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => new Promise<void>((r) => server.close(() => r())));
  beforeEach(() => {
    seen.length = 0;
  });

  const json = (status: number, body: unknown) => (_req: IncomingMessage, res: ServerResponse) => {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify(body));
  };

  it("sends the configured token and the kv-v2 body, and returns the version", async () => {
    reply = json(200, { data: { version: 3, created_time: "now" } });
    let current = "tok-1";
    const vc = new VaultClient({ url, timeoutMs: 2000, token: () => current });
    assert.equal(await vc.kvWrite("hpcs/lab/ds", { key: "v" }, { cas: 0 }), 3);
    current = "tok-2";
    await vc.kvWrite("hpcs/lab/ds", { key: "v" });
    assert.deepEqual(
      seen.map((s) => [s.method, s.url, s.token, JSON.parse(s.body)]),
      [
        ["POST", "/v1/kv/data/hpcs/lab/ds", "tok-1", { data: { key: "v" }, options: { cas: 0 } }],
        ["POST", "/v1/kv/data/hpcs/lab/ds", "tok-2", { data: { key: "v" } }],
      ],
    );
  });

  it("logs in without a token and returns the lease (VAULT_TOKEN in the environment is ignored)", async () => {
    const saved = process.env.VAULT_TOKEN;
    process.env.VAULT_TOKEN = "env-token";
    try {
      reply = json(200, {
        auth: {
          client_token: "s.new",
          accessor: "acc",
          policies: ["default", "p"],
          lease_duration: 60,
          renewable: true,
        },
      });
      const vc = new VaultClient({ url, timeoutMs: 2000, token: "should-not-be-sent", jwtMount: "spire" });
      await vc.withToken("").kvDelete("hpcs/a/b");
      assert.equal(seen.pop()?.token, undefined);
      const login = await vc.loginJwt("hpcs-client-lab", "header.payload.sig");
      assert.deepEqual(login, {
        token: "s.new",
        accessor: "acc",
        policies: ["default", "p"],
        leaseDurationSec: 60,
        renewable: true,
      });
      assert.equal(seen[0]?.url, "/v1/auth/spire/login");
      assert.equal(seen[0]?.token, undefined);
      assert.deepEqual(JSON.parse(seen[0]?.body ?? ""), {
        role: "hpcs-client-lab",
        jwt: "header.payload.sig",
      });
    } finally {
      if (saved === undefined) delete process.env.VAULT_TOKEN;
      else process.env.VAULT_TOKEN = saved;
    }
  });

  it("turns a Vault error into one line: operation, path, status, message — without token or secret", async () => {
    reply = json(403, { errors: ["1 error occurred:\n\t* permission denied\n\n"] });
    const vc = new VaultClient({ url, timeoutMs: 2000, token: "SECRET-TOKEN" });
    const err = await vc.kvWrite("hpcs/lab/ds", { key: "SECRET-VALUE" }).catch((e: unknown) => e);
    assert.ok(err instanceof VaultError);
    assert.equal(err.message, "vault kv write kv/data/hpcs/lab/ds: 403 permission denied");
    assert.equal(err.isPermissionDenied, true);
    assert.equal(err.cause, undefined);
    assert.doesNotMatch(JSON.stringify(err) + String(err.stack), /SECRET-TOKEN|SECRET-VALUE/);
  });

  it("reads absent secrets, policies and roles as undefined", async () => {
    reply = json(404, { errors: [] });
    const vc = new VaultClient({ url, timeoutMs: 2000, token: "t" });
    assert.equal(await vc.kvRead("hpcs/lab/none"), undefined);
    assert.equal(await vc.readPolicy("hpcs-none"), undefined);
    assert.equal(await vc.readJwtRole("hpcs-none"), undefined);
    assert.equal(await vc.kvReadMetadata("hpcs/lab/none"), undefined);
    await assert.rejects(
      vc.kvDelete("hpcs/lab/none"),
      /^VaultError: vault kv delete kv\/data\/hpcs\/lab\/none: 404 \(no message\)$/,
    );
  });

  it("writes policies and roles to the right paths with Vault's field names", async () => {
    reply = (_q, res) => {
      res.writeHead(204);
      res.end();
    };
    const vc = new VaultClient({ url, timeoutMs: 2000, token: "t" });
    await vc.writePolicy("hpcs-x", 'path "a" {}');
    await vc.writeJwtRole("hpcs-x", {
      boundSubject: "spiffe://td/c/x/workload",
      boundAudiences: ["vault"],
      tokenPolicies: ["hpcs-x"],
      tokenTtlSec: 3,
      tokenMaxTtlSec: 6,
    });
    await vc.kvWriteMetadata("hpcs/x/s", { customMetadata: { owner: "x" }, deleteVersionAfterSec: 3600 });
    await vc.kvDestroyAll("hpcs/x/s");
    await vc.deleteJwtRole("hpcs-x");
    await vc.deletePolicy("hpcs-x");
    assert.deepEqual(
      seen.map((s) => [s.method, s.url, s.body ? JSON.parse(s.body) : undefined]),
      [
        ["PUT", "/v1/sys/policies/acl/hpcs-x", { policy: 'path "a" {}' }],
        [
          "POST",
          "/v1/auth/jwt/role/hpcs-x",
          {
            role_type: "jwt",
            user_claim: "sub",
            bound_subject: "spiffe://td/c/x/workload",
            bound_audiences: ["vault"],
            token_policies: ["hpcs-x"],
            token_ttl: 3,
            token_max_ttl: 6,
          },
        ],
        [
          "POST",
          "/v1/kv/metadata/hpcs/x/s",
          { custom_metadata: { owner: "x" }, delete_version_after: "3600s" },
        ],
        ["DELETE", "/v1/kv/metadata/hpcs/x/s", undefined],
        ["DELETE", "/v1/auth/jwt/role/hpcs-x", undefined],
        ["DELETE", "/v1/sys/policies/acl/hpcs-x", undefined],
      ],
    );
  });

  it("refuses unsafe paths and names before sending anything", async () => {
    const vc = new VaultClient({ url, timeoutMs: 2000, token: "t" });
    for (const p of ["../sys/x", "hpcs//x", "hpcs/./x", "hpcs/x?list=1", "hpcs/x y", ""]) {
      await assert.rejects(vc.kvRead(p), InvalidVaultPathError, p);
    }
    for (const n of ["a/b", "hpcs-*", "../x", "Hpcs", "x".repeat(251), "-x"]) {
      await assert.rejects(vc.writePolicy(n, ""), InvalidVaultPathError, n);
      await assert.rejects(vc.readJwtRole(n), InvalidVaultPathError, n);
    }
    assert.throws(() => new VaultClient({ url, timeoutMs: 1, kvMount: "kv/../sys" }), InvalidVaultPathError);
    assert.throws(() => new VaultClient({ url: "vault:8200", timeoutMs: 1 }), /must be http\(s\)|not a URL/);
    assert.equal(seen.length, 0);
  });

  it("says when Vault does not answer in time, or at all", async () => {
    reply = () => undefined; // never answers
    const slow = new VaultClient({ url, timeoutMs: 200, token: "t" });
    await assert.rejects(slow.kvRead("hpcs/x/y"), (e: Error) => {
      assert.equal(e.message, `vault kv read kv/data/hpcs/x/y: no answer from ${url} within 200 ms`);
      return true;
    });
    const closed = new VaultClient({ url: "http://127.0.0.1:1", timeoutMs: 2000, token: "t" });
    await assert.rejects(
      closed.readPolicy("hpcs-x"),
      /^VaultError: vault policy read sys\/policies\/acl\/hpcs-x: cannot reach http:\/\/127\.0\.0\.1:1: .*ECONNREFUSED/,
    );
  });
});
