import assert from "node:assert/strict";
import { generateKeyPairSync, type KeyObject } from "node:crypto";
import { SignJWT } from "jose";
import type { JwtAuthority } from "../../../../lib/spire/registration.js";
import { CallerAuthenticator } from "../../../../server/service/caller.js";
import { ServiceError } from "../../../../server/service/types.js";
import { FakeSpire } from "./fakes.js";

function key(kid: string): { authority: JwtAuthority; priv: KeyObject } {
  const { publicKey, privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  return {
    authority: { keyId: kid, publicKey: publicKey.export({ format: "der", type: "spki" }), tainted: false },
    priv: privateKey,
  };
}

const unauth = (re?: RegExp) => (e: unknown) => {
  assert.ok(e instanceof ServiceError, String(e));
  assert.equal(e.code, "unauthenticated", e.message);
  assert.ok(!e.message.includes("\n"));
  if (re) assert.match(e.message, re);
  return true;
};

describe("server/service/caller", () => {
  const k1 = key("k1");
  let spire: FakeSpire;
  let now: number;
  let caller: CallerAuthenticator;
  beforeEach(() => {
    spire = new FakeSpire();
    spire.bundle.jwtAuthorities = [k1.authority];
    now = Date.now();
    caller = new CallerAuthenticator({ spire, trustDomain: "hpcs.test", now: () => now });
  });

  async function sign(
    opts: { sub?: string; aud?: string | string[]; exp?: number; kid?: string; priv?: KeyObject } = {},
  ): Promise<string> {
    return new SignJWT({})
      .setProtectedHeader({ alg: "ES256", kid: opts.kid ?? "k1", typ: "JWT" })
      .setSubject(opts.sub ?? "spiffe://hpcs.test/c/lab-1/workload")
      .setAudience(opts.aud ?? "hpcs-server")
      .setIssuedAt(Math.floor(now / 1000))
      .setExpirationTime(opts.exp ?? Math.floor(now / 1000) + 300)
      .sign(opts.priv ?? k1.priv);
  }

  it("returns the client id of a valid JWT-SVID", async () => {
    assert.equal(await caller.authenticate({ requestId: "r", bearerJwt: await sign() }), "lab-1");
    assert.equal(
      await caller.authenticate({ requestId: "r", bearerJwt: await sign({ aud: ["x", "hpcs-server"] }) }),
      "lab-1",
    );
  });

  it("refuses a missing token, wrong audience (TESTING too), expiry, subject and signature", async () => {
    await assert.rejects(caller.authenticate({ requestId: "r" }), unauth());
    await assert.rejects(caller.authenticate({ requestId: "r", bearerJwt: "garbage" }), unauth());
    await assert.rejects(
      caller.authenticate({ requestId: "r", bearerJwt: await sign({ aud: "TESTING" }) }),
      unauth(/audience/),
    );
    await assert.rejects(
      caller.authenticate({ requestId: "r", bearerJwt: await sign({ exp: Math.floor(now / 1000) - 120 }) }),
      unauth(/expired/),
    );
    for (const sub of [
      "spiffe://other.test/c/lab-1/workload",
      "spiffe://hpcs.test/c/lab-1/s/data",
      "spiffe://hpcs.test/c/lab-1",
      "spiffe://hpcs.test/c/Lab_1/workload",
      "not-a-spiffe-id",
    ]) {
      await assert.rejects(
        caller.authenticate({ requestId: "r", bearerJwt: await sign({ sub }) }),
        unauth(),
        sub,
      );
    }
    const forged = await sign({ priv: key("k1").priv });
    await assert.rejects(caller.authenticate({ requestId: "r", bearerJwt: forged }), unauth(/signature/));
  });

  it("refreshes the bundle on an unknown kid (key rotation), but not more than once per interval", async () => {
    await caller.authenticate({ requestId: "r", bearerJwt: await sign() });
    const k2 = key("k2");
    const jwt2 = await sign({ kid: "k2", priv: k2.priv });
    // Just fetched: an unknown kid does not cause another fetch yet.
    await assert.rejects(caller.authenticate({ requestId: "r", bearerJwt: jwt2 }), unauth(/unknown key/));
    assert.equal(spire.calls.filter((c) => c === "getBundle").length, 1);
    spire.bundle = { ...spire.bundle, jwtAuthorities: [k1.authority, k2.authority] };
    now += 6_000;
    assert.equal(
      await caller.authenticate({ requestId: "r", bearerJwt: await sign({ kid: "k2", priv: k2.priv }) }),
      "lab-1",
    );
    assert.equal(spire.calls.filter((c) => c === "getBundle").length, 2);
  });

  it("ignores tainted authorities", async () => {
    spire.bundle.jwtAuthorities = [{ ...k1.authority, tainted: true }];
    await assert.rejects(
      caller.authenticate({ requestId: "r", bearerJwt: await sign() }),
      unauth(/unknown key/),
    );
  });
});
