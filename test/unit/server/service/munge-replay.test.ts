import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { ReplayStoreError, VaultReplayGuard } from "../../../../server/service/munge-replay.js";
import { VaultError } from "../../../../lib/vault/vault-error.js";
import { FakeKv } from "../../../support/node-fakes.js";

const digest = (s: string) => createHash("sha256").update(s).digest("hex");
/** Digests that share a record (same first two hex digits). */
function sameRecord(n: number): string[] {
  const out: string[] = [];
  const prefix = digest("0").slice(0, 2);
  for (let i = 0; out.length < n; i++) if (digest(`x${i}`).startsWith(prefix)) out.push(digest(`x${i}`));
  return out;
}

describe("VaultReplayGuard", () => {
  let kv: FakeKv;
  let now: Date;
  let guard: VaultReplayGuard;
  const later = (sec: number) => new Date(now.getTime() + sec * 1000);
  beforeEach(() => {
    kv = new FakeKv();
    now = new Date("2026-01-01T00:00:00Z");
    guard = new VaultReplayGuard(kv.asVault(), { now: () => now });
  });

  it("claims a digest once, in one of 256 records under hpcs-server/munge-replay", async () => {
    const d = digest("cred");
    assert.equal(await guard.claim(d, later(360)), true);
    assert.equal(await guard.claim(d, later(360)), false);
    assert.deepEqual([...kv.store.keys()], [`hpcs-server/munge-replay/${d.slice(0, 2)}`]);
    assert.equal(guard.recordPath(d), `hpcs-server/munge-replay/${d.slice(0, 2)}`);
    assert.deepEqual(kv.store.get(guard.recordPath(d))?.data, {
      seen: { [d]: Math.ceil(later(360).getTime() / 1000) },
    });
  });

  it("survives a restart and is shared by replicas (the record lives in kv)", async () => {
    const d = digest("cred");
    assert.equal(await guard.claim(d, later(360)), true);
    const replica = new VaultReplayGuard(kv.asVault(), { now: () => now });
    assert.equal(await replica.claim(d, later(360)), false);
  });

  it("keeps digests of one record apart, and forgets them once their time has passed", async () => {
    const [a, b, c] = sameRecord(3) as [string, string, string];
    assert.equal(await guard.claim(a, later(10)), true);
    assert.equal(await guard.claim(b, later(100)), true);
    now = later(11);
    assert.equal(await guard.claim(c, later(100)), true);
    const seen = kv.store.get(guard.recordPath(a))?.data.seen as Record<string, number>;
    assert.deepEqual(Object.keys(seen).sort(), [b, c].sort());
    // a's time has passed: the record no longer holds it (the age check refuses such a credential).
    assert.equal(await guard.claim(a, later(10)), true);
  });

  it("lets exactly one of concurrent claims of one digest win, and all claims of distinct digests", async () => {
    const d = digest("cred");
    const same = await Promise.all(Array.from({ length: 8 }, () => guard.claim(d, later(60))));
    assert.equal(same.filter(Boolean).length, 1);
    const distinct = sameRecord(6);
    const results = await Promise.all(distinct.map((x) => guard.claim(x, later(60))));
    assert.deepEqual(
      results,
      distinct.map(() => true),
    );
    const seen = kv.store.get(guard.recordPath(distinct[0] ?? ""))?.data.seen as Record<string, number>;
    for (const x of distinct) assert.ok(x in seen);
  });

  it("ignores junk in a record instead of trusting it", async () => {
    const d = digest("cred");
    await kv.kvWrite(guard.recordPath(d), { seen: { "not-a-digest": 9e12, [d]: "soon" } });
    assert.equal(await guard.claim(d, later(60)), true);
    assert.deepEqual(Object.keys(kv.store.get(guard.recordPath(d))?.data.seen as object), [d]);
  });

  it("refuses something that is not a digest", async () => {
    await assert.rejects(guard.claim("../../x", later(60)), ReplayStoreError);
    assert.equal(kv.store.size, 0);
  });

  it("gives up after maxAttempts CAS conflicts, as a transient error", async () => {
    const conflicting = Object.assign(Object.create(kv) as FakeKv, {
      kvWrite: async () => {
        throw new VaultError("kv write", "kv/data/x", 400, "check-and-set parameter did not match");
      },
    });
    const g = new VaultReplayGuard(conflicting.asVault(), { now: () => now, maxAttempts: 3 });
    await assert.rejects(g.claim(digest("c"), later(60)), (e: unknown) => {
      return e instanceof ReplayStoreError && e.transient && /concurrent/.test(e.message);
    });
  });

  it("reports Vault failures as ReplayStoreError: transient when Vault is unreachable", async () => {
    const failing = (status: number | undefined) =>
      Object.assign(Object.create(kv) as FakeKv, {
        kvRead: async () => {
          throw new VaultError("kv read", "kv/data/x", status, "boom");
        },
      });
    const down = new VaultReplayGuard(failing(undefined).asVault(), { now: () => now });
    await assert.rejects(down.claim(digest("c"), later(60)), (e: unknown) => {
      return e instanceof ReplayStoreError && e.transient && !e.message.includes("\n");
    });
    const denied = new VaultReplayGuard(failing(403).asVault(), { now: () => now });
    await assert.rejects(denied.claim(digest("c"), later(60)), (e: unknown) => {
      return e instanceof ReplayStoreError && !e.transient;
    });
  });
});
