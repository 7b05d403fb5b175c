import assert from "node:assert/strict";
import type { X509Certificate } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from "jose";
import { type JwtSvid, WorkloadClient } from "../../../lib/spiffe/workload-client.js";
import { X509Source } from "../../../lib/spiffe/x509-source.js";
import { eventually } from "../../support/exec.js";
import { nonce, TestAgent } from "../../support/spire.js";
import { loadStackEnv, type StackEnv } from "../../support/stack-env.js";

// The Workload API client against a real spire-agent attested to the bench's SPIRE server.
describe("spiffe: Workload API client against spire-agent", () => {
  const n = nonce();
  const audience = `hpcs-wl-${n}`;
  let env: StackEnv;
  let workloadId = "";
  let agent: TestAgent | undefined;
  let deniedAgent: TestAgent | undefined;
  let client: WorkloadClient | undefined;
  let deniedClient: WorkloadClient | undefined;
  let source: X509Source | undefined;
  let svid: JwtSvid;

  before(async () => {
    env = loadStackEnv();
    workloadId = `spiffe://${env.trust_domain}/wl-test/workload-${n}`;
    agent = await TestAgent.start(env, `spiffe://${env.trust_domain}/wl-test/agent-${n}`);
    // The tests run as root: the agent's unix attestor gives this process the selector unix:uid:0.
    await agent.register(workloadId, ["unix:uid:0"]);
    client = new WorkloadClient(`unix://${agent.socket}`);
    // The new entry reaches the agent on its next sync, a few seconds away.
    const c = client;
    const svids = await eventually("JWT-SVID through the Workload API client", 60_000, () =>
      c.fetchJwtSvid({ audience: [audience] }),
    );
    svid = svids[0] as JwtSvid;
  });

  after(async () => {
    source?.close();
    client?.close();
    deniedClient?.close();
    await agent?.stop();
    await deniedAgent?.stop();
  });

  it("fetches a JWT-SVID for the registered ID and audience", () => {
    assert.equal(svid.spiffeId.toString(), workloadId);
    const claims = JSON.parse(Buffer.from(svid.token.split(".")[1] ?? "", "base64url").toString("utf8"));
    assert.equal(claims.sub, workloadId);
    assert.deepEqual(claims.aud, [audience]);
    assert.equal(svid.expiresAt.getTime(), claims.exp * 1000);
    assert.ok(svid.expiresAt.getTime() > Date.now());
  });

  it("fetches only the requested SPIFFE ID's JWT-SVID", async () => {
    const svids = await (client as WorkloadClient).fetchJwtSvid({
      audience: [audience],
      spiffeId: workloadId,
    });
    assert.deepEqual(
      svids.map((s) => s.spiffeId.toString()),
      [workloadId],
    );
  });

  it("has the agent validate the JWT-SVID for its audience and refuse it for another", async () => {
    const c = client as WorkloadClient;
    const ok = await c.validateJwtSvid(svid.token, audience);
    assert.equal(ok.spiffeId.toString(), workloadId);
    assert.equal(ok.claims.sub, workloadId);
    assert.deepEqual(ok.claims.aud, [audience]);
    await assert.rejects(
      c.validateJwtSvid(svid.token, `${audience}-other`),
      (err: Error & { code?: number }) => {
        assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
        assert.ok(
          err.message.startsWith(`workload API at ${agent?.socket}: ValidateJWTSVID refused: `),
          err.message,
        );
        assert.match(err.message, /audience/);
        return true;
      },
    );
  });

  it("fetches the JWT bundle of hpcs.test, whose keys verify the JWT-SVID", async () => {
    const bundles = await (client as WorkloadClient).fetchJwtBundles();
    const jwks = bundles.get(env.trust_domain);
    assert.ok(jwks, `bundles for ${[...bundles.keys()].join(", ")} include ${env.trust_domain}`);
    const { kid } = decodeProtectedHeader(svid.token);
    assert.ok(
      jwks.keys.some((k) => k.kid === kid),
      "the token's kid is in the bundle",
    );
    const verified = await jwtVerify(svid.token, createLocalJWKSet(jwks), { audience });
    assert.equal(verified.payload.sub, workloadId);
  });

  it("keeps an X509-SVID for the registered ID that chains to the trust bundle", async () => {
    source = new X509Source(client as WorkloadClient, { initialBackoffMs: 200, maxBackoffMs: 2000 });
    const x = await source.waitReady(60_000);
    assert.equal(x.spiffeId.toString(), workloadId);
    const leaf = x.chain[0] as X509Certificate;
    assert.equal(leaf.subjectAltName, `URI:${workloadId}`);
    assert.ok(leaf.checkPrivateKey(x.key));
    assert.ok(x.expiresAt.getTime() > Date.now());
    // Walk leaf -> intermediates -> a CA of the bundle, checking each signature.
    const path = [...x.chain];
    let cert = path.shift() as X509Certificate;
    for (;;) {
      const issuer: X509Certificate | undefined =
        path.find((c) => cert.checkIssued(c)) ?? x.bundle.find((c) => cert.checkIssued(c));
      assert.ok(issuer, `an issuer of ${cert.subject} is in the chain or the bundle`);
      assert.ok(cert.verify(issuer.publicKey), `${cert.subject} is signed by ${issuer.subject}`);
      if (x.bundle.includes(issuer)) break;
      cert = issuer;
      path.splice(path.indexOf(issuer), 1);
    }
    assert.equal(source.current(), x);
  });

  it("tells a process without a matching entry that no identity was issued", async () => {
    deniedAgent = await TestAgent.start(env, `spiffe://${env.trust_domain}/wl-test/denied-agent-${n}`);
    // The only entry selects another uid, so this (uid 0) process matches nothing.
    await deniedAgent.register(`spiffe://${env.trust_domain}/wl-test/denied-${n}`, ["unix:uid:4242"]);
    deniedClient = new WorkloadClient(deniedAgent.socket);
    const want = `workload API at ${deniedAgent.socket}: no identity issued (is a registration entry for this process's selectors present?)`;
    await assert.rejects(deniedClient.fetchJwtSvid({ audience: [audience] }), {
      code: grpc.status.PERMISSION_DENIED,
      message: want,
    });
    const denied = new X509Source(deniedClient, { initialBackoffMs: 200 });
    try {
      await assert.rejects(denied.waitReady(1500), (err: Error) => err.message.endsWith(want));
    } finally {
      denied.close();
    }
  });
});
