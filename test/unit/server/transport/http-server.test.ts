import assert from "node:assert/strict";
import type { IncomingHttpHeaders } from "node:http";
import { request } from "node:https";
import { HTTP_STATUS } from "../../../../server/transport/call-log.js";
import { type HttpServerHandle, startHttpServer } from "../../../../server/transport/http-server.js";
import {
  ALL_CODES,
  BEARER,
  captureLogger,
  type CapturedLog,
  CLIENT_JOIN_TOKEN,
  ENROLLMENT_SECRET,
  EXPIRES,
  FakeService,
  makeTlsFiles,
  NEXT_ENROLLMENT_EXPIRES,
  NEXT_ENROLLMENT_SECRET,
  NODE_JOIN_TOKEN,
  OPERATOR_TOKEN,
  SECRET_VALUES,
  type TlsFiles,
} from "./fixtures.js";

interface Res {
  status: number;
  headers: IncomingHttpHeaders;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- raw JSON bodies
  body: any;
}

describe("server/transport/http-server", () => {
  let tls: TlsFiles;
  let service: FakeService;
  let log: CapturedLog;
  let handle: HttpServerHandle;

  before(async () => {
    tls = makeTlsFiles();
    service = new FakeService();
    log = captureLogger();
    handle = await startHttpServer(service, log.logger, {
      host: "127.0.0.1",
      port: 0,
      tls: { certFile: tls.certFile, keyFile: tls.keyFile },
    });
  });

  after(async () => {
    await handle.close();
    tls.cleanup();
  });

  beforeEach(() => {
    service.calls = [];
    service.failWith = undefined;
    service.healthStatus = "serving";
  });

  function send(
    method: string,
    path: string,
    opts: { body?: unknown; raw?: string | Buffer; headers?: Record<string, string> } = {},
  ): Promise<Res> {
    const payload = opts.raw ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body));
    return new Promise((resolve, reject) => {
      let settled = false;
      const req = request(
        `https://127.0.0.1:${handle.port}${path}`,
        {
          method,
          ca: tls.ca,
          agent: false,
          headers: {
            ...(payload !== undefined ? { "content-type": "application/json" } : {}),
            ...opts.headers,
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => {
            settled = true;
            const text = Buffer.concat(chunks).toString("utf8");
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              body: text ? JSON.parse(text) : undefined,
            });
          });
        },
      );
      // The server may close the connection after answering 413 while the body is still going out.
      req.on("error", (e) => {
        if (!settled) setTimeout(() => (settled ? undefined : reject(e)), 200);
      });
      req.end(payload);
    });
  }

  const auth = { authorization: `Bearer ${BEARER}` };

  it("POST /v1/clients/register", async () => {
    const r = await send("POST", "/v1/clients/register", {
      body: {
        clientName: "alice",
        enrollmentSecret: ENROLLMENT_SECRET,
        selectors: [{ type: "unix", value: "uid:0" }],
      },
    });
    assert.equal(r.status, 200);
    assert.deepEqual(service.last().req, {
      clientName: "alice",
      enrollmentSecret: ENROLLMENT_SECRET,
      selectors: [{ type: "unix", value: "uid:0" }],
    });
    assert.equal(r.body.joinToken, CLIENT_JOIN_TOKEN);
    assert.equal(r.body.joinTokenExpiresAt, EXPIRES.toISOString());
    assert.equal(r.body.workloadSpiffeId, "spiffe://hpcs.test/c/alice/workload");
    assert.equal(r.body.nextEnrollmentSecret, NEXT_ENROLLMENT_SECRET);
    assert.equal(r.body.nextEnrollmentExpiresAt, NEXT_ENROLLMENT_EXPIRES.toISOString());
    assert.equal(r.headers["cache-control"], "no-store");
  });

  it("POST /v1/grants with bearer, ISO and unix expiry", async () => {
    let r = await send("POST", "/v1/grants", {
      headers: auth,
      body: { secret: "data1", nodes: ["nid001"], users: ["alice"], expiresAt: "2030-01-31T12:00:00Z" },
    });
    assert.equal(r.status, 200);
    const c = service.last();
    assert.equal(c.ctx.bearerJwt, BEARER);
    assert.deepEqual(c.req, {
      secret: "data1",
      nodes: ["nid001"],
      users: ["alice"],
      groups: [],
      expiresAt: EXPIRES,
    });
    assert.equal(r.body.secretPath, "kv/data/hpcs/alice/data1");
    assert.equal(r.body.expiresAt, EXPIRES.toISOString());

    r = await send("POST", "/v1/grants", {
      headers: auth,
      body: { secret: "d", nodes: ["n"], groups: ["g"], expiresAt: EXPIRES.getTime() / 1000 },
    });
    assert.equal(r.status, 200);
    assert.deepEqual((service.last().req as { expiresAt: Date }).expiresAt, EXPIRES);
  });

  it("POST /v1/grants names a bad field", async () => {
    const r = await send("POST", "/v1/grants", { headers: auth, body: { secret: "d", nodes: "nid001" } });
    assert.equal(r.status, 400);
    assert.equal(r.body.error.code, "invalid_argument");
    assert.match(r.body.error.message, /^nodes: /);
    assert.equal(service.calls.length, 0);
  });

  it("DELETE /v1/grants/<secret>", async () => {
    let r = await send("DELETE", "/v1/grants/data1?deleteSecret=true", { headers: auth });
    assert.equal(r.status, 200);
    assert.deepEqual(service.last().req, { secret: "data1", deleteSecret: true });
    assert.equal(r.body.secretDeleted, true);
    r = await send("DELETE", "/v1/grants/data1", { headers: auth });
    assert.deepEqual(service.last().req, { secret: "data1", deleteSecret: false });
    assert.equal(r.body.secretDeleted, false);
  });

  it("GET /v1/grants", async () => {
    const r = await send("GET", "/v1/grants", { headers: auth });
    assert.equal(r.status, 200);
    assert.equal(service.last().ctx.bearerJwt, BEARER);
    assert.equal(r.body.grants.length, 2);
    assert.equal(r.body.grants[0].expiresAt, EXPIRES.toISOString());
    assert.equal(r.body.grants[1].expiresAt, undefined);
  });

  it("POST /v1/nodes/token and /v1/nodes/end-job", async () => {
    let r = await send("POST", "/v1/nodes/token", {
      body: { node: "nid001", user: "alice", operatorToken: OPERATOR_TOKEN },
    });
    assert.equal(r.status, 200);
    assert.deepEqual(service.last().req, { node: "nid001", user: "alice", operatorToken: OPERATOR_TOKEN });
    assert.equal(r.body.joinToken, NODE_JOIN_TOKEN);
    assert.equal(r.body.agentSpiffeId, "spiffe://hpcs.test/h/nid001/u/alice");

    r = await send("POST", "/v1/nodes/end-job", {
      body: { node: "nid001", user: "alice", joinToken: NODE_JOIN_TOKEN },
    });
    assert.equal(r.status, 200);
    assert.deepEqual(service.last().req, { node: "nid001", user: "alice", joinToken: NODE_JOIN_TOKEN });
  });

  it("GET /v1/health: 200 serving, 503 not serving", async () => {
    let r = await send("GET", "/v1/health");
    assert.equal(r.status, 200);
    assert.equal(r.body.status, "serving");
    service.healthStatus = "not_serving";
    r = await send("GET", "/v1/health");
    assert.equal(r.status, 503);
    assert.equal(r.body.status, "not_serving");
  });

  it("compat POST /api/agents/token?hostname=…", async () => {
    const r = await send("POST", "/api/agents/token?hostname=nid001&user=alice");
    assert.equal(r.status, 200);
    assert.deepEqual(service.last().req, { node: "nid001", user: "alice" });
    assert.equal(r.body.success, true);
    assert.equal(r.body.spiffeID, "spiffe://hpcs.test/h/nid001/u/alice");
    assert.equal(r.body.token, NODE_JOIN_TOKEN);
    assert.match(r.body.message, /token expires in \d+ seconds/);

    const missing = await send("POST", "/api/agents/token");
    assert.equal(missing.status, 400);
    assert.equal(missing.body.success, false);
    assert.match(missing.body.message, /^hostname: /);
  });

  it("compat POST /api/client/register: enrollment fields, or nothing (the service decides)", async () => {
    let r = await send("POST", "/api/client/register", {
      body: { client_name: "alice", enrollment_secret: ENROLLMENT_SECRET },
    });
    assert.equal(r.status, 200);
    assert.deepEqual(service.last().req, { clientName: "alice", enrollmentSecret: ENROLLMENT_SECRET });
    assert.equal(r.body.success, true);
    assert.equal(r.body.client_id, "alice");
    assert.equal(r.body.spiffeID, "spiffe://hpcs.test/c/alice");
    assert.equal(r.body.token, CLIENT_JOIN_TOKEN);
    // The original's clients would drop it: the compat answer does not carry the next secret.
    assert.ok(!JSON.stringify(r.body).includes(NEXT_ENROLLMENT_SECRET));

    r = await send("POST", "/api/client/register");
    assert.equal(r.status, 200);
    assert.deepEqual(service.last().req, { clientName: "", enrollmentSecret: "" });
    assert.equal(service.last().ctx.peerAddress, "127.0.0.1");

    service.failWith = "unauthenticated";
    r = await send("POST", "/api/client/register");
    assert.equal(r.status, 401);
    assert.deepEqual(Object.keys(r.body).sort(), ["message", "request_id", "success"]);
    assert.equal(r.body.success, false);
  });

  it("compat POST /api/client/create-workloads: jwt in the body, original response keys", async () => {
    const r = await send("POST", "/api/client/create-workloads", {
      body: {
        secret: "data1",
        jwt: BEARER,
        compute_nodes: ["nid001", "nid002"],
        users: ["alice"],
        groups: null,
      },
    });
    assert.equal(r.status, 200);
    const c = service.last();
    assert.equal(c.ctx.bearerJwt, BEARER);
    assert.deepEqual(c.req, { secret: "data1", nodes: ["nid001", "nid002"], users: ["alice"], groups: [] });
    assert.equal(r.body.success, true);
    assert.equal(r.body.clientID, "alice");
    assert.equal(r.body.spiffeID, "spiffe://hpcs.test/c/alice/s/data1");
    assert.deepEqual(r.body.compute_nodes_added, {
      nid001: { users: ["alice"], groups: [] },
      nid002: { users: ["alice"], groups: [] },
    });
    assert.equal(r.body.secrets_path, "hpcs/alice/data1");
    assert.equal(r.body.user_role, "hpcs-alice-data1");

    const viaHeader = await send("POST", "/api/client/create-workloads", {
      headers: auth,
      body: { secret: "data1", compute_nodes: ["nid001"], users: ["alice"] },
    });
    assert.equal(viaHeader.status, 200);
    assert.equal(service.last().ctx.bearerJwt, BEARER);
  });

  it("maps every ServiceError code to its HTTP status", async () => {
    const expected = [400, 401, 403, 404, 409, 412, 429, 503, 500];
    assert.deepEqual(
      ALL_CODES.map((c) => HTTP_STATUS[c]),
      expected,
    );
    for (const code of ALL_CODES) {
      service.failWith = code;
      const r = await send("GET", "/v1/grants", { headers: auth });
      assert.equal(r.status, HTTP_STATUS[code], code);
      assert.equal(r.body.error.code, code);
      assert.equal(r.body.error.message, `fake ${code} from listGrants`);
    }
  });

  it("unknown errors → 500 with a generic message; details in the log, scrubbed", async () => {
    service.failWith = "plain";
    const r = await send("GET", "/v1/grants", { headers: { ...auth, "x-request-id": "req-http-plain" } });
    assert.equal(r.status, 500);
    assert.match(r.body.error.message, /^internal error \(request id req-http-plain\)/);
    const line = log.lines().find((l) => l.requestId === "req-http-plain" && l.msg === "unexpected error");
    assert.match(String(line?.errMessage), /\[redacted\]/);
  });

  it("request ids: propagated and echoed, or generated", async () => {
    let r = await send("GET", "/v1/health", { headers: { "x-request-id": "req-42" } });
    assert.equal(service.last().ctx.requestId, "req-42");
    assert.equal(r.headers["x-request-id"], "req-42");
    r = await send("GET", "/v1/health");
    assert.match(String(r.headers["x-request-id"]), /^[0-9a-f-]{36}$/);
    assert.equal(service.last().ctx.requestId, r.headers["x-request-id"]);
  });

  it("413 on a body over 64 KiB, 400 on bad JSON or a non-object, 401 on a bad Authorization", async () => {
    const huge = JSON.stringify({ secret: "x".repeat(200 * 1024), nodes: ["n"] });
    let r = await send("POST", "/v1/grants", { raw: huge, headers: auth });
    assert.equal(r.status, 413);
    assert.equal(service.calls.length, 0);

    // No content-length: the limit is enforced while reading.
    r = await send("POST", "/v1/grants", { raw: huge, headers: { ...auth, "transfer-encoding": "chunked" } });
    assert.equal(r.status, 413);
    assert.equal(service.calls.length, 0);

    r = await send("POST", "/v1/grants", { raw: '{"secret": ', headers: auth });
    assert.equal(r.status, 400);
    assert.equal(r.body.error.message, "request body is not valid JSON; send one JSON object");

    r = await send("POST", "/api/client/create-workloads", { raw: "not json" });
    assert.equal(r.status, 400);
    assert.equal(r.body.success, false);

    r = await send("POST", "/v1/grants", { raw: "[1,2]", headers: auth });
    assert.equal(r.status, 400);

    r = await send("GET", "/v1/grants", { headers: { authorization: "Token abc" } });
    assert.equal(r.status, 401);
    assert.equal(r.headers["www-authenticate"], "Bearer");
    assert.equal(service.calls.length, 0);
  });

  it("404 on an unknown route, 405 on a wrong method", async () => {
    let r = await send("GET", "/v1/nothing");
    assert.equal(r.status, 404);
    r = await send("PUT", "/v1/grants", { body: {} });
    assert.equal(r.status, 405);
    assert.match(String(r.headers.allow), /GET/);
  });

  it("logs one line per request with route and caller, never a token or secret", async () => {
    await send("POST", "/v1/clients/register", {
      body: { clientName: "alice", enrollmentSecret: ENROLLMENT_SECRET },
    });
    await send("GET", "/v1/grants", { headers: { ...auth, "x-request-id": "req-list" } });
    await send("POST", "/api/client/create-workloads", {
      body: { secret: "data1", jwt: BEARER, compute_nodes: ["nid001"], users: ["alice"] },
    });
    await send("POST", "/v1/nodes/token", {
      body: { node: "nid001", user: "alice", operatorToken: OPERATOR_TOKEN },
    });
    await send("POST", "/api/agents/token?hostname=nid001&user=alice");
    const line = log.lines().find((l) => l.requestId === "req-list");
    assert.equal(line?.method, "GET /v1/grants");
    assert.equal(line?.status, 200);
    assert.equal(line?.caller, "spiffe://hpcs.test/c/alice/workload");
    assert.equal(line?.callerVerified, true);
    const text = log.text();
    for (const s of SECRET_VALUES) assert.ok(!text.includes(s), `log must not contain ${s.slice(0, 12)}…`);
  });

  it("refuses to start without TLS unless insecure is explicit", async () => {
    await assert.rejects(
      startHttpServer(service, log.logger, { host: "127.0.0.1", port: 0 }),
      /tls-cert and tls-key/,
    );
    const h = await startHttpServer(service, log.logger, { host: "127.0.0.1", port: 0, insecure: true });
    assert.ok(h.port > 0);
    await h.close();
  });
});
