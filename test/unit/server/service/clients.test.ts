import assert from "node:assert/strict";
import { ClientRegistrar } from "../../../../server/service/clients.js";
import { Enrollments } from "../../../../server/service/enrollment.js";
import { ServiceError } from "../../../../server/service/types.js";
import { boom, FakeLogger, FakeSpire, FakeVault, testConfig } from "./fakes.js";

const code = (c: string) => (e: unknown) => {
  assert.ok(e instanceof ServiceError, String(e));
  assert.equal(e.code, c, e.message);
  assert.ok(!e.message.includes("\n"));
  return true;
};

describe("server/service/clients", () => {
  let spire: FakeSpire;
  let vault: FakeVault;
  let enrollments: Enrollments;
  let logger: FakeLogger;
  const ctx = { requestId: "r1", peerAddress: "::ffff:10.1.2.3" };

  function registrar(extra = ""): ClientRegistrar {
    return new ClientRegistrar({
      config: testConfig("per-job", extra),
      spire,
      vault,
      enrollments,
      logger,
      defaultSelectors: [{ type: "unix", value: "uid:1000" }],
    });
  }

  beforeEach(() => {
    spire = new FakeSpire();
    vault = new FakeVault();
    enrollments = new Enrollments({ vault });
    logger = new FakeLogger();
  });

  it("registers: workload entry under the client's agent ID, policy, role, join token with alias", async () => {
    const { secret } = await enrollments.enroll("lab-1", 3600);
    const res = await registrar().registerClient(ctx, { clientName: "lab-1", enrollmentSecret: secret });
    assert.equal(res.clientId, "lab-1");
    assert.equal(res.agentSpiffeId, "spiffe://hpcs.test/c/lab-1");
    assert.equal(res.workloadSpiffeId, "spiffe://hpcs.test/c/lab-1/workload");
    assert.equal(res.joinToken, "tok-spiffe://hpcs.test/c/lab-1");
    assert.equal(res.vaultRole, "hpcs-client-lab-1");
    assert.equal(res.secretPathPrefix, "hpcs/lab-1/");
    const [entry] = [...spire.entries.values()];
    assert.equal(entry?.parentId.toString(), "spiffe://hpcs.test/c/lab-1");
    assert.deepEqual(entry?.selectors, [{ type: "unix", value: "uid:1000" }]);
    assert.match(vault.policies.get("hpcs-client-lab-1") ?? "", /kv\/data\/hpcs\/lab-1\/\*[\s\S]*"create"/);
    const role = vault.roles.get("hpcs-client-lab-1");
    assert.equal(role?.boundSubject, "spiffe://hpcs.test/c/lab-1/workload");
    assert.deepEqual(role?.boundAudiences, ["vault"]);
    assert.equal(logger.warnings.length, 0);
    // single use
    await assert.rejects(
      registrar().registerClient(ctx, { clientName: "lab-1", enrollmentSecret: secret }),
      code("unauthenticated"),
    );
  });

  it("rotates: a registration returns the next one-time secret, which registers again", async () => {
    const { secret } = await enrollments.enroll("lab-1", 3600);
    const before = Date.now();
    const res = await registrar().registerClient(ctx, { clientName: "lab-1", enrollmentSecret: secret });
    const next = res.nextEnrollmentSecret;
    assert.ok(next);
    assert.match(next, /^[A-Za-z0-9_-]{43}$/);
    assert.notEqual(next, secret);
    const ttl = (res.nextEnrollmentExpiresAt?.getTime() ?? 0) - before;
    assert.ok(ttl >= 30 * 86400_000 - 5000 && ttl <= 30 * 86400_000 + 5000, `ttl ${ttl}`);
    await assert.rejects(
      registrar().registerClient(ctx, { clientName: "lab-1", enrollmentSecret: secret }),
      code("unauthenticated"),
    );
    const again = await registrar().registerClient(ctx, { clientName: "lab-1", enrollmentSecret: next });
    assert.ok(again.nextEnrollmentSecret && again.nextEnrollmentSecret !== next);
    await assert.rejects(
      registrar().registerClient(ctx, { clientName: "lab-1", enrollmentSecret: next }),
      code("unauthenticated"),
    );
    assert.equal(logger.warnings.length, 0);
  });

  it("rotation TTL comes from the options", async () => {
    const { secret } = await enrollments.enroll("lab-1", 3600);
    const r = new ClientRegistrar({
      config: testConfig(),
      spire,
      vault,
      enrollments,
      logger,
      defaultSelectors: [{ type: "unix", value: "uid:1000" }],
      enrollmentRotationTtlSec: 7200,
    });
    const before = Date.now();
    const res = await r.registerClient(ctx, { clientName: "lab-1", enrollmentSecret: secret });
    const ttl = (res.nextEnrollmentExpiresAt?.getTime() ?? 0) - before;
    assert.ok(ttl >= 7_195_000 && ttl <= 7_205_000, `ttl ${ttl}`);
  });

  it("a failed rotation keeps the registration (join token) but issues no next secret, and warns", async () => {
    const { secret } = await enrollments.enroll("lab-1", 3600);
    const failing = {
      redeem: enrollments.redeem.bind(enrollments),
      release: enrollments.release.bind(enrollments),
      rotate: () => Promise.reject(boom("rotate")),
    };
    const r = new ClientRegistrar({
      config: testConfig(),
      spire,
      vault,
      enrollments: failing,
      logger,
      defaultSelectors: [{ type: "unix", value: "uid:1000" }],
    });
    const res = await r.registerClient(ctx, { clientName: "lab-1", enrollmentSecret: secret });
    assert.equal(res.joinToken, "tok-spiffe://hpcs.test/c/lab-1");
    assert.equal(res.nextEnrollmentSecret, undefined);
    assert.equal(res.nextEnrollmentExpiresAt, undefined);
    assert.equal(logger.warnings.length, 1);
    assert.match(logger.warnings[0]?.msg ?? "", /next enrollment secret not issued/);
    assert.ok(vault.roles.has("hpcs-client-lab-1"), "the registration stands");
  });

  it("refuses bad names and selectors with one line and creates nothing", async () => {
    const { secret } = await enrollments.enroll("lab-1", 3600);
    vault.calls = [];
    for (const clientName of ["a;b", "../x", "x".repeat(300), ""]) {
      await assert.rejects(
        registrar().registerClient(ctx, { clientName, enrollmentSecret: secret }),
        code("invalid_argument"),
      );
    }
    await assert.rejects(
      registrar().registerClient(ctx, {
        clientName: "lab-1",
        enrollmentSecret: secret,
        selectors: [{ type: "unix:x", value: "uid:1" }],
      }),
      code("invalid_argument"),
    );
    assert.deepEqual(spire.calls, []);
    assert.deepEqual(vault.calls, []);
  });

  it("without a secret and without the insecure switch: unauthenticated, nothing created", async () => {
    await assert.rejects(
      registrar().registerClient(ctx, { clientName: "lab-1", enrollmentSecret: "" }),
      code("unauthenticated"),
    );
    assert.deepEqual(spire.calls, []);
    assert.deepEqual(vault.writes(), []);
  });

  for (const step of ["batchCreateEntries", "writePolicy", "writeJwtRole", "createJoinToken"]) {
    it(`rolls back everything when ${step} fails, and the secret stays usable`, async () => {
      const { secret } = await enrollments.enroll("lab-1", 3600);
      (step === "batchCreateEntries" || step === "createJoinToken" ? spire : vault).failOn.set(
        step,
        boom(step),
      );
      await assert.rejects(
        registrar().registerClient(ctx, { clientName: "lab-1", enrollmentSecret: secret }),
      );
      assert.equal(spire.entries.size, 0);
      assert.equal(vault.policies.size, 0);
      assert.equal(vault.roles.size, 0);
      spire.failOn.clear();
      vault.failOn.clear();
      const res = await registrar().registerClient(ctx, { clientName: "lab-1", enrollmentSecret: secret });
      assert.ok(res.nextEnrollmentSecret, "rotation happens only on the successful attempt");
    });
  }

  it("rolls back when SPIRE refuses the entry", async () => {
    const { secret } = await enrollments.enroll("lab-1", 3600);
    spire.refuseEntries.add(0);
    await assert.rejects(
      registrar().registerClient(ctx, { clientName: "lab-1", enrollmentSecret: secret }),
      code("internal"),
    );
    assert.equal(vault.policies.size + vault.roles.size + spire.entries.size, 0);
  });

  it("a forced re-registration that fails restores the previous policy and role", async () => {
    const { secret } = await enrollments.enroll("lab-1", 3600);
    await registrar().registerClient(ctx, { clientName: "lab-1", enrollmentSecret: secret });
    const oldRole = vault.roles.get("hpcs-client-lab-1");
    const again = await enrollments.enroll("lab-1", 3600, { force: true });
    spire.failOn.set("createJoinToken", boom("token"));
    await assert.rejects(
      registrar().registerClient(ctx, { clientName: "lab-1", enrollmentSecret: again.secret }),
    );
    assert.deepEqual(vault.roles.get("hpcs-client-lab-1"), oldRole);
    assert.ok(vault.policies.has("hpcs-client-lab-1"));
    assert.equal(spire.entries.size, 1, "the existing workload entry is kept");
  });

  it("insecure IP mode: only when switched on; id from the peer address; warns", async () => {
    const r = registrar("insecure-ip-identity = true");
    const res = await r.registerClient(ctx, { clientName: "ignored", enrollmentSecret: "" });
    assert.equal(res.clientId, "ip-10-1-2-3");
    assert.equal(logger.warnings.length, 1);
    assert.match(logger.warnings[0]?.msg ?? "", /insecure/);
    assert.equal(res.nextEnrollmentSecret, undefined, "no enrollment, nothing to rotate");
    const v6 = await r.registerClient(
      { requestId: "r2", peerAddress: "fd00::1" },
      { clientName: "", enrollmentSecret: "" },
    );
    assert.equal(v6.clientId, "ip-fd00--1");
    await assert.rejects(
      r.registerClient({ requestId: "r3", peerAddress: "a;b" }, { clientName: "", enrollmentSecret: "" }),
      code("failed_precondition"),
    );
  });
});
