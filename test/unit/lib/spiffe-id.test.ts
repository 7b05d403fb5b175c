import assert from "node:assert/strict";
import { InvalidSpiffeIdError, SpiffeId } from "../../../lib/spiffe-id.js";

describe("SpiffeId", () => {
  it("parses and prints trust domain and path", () => {
    const id = SpiffeId.parse("spiffe://hpcs.test/c/lab-42/workload");
    assert.equal(id.trustDomain, "hpcs.test");
    assert.equal(id.path, "/c/lab-42/workload");
    assert.deepEqual(id.segments, ["c", "lab-42", "workload"]);
    assert.equal(id.toString(), "spiffe://hpcs.test/c/lab-42/workload");
    assert.equal(SpiffeId.parse("spiffe://hpcs.test").path, "");
  });

  it("refuses what the SPIFFE-ID spec forbids", () => {
    for (const bad of [
      "http://hpcs.test/x",
      "spiffe://",
      "spiffe://HPCS.test/x",
      "spiffe://hpcs.test:443/x",
      "spiffe://user@hpcs.test/x",
      "spiffe://hpcs.test/",
      "spiffe://hpcs.test//x",
      "spiffe://hpcs.test/x/../y",
      "spiffe://hpcs.test/x/./y",
      "spiffe://hpcs.test/x?q=1",
      "spiffe://hpcs.test/x#f",
      "spiffe://hpcs.test/x y",
    ]) {
      assert.throws(() => SpiffeId.parse(bad), InvalidSpiffeIdError, bad);
    }
  });

  it("builds from segments and refuses a segment that smuggles a '/'", () => {
    const base = SpiffeId.of("hpcs.test", "h", "nid001");
    assert.equal(base.child("u", "alice").toString(), "spiffe://hpcs.test/h/nid001/u/alice");
    assert.throws(() => base.child("u/../../c/x"), InvalidSpiffeIdError);
  });

  it("tells whether an ID lies within another, by whole segments", () => {
    const client = SpiffeId.parse("spiffe://hpcs.test/c/lab");
    assert.ok(SpiffeId.parse("spiffe://hpcs.test/c/lab/s/data").isWithin(client));
    assert.ok(client.isWithin(client));
    assert.ok(!SpiffeId.parse("spiffe://hpcs.test/c/lab2/s/data").isWithin(client));
    assert.ok(!SpiffeId.parse("spiffe://other.test/c/lab").isWithin(client));
  });
});
