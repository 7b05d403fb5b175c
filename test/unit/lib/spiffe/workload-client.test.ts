import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import {
  type WorkloadApiError,
  WorkloadClient,
  type X509Context,
} from "../../../../lib/spiffe/workload-client.js";
import { loadWorkloadApi, SECURITY_HEADER } from "../../../../lib/spiffe/workload-proto.js";
import { FakeStatus, FakeWorkloadApi, fakeJwt, NEVER, statusError, until } from "./fake-workload-api.js";
import { TestPki } from "./test-pki.js";

describe("spiffe/workload-client", () => {
  let fake: FakeWorkloadApi;
  let client: WorkloadClient;
  beforeEach(async () => {
    fake = await FakeWorkloadApi.start();
    client = new WorkloadClient(`unix://${fake.socket}`, { timeoutMs: 2000 });
  });
  afterEach(async () => {
    client.close();
    await fake.stop();
  });

  describe("security header", () => {
    it("is the one the specification names", () => assert.equal(SECURITY_HEADER, "workload.spiffe.io"));

    it("is refused by the fake when missing, as spire-agent refuses it", async () => {
      const { Client } = loadWorkloadApi();
      const raw = new Client(`unix://${fake.socket}`, grpc.credentials.createInsecure());
      try {
        const err = await new Promise<grpc.ServiceError | null>((ok) =>
          raw.FetchJWTSVID?.({ audience: ["a"] }, new grpc.Metadata(), (e: grpc.ServiceError | null) =>
            ok(e),
          ),
        );
        assert.equal(err?.code, grpc.status.INVALID_ARGUMENT);
        assert.equal(fake.refused, 1);
      } finally {
        raw.close();
      }
    });

    it("is sent on unary and streaming calls", async () => {
      fake.handlers.fetchJwtSvid = () => ({
        svids: [{ spiffe_id: "spiffe://example.org/w", svid: fakeJwt({ exp: 2e9 }), hint: "" }],
      });
      fake.handlers.jwtBundles = () => ({ bundles: { "spiffe://example.org": Buffer.from('{"keys":[]}') } });
      await client.fetchJwtSvid({ audience: ["a"] });
      await client.fetchJwtBundles();
      const watch = client.watchX509Svids(
        () => {},
        () => {},
      );
      await fake.x509Stream(0);
      watch.close();
      assert.equal(fake.refused, 0);
    });
  });

  describe("socket address", () => {
    it("takes a plain path as well as unix:///path", async () => {
      fake.handlers.fetchJwtSvid = () => ({
        svids: [{ spiffe_id: "spiffe://example.org/w", svid: fakeJwt({ exp: 2e9 }), hint: "" }],
      });
      const plain = new WorkloadClient(fake.socket);
      try {
        assert.equal(plain.socketPath, fake.socket);
        assert.equal((await plain.fetchJwtSvid({ audience: ["a"] })).length, 1);
      } finally {
        plain.close();
      }
    });

    it("refuses addresses that are not unix sockets", () => {
      assert.throws(() => new WorkloadClient("tcp://127.0.0.1:8081"), /only unix sockets/);
      assert.throws(() => new WorkloadClient("unix://relative/agent.sock"), /unix:\/\/\/absolute/);
    });
  });

  describe("fetchJwtSvid", () => {
    it("returns each SVID with its SPIFFE ID and expiry, passing audience and SPIFFE ID", async () => {
      let seen: unknown;
      fake.handlers.fetchJwtSvid = (req) => {
        seen = req;
        return {
          svids: [{ spiffe_id: "spiffe://example.org/w", svid: fakeJwt({ exp: 2_000_000_000 }), hint: "h" }],
        };
      };
      const [svid, ...rest] = await client.fetchJwtSvid({
        audience: ["vault", "x"],
        spiffeId: "spiffe://example.org/w",
      });
      assert.deepEqual(seen, { audience: ["vault", "x"], spiffe_id: "spiffe://example.org/w" });
      assert.equal(rest.length, 0);
      assert.equal(svid?.spiffeId.toString(), "spiffe://example.org/w");
      assert.equal(svid?.expiresAt.getTime(), 2_000_000_000_000);
      assert.equal(svid?.hint, "h");
    });

    it("refuses an empty audience or a bad SPIFFE ID before calling", async () => {
      await assert.rejects(client.fetchJwtSvid({ audience: [] }), /at least one non-empty audience/);
      await assert.rejects(client.fetchJwtSvid({ audience: ["a"], spiffeId: "http://x" }), /spiffe:\/\//);
    });
  });

  describe("validateJwtSvid", () => {
    it("returns the SPIFFE ID and the claims as plain JSON", async () => {
      fake.handlers.validateJwtSvid = (req) => {
        assert.deepEqual(req, { audience: "vault", svid: "tok" });
        return {
          spiffe_id: "spiffe://example.org/w",
          claims: {
            fields: {
              sub: { stringValue: "spiffe://example.org/w" },
              aud: { listValue: { values: [{ stringValue: "vault" }] } },
              exp: { numberValue: 123 },
              ok: { boolValue: true },
              nested: { structValue: { fields: { n: { nullValue: "NULL_VALUE" } } } },
            },
          },
        };
      };
      const v = await client.validateJwtSvid("tok", "vault");
      assert.equal(v.spiffeId.toString(), "spiffe://example.org/w");
      assert.deepEqual(v.claims, {
        sub: "spiffe://example.org/w",
        aud: ["vault"],
        exp: 123,
        ok: true,
        nested: { n: null },
      });
    });

    it("turns a refusal into one line naming the socket", async () => {
      fake.handlers.validateJwtSvid = () => {
        throw new FakeStatus(grpc.status.INVALID_ARGUMENT, "token has an invalid audience");
      };
      await assert.rejects(client.validateJwtSvid("tok", "other"), {
        message: `workload API at ${fake.socket}: ValidateJWTSVID refused: token has an invalid audience`,
        code: grpc.status.INVALID_ARGUMENT,
      });
    });
  });

  describe("fetchJwtBundles", () => {
    it("returns the first message's JWKS keyed by trust domain and ends the stream", async () => {
      const jwks = { keys: [{ kty: "EC", kid: "k1", crv: "P-256", x: "x", y: "y" }] };
      fake.handlers.jwtBundles = () => ({
        bundles: { "spiffe://example.org": Buffer.from(JSON.stringify(jwks)) },
      });
      const bundles = await client.fetchJwtBundles();
      assert.deepEqual([...bundles.keys()], ["example.org"]);
      assert.deepEqual(bundles.get("example.org"), jwks);
      // Up to 10 s: the cancellation reaches the server asynchronously, later on a loaded machine.
      for (let i = 0; i < 500 && fake.cancelledBundleStreams === 0; i++)
        await new Promise((r) => setTimeout(r, 20));
      assert.equal(fake.cancelledBundleStreams, 1, "the server saw the stream cancelled");
    });

    it("rejects a bundle that is not a JWKS", async () => {
      fake.handlers.jwtBundles = () => ({ bundles: { "spiffe://example.org": Buffer.from("nope") } });
      await assert.rejects(client.fetchJwtBundles(), /JWT bundle of example.org is not JSON/);
    });
  });

  describe("errors", () => {
    it("explains PermissionDenied as a missing registration entry", async () => {
      await assert.rejects(client.fetchJwtSvid({ audience: ["a"] }), {
        name: "WorkloadApiError",
        code: grpc.status.PERMISSION_DENIED,
        message: `workload API at ${fake.socket}: no identity issued (is a registration entry for this process's selectors present?)`,
      });
      await assert.rejects(client.fetchJwtBundles(), { code: grpc.status.PERMISSION_DENIED });
    });

    it("names the socket when no agent listens there", async () => {
      const nowhere = new WorkloadClient(`${fake.socket}.missing`, { timeoutMs: 2000 });
      try {
        await assert.rejects(nowhere.fetchJwtSvid({ audience: ["a"] }), (err: WorkloadApiError) => {
          assert.equal(err.code, grpc.status.UNAVAILABLE);
          assert.ok(
            err.message.startsWith(
              `workload API at ${fake.socket}.missing: unavailable (is spire-agent running`,
            ),
            err.message,
          );
          return true;
        });
      } finally {
        nowhere.close();
      }
    });

    it("says so when used after close()", async () => {
      client.close();
      const closed = `workload API at ${fake.socket}: the client is closed`;
      await assert.rejects(client.fetchJwtSvid({ audience: ["a"] }), { message: closed });
      await assert.rejects(client.fetchJwtBundles(), { message: closed });
      assert.throws(
        () =>
          client.watchX509Svids(
            () => {},
            () => {},
          ),
        { message: closed },
      );
    });

    it("puts a deadline on unary calls", async () => {
      const quick = new WorkloadClient(fake.socket, { timeoutMs: 200 });
      fake.handlers.fetchJwtSvid = NEVER;
      try {
        await assert.rejects(quick.fetchJwtSvid({ audience: ["a"] }), {
          code: grpc.status.DEADLINE_EXCEEDED,
          message: `workload API at ${fake.socket}: FetchJWTSVID got no answer within 200 ms`,
        });
      } finally {
        quick.close();
      }
    });
  });

  describe("watchX509Svids", () => {
    let pki: TestPki;
    before(() => {
      pki = TestPki.create();
    });
    after(() => pki.dispose());

    it("delivers each message and reports a broken stream once", async () => {
      const updates: X509Context[] = [];
      const errors: WorkloadApiError[] = [];
      client.watchX509Svids(
        (c) => updates.push(c),
        (e) => errors.push(e),
      );
      const stream = await fake.x509Stream(0);
      stream.write({ svids: [pki.svid("spiffe://example.org/w")], crl: [], federated_bundles: {} });
      await until(() => updates.length === 1);
      assert.equal(updates[0]?.svids[0]?.spiffeId.toString(), "spiffe://example.org/w");
      stream.emit("error", statusError({ code: grpc.status.UNAVAILABLE, details: "agent restarting" }));
      await until(() => errors.length === 1);
      assert.equal(errors[0]?.code, grpc.status.UNAVAILABLE);
      assert.match(errors[0]?.message ?? "", /agent restarting/);
    });

    it("ends the stream on an unusable X509-SVID", async () => {
      const errors: WorkloadApiError[] = [];
      client.watchX509Svids(
        () => assert.fail("no update expected"),
        (e) => errors.push(e),
      );
      const stream = await fake.x509Stream(0);
      const other = pki.leaf("spiffe://example.org/other");
      stream.write({ svids: [pki.svid("spiffe://example.org/w", other)], crl: [], federated_bundles: {} });
      await until(() => errors.length === 1);
      assert.match(
        errors[0]?.message ?? "",
        /unusable X509-SVID: .*URI SANs are \[spiffe:\/\/example.org\/other\]/,
      );
    });

    it("stops silently on close() and on abort", async () => {
      const errors: WorkloadApiError[] = [];
      const w = client.watchX509Svids(
        () => {},
        (e) => errors.push(e),
      );
      const s0 = await fake.x509Stream(0);
      w.close();
      const ac = new AbortController();
      client.watchX509Svids(
        () => {},
        (e) => errors.push(e),
        { signal: ac.signal },
      );
      const s1 = await fake.x509Stream(1);
      ac.abort();
      await until(() => s0.cancelled && s1.cancelled);
      assert.deepEqual(errors, []);
    });
  });
});
