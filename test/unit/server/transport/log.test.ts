import assert from "node:assert/strict";
import { claimedSpiffeId, REDACTED, scrub } from "../../../../lib/log.js";
import { BEARER, captureLogger } from "./fixtures.js";

describe("lib/log (as the transports use it)", () => {
  it("redacts secret-looking keys at any of the first three levels", () => {
    const log = captureLogger();
    log.logger.info(
      {
        authorization: "Bearer abc.def.ghi",
        token: "tok-1",
        req: { headers: { authorization: "Bearer zzz" }, joinToken: "tok-2" },
        body: { enrollmentSecret: "sec-3", password: "pw-4", jwt: "jwt-5" },
        keep: "visible",
      },
      "x",
    );
    const text = log.text();
    for (const s of ["abc.def.ghi", "tok-1", "zzz", "tok-2", "sec-3", "pw-4", "jwt-5"]) {
      assert.ok(!text.includes(s), s);
    }
    assert.ok(text.includes(REDACTED));
    assert.ok(text.includes("visible"));
  });

  it("claimedSpiffeId reads sub without verifying; junk gives undefined", () => {
    assert.equal(claimedSpiffeId(BEARER), "spiffe://hpcs.test/c/alice/workload");
    assert.equal(claimedSpiffeId("not-a-jwt"), undefined);
    assert.equal(claimedSpiffeId(undefined), undefined);
  });

  it("scrub replaces secret values", () => {
    assert.equal(scrub("a SECRET b SECRET", ["SECRET", undefined]), `a ${REDACTED} b ${REDACTED}`);
  });
});
