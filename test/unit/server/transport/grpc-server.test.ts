import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { GRPC_STATUS } from "../../../../server/transport/call-log.js";
import { loadHpcsDefinition, startGrpcServer } from "../../../../server/transport/grpc-server.js";
import type { GrpcServerHandle } from "../../../../server/transport/grpc-server.js";
import {
  ALL_CODES,
  BEARER,
  captureLogger,
  type CapturedLog,
  ENROLLMENT_SECRET,
  EXPIRES,
  FakeService,
  makeTlsFiles,
  NEXT_ENROLLMENT_EXPIRES,
  NEXT_ENROLLMENT_SECRET,
  OPERATOR_TOKEN,
  SECRET_VALUES,
  type TlsFiles,
} from "./fixtures.js";

type Unary = (
  req: object,
  md: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res: Record<string, unknown>) => void,
) => grpc.ClientUnaryCall;

interface CallResult {
  err: grpc.ServiceError | null;
  res: Record<string, unknown>;
  headers: grpc.Metadata | undefined;
}

describe("server/transport/grpc-server", () => {
  let tls: TlsFiles;
  let service: FakeService;
  let log: CapturedLog;
  let handle: GrpcServerHandle;
  let client: grpc.Client & Record<string, Unary>;

  before(async () => {
    tls = makeTlsFiles();
    service = new FakeService();
    log = captureLogger();
    handle = await startGrpcServer(service, log.logger, {
      host: "127.0.0.1",
      port: 0,
      tls: { certFile: tls.certFile, keyFile: tls.keyFile },
    });
    const pkg = loadHpcsDefinition() as unknown as { hpcs: { v1: { Hpcs: grpc.ServiceClientConstructor } } };
    client = new pkg.hpcs.v1.Hpcs(`127.0.0.1:${handle.port}`, grpc.credentials.createSsl(tls.ca), {
      "grpc.ssl_target_name_override": "localhost",
    }) as unknown as grpc.Client & Record<string, Unary>;
  });

  after(async () => {
    client.close();
    await handle.close();
    tls.cleanup();
  });

  beforeEach(() => {
    service.calls = [];
    service.failWith = undefined;
  });

  function call(method: string, req: object, meta: Record<string, string> = {}): Promise<CallResult> {
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(meta)) md.set(k, v);
    return new Promise((resolve) => {
      let headers: grpc.Metadata | undefined;
      const fn = client[method];
      assert.ok(fn, `client has ${method}`);
      const c = fn.call(client, req, md, {}, (err, res) => resolve({ err, res, headers }));
      c.on("metadata", (m: grpc.Metadata) => {
        headers = m;
      });
    });
  }

  const auth = { authorization: `Bearer ${BEARER}` };

  it("RegisterClient maps fields both ways", async () => {
    const r = await call("RegisterClient", {
      client_name: "alice",
      enrollment_secret: ENROLLMENT_SECRET,
      selectors: [{ type: "unix", value: "uid:1000" }],
    });
    assert.equal(r.err, null);
    const c = service.last();
    assert.equal(c.method, "registerClient");
    assert.deepEqual(c.req, {
      clientName: "alice",
      enrollmentSecret: ENROLLMENT_SECRET,
      selectors: [{ type: "unix", value: "uid:1000" }],
    });
    assert.equal(r.res.client_id, "alice");
    assert.equal(r.res.workload_spiffe_id, "spiffe://hpcs.test/c/alice/workload");
    assert.equal(r.res.join_token_expires_at_unix, EXPIRES.getTime() / 1000);
    assert.equal(r.res.secret_path_prefix, "hpcs/alice/");
    assert.equal(r.res.next_enrollment_secret, NEXT_ENROLLMENT_SECRET);
    assert.equal(r.res.next_enrollment_expires_at_unix, NEXT_ENROLLMENT_EXPIRES.getTime() / 1000);
    assert.equal(c.ctx.bearerJwt, undefined);
  });

  it("Grant passes the bearer and the expiry; response in unix seconds", async () => {
    const r = await call(
      "Grant",
      {
        secret: "data1",
        nodes: ["nid001"],
        users: ["alice"],
        groups: ["proj"],
        expires_at_unix: 1_900_000_000,
      },
      auth,
    );
    assert.equal(r.err, null);
    const c = service.last();
    assert.equal(c.ctx.bearerJwt, BEARER);
    assert.deepEqual(c.req, {
      secret: "data1",
      nodes: ["nid001"],
      users: ["alice"],
      groups: ["proj"],
      expiresAt: new Date(1_900_000_000_000),
    });
    assert.equal(r.res.spiffe_id, "spiffe://hpcs.test/c/alice/s/data1");
    assert.equal(r.res.entries_created, 2);
    assert.equal(r.res.expires_at_unix, 1_900_000_000);
  });

  it("Grant without expiry sends none", async () => {
    const r = await call("Grant", { secret: "d", nodes: ["n1"], users: ["u"] }, auth);
    assert.equal(r.err, null);
    assert.equal((service.last().req as { expiresAt?: Date }).expiresAt, undefined);
    assert.equal(r.res.expires_at_unix, 0);
  });

  it("Revoke, ListGrants, NodeJoinToken, EndJob, Health", async () => {
    let r = await call("Revoke", { secret: "data1", delete_secret: true }, auth);
    assert.equal(r.err, null);
    assert.deepEqual(service.last().req, { secret: "data1", deleteSecret: true });
    assert.equal(r.res.secret_deleted, true);
    assert.equal(r.res.entries_deleted, 2);

    r = await call("ListGrants", {}, auth);
    assert.equal(r.err, null);
    const grants = r.res.grants as Record<string, unknown>[];
    assert.equal(grants.length, 2);
    assert.equal(grants[0]?.expires_at_unix, EXPIRES.getTime() / 1000);
    assert.equal(grants[1]?.expires_at_unix, 0);
    assert.deepEqual(grants[1]?.groups, ["proj"]);

    r = await call("NodeJoinToken", { node: "nid001", user: "alice", operator_token: OPERATOR_TOKEN });
    assert.equal(r.err, null);
    assert.deepEqual(service.last().req, { node: "nid001", user: "alice", operatorToken: OPERATOR_TOKEN });
    assert.equal(r.res.agent_spiffe_id, "spiffe://hpcs.test/h/nid001/u/alice");
    assert.deepEqual(r.res.aliases, ["spiffe://hpcs.test/h/nid001/g/proj"]);

    r = await call("EndJob", { node: "nid001", user: "alice", join_token: "tok-end-1234" });
    assert.equal(r.err, null);
    assert.deepEqual(service.last().req, { node: "nid001", user: "alice", joinToken: "tok-end-1234" });

    r = await call("Health", {});
    assert.equal(r.err, null);
    assert.equal(r.res.status, "serving");
    assert.equal(r.res.version, "test");
  });

  it("propagates the caller's x-request-id and generates one otherwise", async () => {
    let r = await call("Health", {}, { "x-request-id": "req-abc.123" });
    assert.equal(service.last().ctx.requestId, "req-abc.123");
    assert.equal(r.headers?.get("x-request-id")[0], "req-abc.123");

    r = await call("Health", {}, { "x-request-id": "bad id with spaces" });
    const generated = service.last().ctx.requestId;
    assert.match(generated, /^[0-9a-f-]{36}$/);
    assert.equal(r.headers?.get("x-request-id")[0], generated);
    assert.ok(service.last().ctx.peerAddress);
  });

  it("maps every ServiceError code to its gRPC status", async () => {
    for (const code of ALL_CODES) {
      service.failWith = code;
      const r = await call("Health", {});
      assert.equal(r.err?.code, GRPC_STATUS[code], code);
      assert.equal(r.err?.details, `fake ${code} from health`);
    }
    assert.equal(GRPC_STATUS.invalid_argument, grpc.status.INVALID_ARGUMENT);
    assert.equal(GRPC_STATUS.failed_precondition, grpc.status.FAILED_PRECONDITION);
    assert.equal(GRPC_STATUS.resource_exhausted, grpc.status.RESOURCE_EXHAUSTED);
  });

  it("answers INTERNAL with a generic message for unknown errors; the details go to the log, scrubbed", async () => {
    service.failWith = "plain";
    const r = await call("ListGrants", {}, { ...auth, "x-request-id": "req-plain" });
    assert.equal(r.err?.code, grpc.status.INTERNAL);
    assert.match(r.err?.details ?? "", /^internal error \(request id req-plain\)/);
    assert.doesNotMatch(r.err?.details ?? "", /vault said no/);
    const errLine = log.lines().find((l) => l.requestId === "req-plain" && l.msg === "unexpected error");
    assert.match(String(errLine?.errMessage), /vault said no to token \[redacted\]/);
  });

  it("refuses a malformed authorization header", async () => {
    const r = await call("ListGrants", {}, { authorization: "Basic dXNlcjpwYXNz" });
    assert.equal(r.err?.code, grpc.status.UNAUTHENTICATED);
    assert.equal(service.calls.length, 0);
  });

  it("logs one line per call with the caller, never a token or secret", async () => {
    await call("RegisterClient", { client_name: "alice", enrollment_secret: ENROLLMENT_SECRET });
    await call(
      "Grant",
      { secret: "s1", nodes: ["n1"], users: ["u1"] },
      { ...auth, "x-request-id": "req-grant" },
    );
    await call("NodeJoinToken", { node: "nid001", user: "alice", operator_token: OPERATOR_TOKEN });
    const line = log.lines().find((l) => l.requestId === "req-grant");
    assert.equal(line?.method, "Grant");
    assert.equal(line?.code, "ok");
    assert.equal(line?.transport, "grpc");
    assert.equal(line?.caller, "spiffe://hpcs.test/c/alice/workload");
    assert.equal(typeof line?.durationMs, "number");
    const text = log.text();
    for (const s of SECRET_VALUES) assert.ok(!text.includes(s), `log must not contain ${s.slice(0, 12)}…`);
  });

  it("refuses to start without TLS unless insecure is explicit", async () => {
    await assert.rejects(
      startGrpcServer(service, log.logger, { host: "127.0.0.1", port: 0 }),
      /tls-cert and tls-key/,
    );
    const h = await startGrpcServer(service, log.logger, { host: "127.0.0.1", port: 0, insecure: true });
    assert.ok(h.port > 0);
    await h.close();
  });
});
