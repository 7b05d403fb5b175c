import assert from "node:assert/strict";
import { SpiffeId } from "../../../../lib/spiffe-id.js";
import {
  fromEpochSeconds,
  InvalidRegistrationError,
  toEpochSeconds,
  validateEntryId,
  validateEntrySpec,
  validateSelector,
  validateTtl,
} from "../../../../lib/spire/registration.js";

const parent = SpiffeId.parse("spiffe://hpcs.test/h/n1/u/alice");
const ok = {
  spiffeId: parent.child("s", "x"),
  parentId: parent,
  selectors: [{ type: "unix", value: "uid:1000" }],
};

describe("spire/registration: validation", () => {
  it("accepts ordinary selectors, including values with spaces and punctuation", () => {
    for (const s of [
      { type: "unix", value: "uid:1000" },
      { type: "unix", value: "supplementary_group:proj-a" },
      { type: "k8s", value: "pod-label:app:my app" },
      { type: "unix", value: "a;rm -rf /" },
    ]) {
      assert.deepEqual(validateSelector(s), s);
    }
  });

  it("refuses selector types SPIRE would misparse and values with control characters", () => {
    for (const s of [
      { type: "", value: "x" },
      { type: "unix:uid", value: "1" },
      { type: "unix;rm", value: "1" },
      { type: "unix", value: "" },
      { type: "unix", value: "uid:1\n" },
      { type: "unix", value: "uid:\u00001" },
      { type: "unix", value: "uid:\u001b[2J" },
      { type: "unix", value: "uid:\u2028" },
      { type: "unix", value: "x".repeat(1025) },
    ]) {
      assert.throws(() => validateSelector(s), InvalidRegistrationError, JSON.stringify(s));
    }
  });

  it("checks entry specs field by field with a message naming the field", () => {
    assert.equal(validateEntrySpec(ok), ok);
    assert.throws(() => validateEntrySpec({ ...ok, selectors: [] }), /invalid selectors/);
    assert.throws(() => validateEntrySpec({ ...ok, x509SvidTtl: -1 }), /invalid x509SvidTtl/);
    assert.throws(() => validateEntrySpec({ ...ok, jwtSvidTtl: 1.5 }), /invalid jwtSvidTtl/);
    assert.throws(() => validateEntrySpec({ ...ok, expiresAt: new Date("nope") }), /invalid expiresAt/);
    assert.throws(() => validateEntrySpec({ ...ok, hint: "a\nb" }), /invalid hint/);
    const notAnId = "spiffe://hpcs.test/x" as unknown as SpiffeId;
    assert.throws(() => validateEntrySpec({ ...ok, parentId: notAnId }), /invalid entry parent ID/);
  });

  it("accepts SPIRE's entry-ID characters only", () => {
    assert.equal(
      validateEntryId("3f2c0a4e-1b2c-4d5e-8f90-123456789abc"),
      "3f2c0a4e-1b2c-4d5e-8f90-123456789abc",
    );
    for (const bad of ["", "a b", "a;b", "../x", "x".repeat(256), "a\u0000"]) {
      assert.throws(() => validateEntryId(bad), InvalidRegistrationError, bad);
    }
  });

  it("checks join token TTLs", () => {
    assert.equal(validateTtl(600), 600);
    for (const bad of [0, -5, 1.5, Number.NaN, 2 ** 31])
      assert.throws(() => validateTtl(bad), InvalidRegistrationError);
  });

  it("converts epoch seconds both ways, 0 meaning unset", () => {
    assert.equal(toEpochSeconds(undefined), 0);
    assert.equal(toEpochSeconds(new Date(1500)), 1);
    assert.equal(fromEpochSeconds("0"), undefined);
    assert.equal(fromEpochSeconds(undefined), undefined);
    assert.deepEqual(fromEpochSeconds("1700000000"), new Date(1700000000 * 1000));
  });
});
