import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Enrollments, ROTATION_TTL_SEC } from "../../../../server/service/enrollment.js";
import { ServiceError } from "../../../../server/service/types.js";
import { FakeVault } from "./fakes.js";

const code = (c: string) => (e: unknown) => {
  assert.ok(e instanceof ServiceError, String(e));
  assert.equal(e.code, c, e.message);
  assert.ok(!e.message.includes("\n"));
  return true;
};

describe("server/service/enrollment", () => {
  let vault: FakeVault;
  let now: number;
  let enr: Enrollments;
  beforeEach(() => {
    vault = new FakeVault();
    now = Date.parse("2026-01-01T00:00:00Z");
    enr = new Enrollments({ vault, now: () => now });
  });

  it("stores only a sha256 of a 256-bit base64url secret, with the expiry", async () => {
    const r = await enr.enroll("lab-1", 3600);
    assert.match(r.secret, /^[A-Za-z0-9_-]{43}$/);
    const stored = vault.kv.get("hpcs-server/enrollments/lab-1")?.versions.at(-1);
    assert.ok(stored);
    assert.equal(stored.sha256, createHash("sha256").update(r.secret).digest("hex"));
    assert.equal(stored.expiresAt, "2026-01-01T01:00:00.000Z");
    assert.ok(!JSON.stringify(stored).includes(r.secret));
  });

  it("redeems once; a second redeem, a wrong secret and an expired one are refused", async () => {
    const { secret } = await enr.enroll("lab-1", 3600);
    await assert.rejects(
      enr.redeem(
        "lab-1",
        secret.replace(/^./, (c) => (c === "A" ? "B" : "A")),
      ),
      code("unauthenticated"),
    );
    await assert.rejects(enr.redeem("lab-2", secret), code("unauthenticated"));
    await assert.rejects(enr.redeem("lab-1", "short"), code("unauthenticated"));
    const r = await enr.redeem("lab-1", secret);
    assert.equal(r.clientName, "lab-1");
    await assert.rejects(enr.redeem("lab-1", secret), /already used/);

    const e2 = await enr.enroll("lab-3", 60);
    now += 61_000;
    await assert.rejects(enr.redeem("lab-3", e2.secret), /expired/);
  });

  it("two concurrent redeems: exactly one wins (kv check-and-set)", async () => {
    const { secret } = await enr.enroll("lab-1", 3600);
    // The second redeem reads the same version as the first, before the first writes.
    vault.beforeCasCheck = async () => {
      vault.beforeCasCheck = undefined;
      await enr.redeem("lab-1", secret).then(
        () => (winners += 1),
        () => undefined,
      );
    };
    let winners = 0;
    const first = await enr.redeem("lab-1", secret).then(
      () => true,
      (e: unknown) => {
        assert.match(String(e), /already used/);
        return false;
      },
    );
    assert.equal(winners + (first ? 1 : 0), 1);
  });

  it("Promise.all of two redeems yields one success", async () => {
    const { secret } = await enr.enroll("lab-1", 3600);
    const res = await Promise.allSettled([enr.redeem("lab-1", secret), enr.redeem("lab-1", secret)]);
    assert.equal(res.filter((r) => r.status === "fulfilled").length, 1);
  });

  it("release restores an unused enrollment after a failed registration", async () => {
    const { secret } = await enr.enroll("lab-1", 3600);
    const r = await enr.redeem("lab-1", secret);
    assert.equal(await enr.release(r), true);
    await enr.redeem("lab-1", secret);
  });

  it("rotate: a fresh one-time secret (hash only, 30 days) replaces the used one", async () => {
    const first = await enr.enroll("lab-1", 3600);
    const r = await enr.redeem("lab-1", first.secret);
    const next = await enr.rotate(r);
    assert.ok(next);
    assert.equal(next.clientName, "lab-1");
    assert.match(next.secret, /^[A-Za-z0-9_-]{43}$/);
    assert.notEqual(next.secret, first.secret);
    assert.equal(next.expiresAt.getTime(), now + ROTATION_TTL_SEC * 1000);
    assert.equal(ROTATION_TTL_SEC, 30 * 86400);
    const stored = vault.kv.get("hpcs-server/enrollments/lab-1")?.versions.at(-1);
    assert.equal(stored?.sha256, createHash("sha256").update(next.secret).digest("hex"));
    assert.equal(stored?.used, false);
    assert.ok(!JSON.stringify(vault.kv.get("hpcs-server/enrollments/lab-1")).includes(next.secret));

    // The old secret is gone, the new one works exactly once, and rotates again.
    await assert.rejects(enr.redeem("lab-1", first.secret), code("unauthenticated"));
    const r2 = await enr.redeem("lab-1", next.secret);
    await assert.rejects(enr.redeem("lab-1", next.secret), /already used/);
    const third = await enr.rotate(r2, 600);
    assert.equal(third?.expiresAt.getTime(), now + 600_000);
    now += 601_000;
    await assert.rejects(enr.redeem("lab-1", third?.secret ?? ""), /expired/);
  });

  it("rotate leaves an operator's re-enrollment alone and validates its TTL", async () => {
    const first = await enr.enroll("lab-1", 3600);
    const r = await enr.redeem("lab-1", first.secret);
    const operator = await enr.enroll("lab-1", 3600, { force: true });
    assert.equal(await enr.rotate(r), undefined);
    await enr.redeem("lab-1", operator.secret);

    const e2 = await enr.enroll("lab-2", 3600);
    const r2 = await enr.redeem("lab-2", e2.secret);
    const before = vault.writes().length;
    await assert.rejects(enr.rotate(r2, 0), code("invalid_argument"));
    await assert.rejects(enr.rotate(r2, 31 * 86400), code("invalid_argument"));
    assert.equal(vault.writes().length, before);

    // Of two rotations of one redeem (a retried request), only one issues a secret.
    const both = await Promise.all([enr.rotate(r2), enr.rotate(r2)]);
    assert.equal(both.filter((x) => x !== undefined).length, 1);
  });

  it("refuses to re-enroll a registered client unless forced; validates name and TTL", async () => {
    vault.roles.set("hpcs-client-lab-1", { boundSubject: "x", boundAudiences: ["vault"], tokenPolicies: [] });
    await assert.rejects(enr.enroll("lab-1", 3600), code("already_exists"));
    await enr.enroll("lab-1", 3600, { force: true });
    const before = vault.writes().length;
    await assert.rejects(enr.enroll("a;b", 3600), code("invalid_argument"));
    await assert.rejects(enr.enroll("../x", 3600), code("invalid_argument"));
    await assert.rejects(enr.enroll("lab-2", 0), code("invalid_argument"));
    assert.equal(vault.writes().length, before);
  });
});
