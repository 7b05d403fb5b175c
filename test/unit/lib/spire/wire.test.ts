import assert from "node:assert/strict";
import { SpiffeId } from "../../../../lib/spiffe-id.js";
import {
  fromWireBundle,
  fromWireCreateResult,
  fromWireDeleteResult,
  fromWireEntry,
  fromWireSpiffeId,
  sameSelectors,
  toWireEntry,
} from "../../../../lib/spire/wire.js";

const parent = SpiffeId.parse("spiffe://hpcs.test/h/n1/u/alice");
const child = parent.child("s", "data");

describe("spire/wire", () => {
  it("round-trips an entry spec through the API's Entry message", () => {
    const expiresAt = new Date("2030-01-01T00:00:00Z");
    const wire = toWireEntry({
      spiffeId: child,
      parentId: parent,
      selectors: [{ type: "unix", value: "uid:1000" }],
      x509SvidTtl: 300,
      expiresAt,
      hint: "data",
    });
    assert.deepEqual(wire.spiffe_id, { trust_domain: "hpcs.test", path: "/h/n1/u/alice/s/data" });
    assert.equal(wire.expires_at, 1893456000);
    assert.equal(wire.jwt_svid_ttl, 0);
    const back = fromWireEntry({ ...wire, id: "e1", expires_at: "1893456000", created_at: "0" });
    assert.equal(back.id, "e1");
    assert.ok(back.spiffeId.equals(child));
    assert.ok(back.parentId.equals(parent));
    assert.deepEqual(back.expiresAt, expiresAt);
    assert.equal(back.x509SvidTtl, 300);
    assert.equal(back.jwtSvidTtl, undefined);
    assert.equal(back.createdAt, undefined);
    assert.equal(back.hint, "data");
  });

  it("accepts a path without its leading slash and rejects a missing ID", () => {
    assert.equal(
      fromWireSpiffeId({ trust_domain: "hpcs.test", path: "a/b" }).toString(),
      "spiffe://hpcs.test/a/b",
    );
    assert.throws(() => fromWireSpiffeId(null));
  });

  it("maps per-entry create statuses: OK, ALREADY_EXISTS with the existing id, other codes", () => {
    const entry = { id: "e1", ...toWireEntry({ spiffeId: child, parentId: parent, selectors: [] }) };
    assert.equal(fromWireCreateResult({ status: { code: 0, message: "OK" }, entry }).status, "created");
    const exists = fromWireCreateResult({
      status: { code: 6, message: "similar entry already exists" },
      entry,
    });
    assert.equal(exists.status, "exists");
    assert.equal(exists.status === "exists" && exists.id, "e1");
    assert.deepEqual(
      fromWireCreateResult({ status: { code: 3, message: "invalid selector" }, entry: null }),
      {
        status: "error",
        code: 3,
        message: "invalid selector",
      },
    );
    // ALREADY_EXISTS without an id (what the CLI prints) cannot be reported as "exists" here.
    assert.equal(fromWireCreateResult({ status: { code: 6 }, entry: { ...entry, id: "" } }).status, "error");
    assert.equal(fromWireCreateResult({ status: { code: 0 }, entry: null }).status, "error");
  });

  it("maps per-id delete statuses", () => {
    assert.deepEqual(fromWireDeleteResult({ id: "a", status: { code: 0 } }, "a"), {
      id: "a",
      status: "deleted",
    });
    assert.deepEqual(fromWireDeleteResult({ id: "a", status: { code: 5 } }, "a"), {
      id: "a",
      status: "not-found",
    });
    assert.deepEqual(fromWireDeleteResult({ status: { code: 7, message: "no" } }, "b"), {
      id: "b",
      status: "error",
      code: 7,
      message: "no",
    });
  });

  it("reads bundles with Buffer (gRPC) or base64 (CLI) bytes", () => {
    const der = Buffer.from([0x30, 0x82, 0x01]);
    for (const asn1 of [der, der.toString("base64")]) {
      const b = fromWireBundle({
        trust_domain: "hpcs.test",
        x509_authorities: [{ asn1 }],
        jwt_authorities: [{ key_id: "k", public_key: asn1, expires_at: "1700000000" }],
        sequence_number: "2",
      });
      assert.deepEqual(b.x509Authorities, [der]);
      assert.deepEqual(b.jwtAuthorities[0]?.publicKey, der);
      assert.deepEqual(b.jwtAuthorities[0]?.expiresAt, new Date(1700000000 * 1000));
      assert.equal(b.sequenceNumber, 2);
    }
  });

  it("compares selector sets regardless of order", () => {
    const a = { type: "unix", value: "uid:1" };
    const b = { type: "unix", value: "gid:2" };
    assert.ok(sameSelectors([a, b], [b, a]));
    assert.ok(!sameSelectors([a], [a, b]));
    assert.ok(!sameSelectors([{ type: "unix:uid", value: "1" }], [{ type: "unix", value: "uid:1" }]));
  });
});
