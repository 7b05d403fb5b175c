import assert from "node:assert/strict";
import type { IncomingHttpHeaders } from "node:http";
import { request } from "node:https";
import { AuditLog } from "../../../../server/service/audit-log.js";
import { type HttpServerHandle, startHttpServer } from "../../../../server/transport/http-server.js";
import { peerKey, RateLimitedError, RateLimiter } from "../../../../server/transport/rate-limit.js";
import { captureLogger, ENROLLMENT_SECRET, FakeService, makeTlsFiles, type TlsFiles } from "./fixtures.js";

describe("server/transport/rate-limit", () => {
  describe("RateLimiter", () => {
    let now = 0;
    const limiter = (maxKeys?: number) =>
      new RateLimiter(
        { register: { count: 3, periodSec: 60 } },
        { now: () => now, ...(maxKeys !== undefined ? { maxKeys } : {}) },
      );

    beforeEach(() => {
      now = 1_000_000;
    });

    it("allows `count` at once, then refuses with the time until the next call, refilling continuously", () => {
      const l = limiter();
      for (let i = 0; i < 3; i++) l.take("register", "10.0.0.1");
      assert.throws(
        () => l.take("register", "10.0.0.1"),
        (e: unknown) =>
          e instanceof RateLimitedError &&
          e.code === "resource_exhausted" &&
          e.retryAfterSec === 20 &&
          e.message === "rate limit: at most 3 registrations per 60 s from 10.0.0.1; retry in 20 s",
      );
      now += 10_000; // half a token
      assert.throws(
        () => l.take("register", "10.0.0.1"),
        (e: unknown) => (e as RateLimitedError).retryAfterSec === 10,
      );
      now += 10_000;
      l.take("register", "10.0.0.1");
      assert.throws(() => l.take("register", "10.0.0.1"));
      now += 3_600_000; // refills to the bucket size, not beyond
      for (let i = 0; i < 3; i++) l.take("register", "10.0.0.1");
      assert.throws(() => l.take("register", "10.0.0.1"));
    });

    it("keeps addresses and groups apart; a group without a limit is never limited", () => {
      const l = limiter();
      for (let i = 0; i < 3; i++) l.take("register", "10.0.0.1");
      l.take("register", "10.0.0.2");
      for (let i = 0; i < 1000; i++) l.take("node-token", "10.0.0.1");
    });

    it("stays bounded under a flood from many addresses, forgetting full buckets first", () => {
      const l = limiter(10);
      for (let i = 0; i < 3; i++) l.take("register", "busy");
      for (let i = 0; i < 100; i++) l.take("register", `10.0.1.${i}`);
      assert.ok((l as unknown as { buckets: Map<string, unknown> }).buckets.size <= 10);
    });

    it("peerKey: HTTP's and gRPC's spellings of one address are the same key", () => {
      assert.equal(peerKey("::ffff:10.0.0.7"), "10.0.0.7");
      assert.equal(peerKey("ipv4:10.0.0.7:51234"), "10.0.0.7");
      assert.equal(peerKey("10.0.0.7:51234"), "10.0.0.7");
      assert.equal(peerKey("[::ffff:10.0.0.7]:51234"), "10.0.0.7");
      assert.equal(peerKey("[fd00::1]:51234"), "fd00::1");
      assert.equal(peerKey("10.0.0.7"), "10.0.0.7");
      assert.equal(peerKey("ipv6:[fd00::1]:51234"), "fd00::1");
      assert.equal(peerKey("FD00::1"), "fd00::1");
      assert.equal(peerKey(undefined), "unknown");
    });
  });

  describe("over HTTP", () => {
    let tls: TlsFiles;
    let handle: HttpServerHandle;
    const audit: string[] = [];

    before(async () => {
      tls = makeTlsFiles();
      handle = await startHttpServer(new FakeService(), captureLogger().logger, {
        host: "127.0.0.1",
        port: 0,
        tls: { certFile: tls.certFile, keyFile: tls.keyFile },
        audit: new AuditLog((l) => audit.push(l)),
        limiter: new RateLimiter({ register: { count: 2, periodSec: 3600 } }),
      });
    });

    after(async () => {
      await handle.close();
      tls.cleanup();
    });

    function post(path: string, body: unknown, headers: Record<string, string> = {}) {
      return new Promise<{ status: number; headers: IncomingHttpHeaders; body: Record<string, unknown> }>(
        (resolve, reject) => {
          const req = request(
            `https://127.0.0.1:${handle.port}${path}`,
            {
              method: "POST",
              ca: tls.ca,
              agent: false,
              headers: { "content-type": "application/json", ...headers },
            },
            (res) => {
              const chunks: Buffer[] = [];
              res.on("data", (c: Buffer) => chunks.push(c));
              res.on("end", () =>
                resolve({
                  status: res.statusCode ?? 0,
                  headers: res.headers,
                  body: JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, unknown>,
                }),
              );
            },
          );
          req.on("error", reject);
          req.end(JSON.stringify(body));
        },
      );
    }

    it("answers 429 with Retry-After after the limit, counting both register routes, and audits it", async () => {
      const body = { clientName: "alice", enrollmentSecret: ENROLLMENT_SECRET };
      assert.equal((await post("/v1/clients/register", body)).status, 200);
      assert.equal((await post("/api/client/register", { client_name: "alice" })).status, 200);
      const r = await post("/v1/clients/register", body, { "x-request-id": "job-42.token" });
      assert.equal(r.status, 429);
      assert.ok(Number(r.headers["retry-after"]) > 0, JSON.stringify(r.headers));
      assert.equal(r.headers["x-request-id"], "job-42.token");
      assert.deepEqual(Object.keys(r.body.error as object), ["code", "message", "requestId"]);
      assert.equal((r.body.error as { code: string }).code, "resource_exhausted");
      const compat = await post("/api/client/register", { client_name: "alice" });
      assert.equal(compat.status, 429);
      assert.equal(compat.body.success, false);
      // Other routes are not limited.
      assert.equal(
        (await post("/v1/nodes/token", { node: "n1", user: "alice", operatorToken: "t" })).status,
        200,
      );

      const refused = audit
        .map((l) => JSON.parse(l) as { action: string; result: string; code?: string; requestId: string })
        .filter((l) => l.result === "refused");
      assert.deepEqual(
        refused.map((l) => [l.action, l.code]),
        [
          ["client.register", "resource_exhausted"],
          ["client.register", "resource_exhausted"],
        ],
      );
      assert.equal(refused[0]?.requestId, "job-42.token");
      assert.ok(!audit.join("").includes(ENROLLMENT_SECRET));
    });
  });
});
