import assert from "node:assert/strict";
import { inspect } from "node:util";
import { ArtifactSecret } from "../../../../client/artifact/secret.js";

describe("client/artifact/secret", () => {
  it("is 256 fresh bits as 43 base64url characters", () => {
    const a = ArtifactSecret.generate();
    const b = ArtifactSecret.generate();
    assert.match(a.passphrase(), /^[A-Za-z0-9_-]{43}$/);
    assert.equal(Buffer.from(a.passphrase(), "base64url").length, 32);
    assert.notEqual(a.passphrase(), b.passphrase());
    assert.ok(!a.equals(b));
  });

  it("round-trips through its text form (as stored in Vault)", () => {
    const a = ArtifactSecret.generate();
    assert.ok(ArtifactSecret.fromPassphrase(a.passphrase()).equals(a));
  });

  it("never shows its value when logged", () => {
    const a = ArtifactSecret.generate();
    const pass = a.passphrase();
    for (const shown of [String(a), `${a}`, JSON.stringify({ a }), inspect(a), inspect({ nested: { a } })]) {
      assert.ok(!shown.includes(pass), shown);
      assert.match(shown, /redacted/);
    }
  });

  it("rejects a malformed text form without echoing it", () => {
    assert.throws(
      () => ArtifactSecret.fromPassphrase("not-a-secret"),
      (err: Error) => !err.message.includes("not-a-secret") && /43 base64url/.test(err.message),
    );
  });
});
