import assert from "node:assert/strict";
import { CallerAuthenticator } from "../../../../server/service/caller.js";
import { ServiceError } from "../../../../server/service/types.js";
import { FakeSpire } from "./fakes.js";

// On the mTLS listener the transport has verified the peer's X509-SVID; the authenticator only maps it
// to a client id, exactly as it maps a JWT-SVID's subject.
describe("server/service/caller with an mTLS peer ID", () => {
  const caller = () => new CallerAuthenticator({ spire: new FakeSpire(), trustDomain: "hpcs.test" });

  it("takes the client id from the peer's SPIFFE ID, without fetching the bundle or reading a JWT", async () => {
    const spire = new FakeSpire();
    spire.getBundle = () => Promise.reject(new Error("must not be called"));
    const c = new CallerAuthenticator({ spire, trustDomain: "hpcs.test" });
    assert.equal(
      await c.authenticate({
        requestId: "r",
        peerSpiffeId: "spiffe://hpcs.test/c/lab-1/workload",
        bearerJwt: "not-a-jwt",
      }),
      "lab-1",
    );
  });

  it("refuses a peer that is no client workload, naming the X509-SVID", async () => {
    for (const id of [
      "spiffe://hpcs.test/c/lab-1/tool",
      "spiffe://hpcs.test/hpcs-server",
      "spiffe://other.test/c/lab-1/workload",
      "spiffe://hpcs.test/c/Not_A_Name/workload",
    ]) {
      await assert.rejects(caller().authenticate({ requestId: "r", peerSpiffeId: id }), (e: unknown) => {
        assert.ok(e instanceof ServiceError, String(e));
        assert.equal(e.code, "unauthenticated");
        assert.match(
          e.message,
          /^X509-SVID ".*" is not a client workload \(spiffe:\/\/hpcs.test\/c\/<client-id>\/workload\)$/,
        );
        return true;
      });
    }
  });
});
