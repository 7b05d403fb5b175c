import assert from "node:assert/strict";
import { once } from "node:events";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { HpcsServerClient, HpcsServerError } from "../../../client/hpcs-server-client.js";
import { type HttpServerHandle, startHttpServer } from "../../../server/transport/http-server.js";
import {
  BEARER,
  captureLogger,
  CLIENT_JOIN_TOKEN,
  ENROLLMENT_SECRET,
  EXPIRES,
  FakeService,
  makeTlsFiles,
  NEXT_ENROLLMENT_EXPIRES,
  NEXT_ENROLLMENT_SECRET,
  type TlsFiles,
} from "../server/transport/fixtures.js";

// The client against the server's real HTTP transport (server/transport/http-server.ts) over a fake
// service, so the wire format and error shape are the server's own; and against a bare https server
// for what a real hpcs server never does (hang, answer garbage). TLS from a throw-away CA, so this
// needs no bench.

const oneLine = (e: unknown) => {
  assert.ok(e instanceof HpcsServerError, String(e));
  assert.ok(!e.message.includes("\n"), e.message);
  for (const s of [ENROLLMENT_SECRET, BEARER]) assert.ok(!e.message.includes(s), "no secret in the message");
  return e;
};

const rejectsWith = async (p: Promise<unknown>, code: string, match?: RegExp) => {
  await assert.rejects(p, (e: unknown) => {
    const err = oneLine(e);
    assert.equal(err.code, code, err.message);
    if (match) assert.match(err.message, match);
    return true;
  });
};

describe("client/hpcs-server-client", function () {
  this.timeout(20_000);
  let tls: TlsFiles;
  let otherTls: TlsFiles;
  const service = new FakeService();
  let handle: HttpServerHandle;
  let client: HpcsServerClient;

  before(async () => {
    tls = makeTlsFiles();
    otherTls = makeTlsFiles();
    handle = await startHttpServer(service, captureLogger().logger, {
      host: "127.0.0.1",
      port: 0,
      tls: { certFile: tls.certFile, keyFile: tls.keyFile },
    });
    client = new HpcsServerClient({ url: `https://127.0.0.1:${handle.port}/`, caPem: tls.ca });
  });

  after(async () => {
    await handle?.close();
    tls?.cleanup();
    otherTls?.cleanup();
  });

  beforeEach(() => {
    service.calls = [];
    service.failWith = undefined;
    service.healthStatus = "serving";
  });

  /** A bare https server answering with `handler`, for one test. */
  async function rawServer(
    handler: (req: IncomingMessage, res: ServerResponse) => void,
    host = "127.0.0.1",
  ): Promise<{ url: string; server: Server; close(): Promise<void> }> {
    const server = createServer(
      { cert: readFileSync(tls.certFile), key: readFileSync(tls.keyFile) },
      handler,
    );
    server.listen(0, host);
    await once(server, "listening");
    const port = (server.address() as AddressInfo).port;
    return {
      url: `https://${host}:${port}`,
      server,
      close: () =>
        new Promise((resolve) => {
          server.closeAllConnections();
          server.close(() => resolve());
        }),
    };
  }

  it("register: sends name, secret and selectors; parses dates and the next enrollment secret", async () => {
    const r = await client.register({
      clientName: "alice",
      enrollmentSecret: ENROLLMENT_SECRET,
      selectors: [{ type: "unix", value: "uid:1000" }],
    });
    assert.deepEqual(service.last().req, {
      clientName: "alice",
      enrollmentSecret: ENROLLMENT_SECRET,
      selectors: [{ type: "unix", value: "uid:1000" }],
    });
    assert.equal(service.last().ctx.bearerJwt, undefined);
    assert.deepEqual(r, {
      clientId: "alice",
      agentSpiffeId: "spiffe://hpcs.test/c/alice",
      workloadSpiffeId: "spiffe://hpcs.test/c/alice/workload",
      joinToken: CLIENT_JOIN_TOKEN,
      joinTokenExpiresAt: EXPIRES,
      vaultRole: "hpcs-client-alice",
      secretPathPrefix: "hpcs/alice/",
      trustDomain: "hpcs.test",
      nextEnrollmentSecret: NEXT_ENROLLMENT_SECRET,
      nextEnrollmentExpiresAt: NEXT_ENROLLMENT_EXPIRES,
    });
  });

  it("grant and revoke: bearer header, ISO expiry, encoded path and deleteSecret flag", async () => {
    const g = await client.grant(BEARER, {
      secret: "data.1",
      nodes: ["nid001"],
      users: ["alice"],
      groups: ["proj"],
      expiresAt: new Date("2030-01-31T12:00:00Z"),
    });
    assert.equal(service.last().ctx.bearerJwt, BEARER);
    assert.deepEqual(service.last().req, {
      secret: "data.1",
      nodes: ["nid001"],
      users: ["alice"],
      groups: ["proj"],
      expiresAt: new Date("2030-01-31T12:00:00Z"),
    });
    assert.equal(g.spiffeId, "spiffe://hpcs.test/c/alice/s/data.1");
    assert.equal(g.entriesCreated, 2);
    assert.deepEqual(g.expiresAt, new Date("2030-01-31T12:00:00Z"));

    const noExpiry = await client.grant(BEARER, { secret: "d2", nodes: ["n1"], users: ["u1"], groups: [] });
    assert.equal(noExpiry.expiresAt, undefined);

    assert.deepEqual(await client.revoke(BEARER, "data.1", { deleteSecret: true }), {
      entriesDeleted: 2,
      roleDeleted: true,
      policyDeleted: true,
      secretDeleted: true,
    });
    assert.deepEqual(service.last().req, { secret: "data.1", deleteSecret: true });
    assert.equal((await client.revoke(BEARER, "data.1", { deleteSecret: false })).secretDeleted, false);
    assert.deepEqual(service.last().req, { secret: "data.1", deleteSecret: false });
  });

  it("health: 200 serving and 503 not_serving are both answers", async () => {
    assert.deepEqual(await client.health(), { status: "serving", spire: true, vault: true, version: "test" });
    service.healthStatus = "not_serving";
    assert.equal((await client.health()).status, "not_serving");
  });

  it("server errors keep code, status and request id, in one line", async () => {
    service.failWith = "unauthenticated";
    await assert.rejects(
      client.register({ clientName: "alice", enrollmentSecret: ENROLLMENT_SECRET }),
      (e: unknown) => {
        const err = oneLine(e);
        assert.equal(err.code, "unauthenticated");
        assert.equal(err.status, 401);
        assert.match(err.requestId ?? "", /./);
        assert.match(
          err.message,
          /^register: fake unauthenticated from registerClient \[hpcs server: HTTP 401/,
        );
        return true;
      },
    );
    for (const [code, status] of [
      ["permission_denied", 403],
      ["not_found", 404],
      ["unavailable", 503],
      ["invalid_argument", 400],
    ] as const) {
      service.failWith = code;
      await assert.rejects(
        client.grant(BEARER, { secret: "s", nodes: ["n"], users: ["u"], groups: [] }),
        (e) => {
          const err = oneLine(e);
          assert.equal(err.code, code);
          assert.equal(err.status, status);
          return true;
        },
      );
    }
  });

  it("cuts the enrollment secret and the bearer out of anything the server echoes", async () => {
    // Echoes whatever credential it was sent, on two lines.
    const raw = await rawServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const body = Buffer.concat(chunks).toString("utf8");
        const sent = body ? String(JSON.parse(body).enrollmentSecret) : String(req.headers.authorization);
        res.writeHead(401, { "content-type": "application/json" });
        res.end(
          JSON.stringify({
            error: { code: "unauthenticated", message: `you sent ${sent}\nsecond line`, requestId: "r1" },
          }),
        );
      });
    });
    try {
      const c = new HpcsServerClient({ url: raw.url, caPem: tls.ca });
      await rejectsWith(
        c.register({ clientName: "alice", enrollmentSecret: ENROLLMENT_SECRET }),
        "unauthenticated",
        /<redacted>/,
      );
      await rejectsWith(c.revoke(BEARER, "s", { deleteSecret: false }), "unauthenticated", /<redacted>/);
    } finally {
      await raw.close();
    }
  });

  it("an unreachable server: one line naming the URL, the errno and [hpcs-server] url", async () => {
    const raw = await rawServer(() => undefined);
    const url = raw.url;
    await raw.close();
    const c = new HpcsServerClient({ url, caPem: tls.ca });
    await assert.rejects(c.health(), (e: unknown) => {
      const err = oneLine(e);
      assert.equal(err.code, "unreachable");
      assert.equal(
        err.message,
        `cannot reach the hpcs server at ${url}: ECONNREFUSED; check [hpcs-server] url`,
      );
      return true;
    });
  });

  it("TLS failures name ca-file (wrong CA) or the URL (name not in the certificate)", async () => {
    const wrongCa = new HpcsServerClient({ url: client.url, caFile: join(otherTls.dir, "ca.crt") });
    await rejectsWith(wrongCa.health(), "tls", /check \[hpcs-server\] ca-file \(.*ca\.crt\)/);
    const systemCas = new HpcsServerClient({ url: client.url });
    await rejectsWith(systemCas.health(), "tls", /ca-file \(unset, so the system CAs are used\)/);

    const raw = await rawServer((_req, res) => res.end("{}"), "127.0.0.2");
    try {
      const c = new HpcsServerClient({ url: raw.url, caPem: tls.ca });
      await rejectsWith(c.health(), "tls", /does not name 127\.0\.0\.2; check \[hpcs-server\] url/);
    } finally {
      await raw.close();
    }
  });

  it("a server that does not answer: timeout within the bound; an abort ends the call at once", async () => {
    const raw = await rawServer(() => undefined);
    try {
      const c = new HpcsServerClient({ url: raw.url, caPem: tls.ca, timeoutMs: 300 });
      const t0 = Date.now();
      await rejectsWith(c.health(), "timeout", /within 300 ms/);
      assert.ok(Date.now() - t0 < 3000);

      const ac = new AbortController();
      const pending = c.health({ signal: ac.signal, timeoutMs: 10_000 });
      setTimeout(() => ac.abort(), 100);
      await rejectsWith(pending, "aborted");
      await rejectsWith(c.health({ signal: AbortSignal.abort() }), "aborted");
    } finally {
      await raw.close();
    }
  });

  it("garbage answers: not JSON, no error object, a missing field", async () => {
    let answer: { status: number; body: string } = { status: 502, body: "<html>bad gateway</html>" };
    const raw = await rawServer((_req, res) => {
      res.writeHead(answer.status, { "content-type": "application/json" });
      res.end(answer.body);
    });
    try {
      const c = new HpcsServerClient({ url: raw.url, caPem: tls.ca });
      await rejectsWith(c.health(), "bad_response", /HTTP 502 without its JSON body/);
      answer = { status: 500, body: '{"oops":1}' };
      await rejectsWith(c.health(), "bad_response", /HTTP 500 without its JSON error/);
      answer = { status: 200, body: JSON.stringify({ clientId: "alice" }) };
      await rejectsWith(
        c.register({ clientName: "alice", enrollmentSecret: ENROLLMENT_SECRET }),
        "bad_response",
        /without a valid agentSpiffeId \(a string\)/,
      );
    } finally {
      await raw.close();
    }
  });

  it("refuses bad input before sending anything: names, bearer, plain http, unreadable ca-file", async () => {
    await rejectsWith(
      client.revoke(BEARER, "../x", { deleteSecret: false }),
      "invalid_argument",
      /^secret: /,
    );
    await rejectsWith(
      client.grant(BEARER, { secret: "a/b", nodes: ["n"], users: [], groups: [] }),
      "invalid_argument",
    );
    await rejectsWith(
      client.register({ clientName: "Alice;x", enrollmentSecret: ENROLLMENT_SECRET }),
      "invalid_argument",
      /^clientName: /,
    );
    await rejectsWith(client.register({ clientName: "alice", enrollmentSecret: "" }), "invalid_argument");
    await rejectsWith(
      client.grant("not a jwt\r\nx: y", { secret: "s", nodes: ["n"], users: [], groups: [] }),
      "invalid_argument",
      /not a JWT/,
    );
    assert.equal(service.calls.length, 0);

    assert.throws(
      () => new HpcsServerClient({ url: "http://127.0.0.1:10080" }),
      (e: unknown) => oneLine(e).code === "config" && /is not https/.test((e as Error).message),
    );
    assert.throws(
      () => new HpcsServerClient({ url: "https://h:1", caFile: "/nonexistent/ca.pem" }),
      (e: unknown) =>
        oneLine(e).code === "config" &&
        (e as Error).message ===
          "cannot read [hpcs-server] ca-file /nonexistent/ca.pem: ENOENT; point it at the PEM CA of the hpcs server's certificate",
    );
  });
});
