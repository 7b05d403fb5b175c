import assert from "node:assert/strict";
import { ClientRegistrar } from "../../../../server/service/clients.js";
import { Enrollments } from "../../../../server/service/enrollment.js";
import { ServiceError } from "../../../../server/service/types.js";
import { FakeLogger, FakeSpire, FakeVault, testConfig } from "./fakes.js";

const code = (c: string) => (e: unknown) => {
  assert.ok(e instanceof ServiceError, String(e));
  assert.equal(e.code, c, e.message);
  assert.ok(!e.message.includes("\n") && !e.message.includes("tok.en.x"));
  return true;
};

// The registrar's OIDC branch; the token check itself (OidcLogin) is tested against a real provider
// in test/integration/client/oidc-login.test.ts.
describe("server/service/clients (OIDC login)", () => {
  let spire: FakeSpire;
  let vault: FakeVault;
  let enrollments: Enrollments;
  const ctx = { requestId: "r1", peerAddress: "10.1.2.3" };
  const seen: string[] = [];
  const oidc = {
    clientIdFrom: (t: string) => {
      seen.push(t);
      if (t !== "tok.en.x")
        return Promise.reject(new ServiceError("unauthenticated", "OIDC token has expired"));
      return Promise.resolve("lab-7");
    },
  };

  function registrar(withOidc: boolean): ClientRegistrar {
    return new ClientRegistrar({
      config: testConfig("per-job", ""),
      spire,
      vault,
      enrollments,
      logger: new FakeLogger(),
      ...(withOidc ? { oidc } : {}),
      defaultSelectors: [{ type: "unix", value: "uid:1000" }],
    });
  }

  beforeEach(() => {
    spire = new FakeSpire();
    vault = new FakeVault();
    enrollments = new Enrollments({ vault });
    seen.length = 0;
  });

  it("registers the token's client id: entry, policy, role, join token; no enrollment secret", async () => {
    const r = await registrar(true).registerClient(ctx, {
      clientName: "",
      enrollmentSecret: "",
      idToken: "tok.en.x",
    });
    assert.equal(r.clientId, "lab-7");
    assert.equal(r.workloadSpiffeId, "spiffe://hpcs.test/c/lab-7/workload");
    assert.equal(r.nextEnrollmentSecret, undefined);
    assert.equal(spire.entries.size, 1);
    assert.ok(vault.roles.has("hpcs-client-lab-7") && vault.policies.has("hpcs-client-lab-7"));
  });

  it("refuses a bad token, both methods at once, and OIDC when it is off — creating nothing", async () => {
    await assert.rejects(
      registrar(true).registerClient(ctx, { clientName: "", enrollmentSecret: "", idToken: "bad.to.ken" }),
      code("unauthenticated"),
    );
    await assert.rejects(
      registrar(true).registerClient(ctx, {
        clientName: "lab-7",
        enrollmentSecret: "s",
        idToken: "tok.en.x",
      }),
      code("invalid_argument"),
    );
    await assert.rejects(
      registrar(false).registerClient(ctx, { clientName: "", enrollmentSecret: "", idToken: "tok.en.x" }),
      (e: unknown) => code("failed_precondition")(e) && /OIDC login is off/.test((e as Error).message),
    );
    assert.deepEqual(seen, ["bad.to.ken"], "the token is checked only when the request is well-formed");
    assert.equal(spire.entries.size, 0);
    assert.equal(vault.roles.size, 0);
    assert.equal(vault.policies.size, 0);
  });
});
