import assert from "node:assert/strict";
import { fromVaultRole, toVaultRole } from "../../../../lib/vault/jwt-role.js";

describe("jwt role spec", () => {
  it("round-trips through Vault's field names", () => {
    const spec = {
      boundSubject: "spiffe://td/c/x/workload",
      boundAudiences: ["vault"],
      tokenPolicies: ["hpcs-client-x"],
      tokenTtlSec: 60,
      tokenMaxTtlSec: 600,
    };
    const body = toVaultRole(spec);
    assert.equal(body.role_type, "jwt");
    assert.equal(body.user_claim, "sub");
    // Vault answers a role read with many more fields; only ours come back.
    assert.deepEqual(
      fromVaultRole({ ...body, bound_claims: null, token_type: "default", clock_skew_leeway: 0 }),
      spec,
    );
    assert.deepEqual(fromVaultRole({ ...body, token_ttl: 0, token_max_ttl: 0 }), {
      boundSubject: spec.boundSubject,
      boundAudiences: spec.boundAudiences,
      tokenPolicies: spec.tokenPolicies,
    });
  });

  it("refuses a role that would accept any subject or any audience", () => {
    assert.throws(
      () => toVaultRole({ boundSubject: "", boundAudiences: ["v"], tokenPolicies: [] }),
      /boundSubject/,
    );
    assert.throws(
      () => toVaultRole({ boundSubject: "spiffe://td/x", boundAudiences: [], tokenPolicies: [] }),
      /audience/,
    );
  });
});
