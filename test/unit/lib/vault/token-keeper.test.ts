import assert from "node:assert/strict";
import { type KeeperClock, type KeeperEvent, TokenKeeper } from "../../../../lib/vault/token-keeper.js";
import type { VaultLogin } from "../../../../lib/vault/vault-client.js";

/** A manual clock: advance() runs due timers in order and lets their promises settle. */
class FakeClock implements KeeperClock {
  t = 1_000_000;
  private timers: { at: number; fn: () => void; id: number }[] = [];
  private next = 0;
  now(): number {
    return this.t;
  }
  schedule(fn: () => void, ms: number): () => void {
    const id = this.next++;
    this.timers.push({ at: this.t + ms, fn, id });
    return () => {
      this.timers = this.timers.filter((x) => x.id !== id);
    };
  }
  get pending(): number {
    return this.timers.length;
  }
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at || a.id - b.id);
      const due = this.timers[0];
      if (!due || due.at > end) break;
      this.timers.shift();
      this.t = due.at;
      due.fn();
      await settle();
    }
    this.t = end;
    await settle();
  }
}

async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
}

/** Simulates Vault: tokens with a TTL and a max TTL; renewal is capped at the max. */
class FakeVault {
  logins = 0;
  renewals = 0;
  failLogin = false;
  failRenew = false;
  renewable = true;
  private tokens = new Map<string, { end: number; maxEnd: number }>();
  constructor(
    private readonly clock: FakeClock,
    private readonly ttlSec: number,
    private readonly maxTtlSec: number,
  ) {}
  login = async (): Promise<VaultLogin> => {
    if (this.failLogin) throw new Error("login refused");
    const token = `t${++this.logins}`;
    const now = this.clock.now();
    this.tokens.set(token, { end: now + this.ttlSec * 1000, maxEnd: now + this.maxTtlSec * 1000 });
    return { token, accessor: "a", policies: [], leaseDurationSec: this.ttlSec, renewable: this.renewable };
  };
  renew = async (token: string): Promise<VaultLogin> => {
    this.renewals++;
    const t = this.tokens.get(token);
    const now = this.clock.now();
    if (this.failRenew || !t || now >= t.end) throw new Error("permission denied");
    t.end = Math.min(now + this.ttlSec * 1000, t.maxEnd);
    const lease = Math.floor((t.end - now) / 1000);
    return { token, accessor: "a", policies: [], leaseDurationSec: lease, renewable: true };
  };
  valid(token: string): boolean {
    const t = this.tokens.get(token);
    return t !== undefined && this.clock.now() < t.end;
  }
}

describe("TokenKeeper", () => {
  let keeper: TokenKeeper | undefined;
  afterEach(() => keeper?.stop());

  it("renews at 2/3 of the TTL and keeps the same token", async () => {
    const clock = new FakeClock();
    const vault = new FakeVault(clock, 30, 3600);
    keeper = await TokenKeeper.start({ login: vault.login, renew: vault.renew, clock });
    await clock.advance(19_999);
    assert.equal(vault.renewals, 0);
    await clock.advance(1);
    assert.equal(vault.renewals, 1);
    await clock.advance(20_000);
    assert.equal(vault.renewals, 2);
    assert.equal(vault.logins, 1);
    assert.equal(keeper.token(), "t1");
  });

  it("logs in again when renewal is capped by the max TTL, and the token never lapses", async () => {
    const clock = new FakeClock();
    const vault = new FakeVault(clock, 3, 6);
    const events: KeeperEvent[] = [];
    keeper = await TokenKeeper.start({
      login: vault.login,
      renew: vault.renew,
      clock,
      onEvent: (e) => events.push(e),
    });
    for (let i = 0; i < 200; i++) {
      await clock.advance(100);
      assert.ok(vault.valid(keeper.token()), `token valid at +${(i + 1) * 100} ms`);
    }
    assert.ok(vault.logins >= 3, `logins ${vault.logins}`);
    assert.ok(events.some((e) => e.kind === "renewed" && e.capped));
    assert.ok(events.every((e) => e.kind !== "error"));
  });

  it("logs in again at once when a renewal fails", async () => {
    const clock = new FakeClock();
    const vault = new FakeVault(clock, 30, 3600);
    keeper = await TokenKeeper.start({ login: vault.login, renew: vault.renew, clock });
    vault.failRenew = true;
    await clock.advance(20_000);
    assert.equal(vault.renewals, 1);
    assert.equal(vault.logins, 2);
    assert.equal(keeper.token(), "t2");
  });

  it("logs in again at 2/3 of the TTL when the token is not renewable or there is no renew function", async () => {
    const clock = new FakeClock();
    const vault = new FakeVault(clock, 30, 3600);
    vault.renewable = false;
    keeper = await TokenKeeper.start({ login: vault.login, renew: vault.renew, clock });
    await clock.advance(20_000);
    assert.equal(vault.renewals, 0);
    assert.equal(vault.logins, 2);
    keeper.stop();
    const v2 = new FakeVault(clock, 30, 3600);
    keeper = await TokenKeeper.start({ login: v2.login, clock });
    await clock.advance(20_000);
    assert.equal(v2.logins, 2);
  });

  it("retries a failed login with backoff, keeps the old token until it expires, then says why", async () => {
    const clock = new FakeClock();
    const vault = new FakeVault(clock, 30, 3600);
    const events: KeeperEvent[] = [];
    keeper = await TokenKeeper.start({
      login: vault.login,
      renew: vault.renew,
      clock,
      retryMinMs: 1000,
      retryMaxMs: 4000,
      onEvent: (e) => events.push(e),
    });
    vault.failRenew = true;
    vault.failLogin = true;
    await clock.advance(20_000); // renew fails, login fails
    assert.equal(keeper.token(), "t1");
    await clock.advance(9_999); // retries at +1 s, +2 s, +4 s, +4 s ...
    assert.equal(keeper.token(), "t1");
    const retries = events
      .filter((e) => e.kind === "error" && e.during === "login")
      .map((e) => (e as { retryInMs: number }).retryInMs);
    assert.deepEqual(retries.slice(0, 4), [1000, 2000, 4000, 4000]);
    await clock.advance(1);
    assert.throws(
      () => keeper?.token(),
      /vault token expired and a new login has not succeeded yet: login refused/,
    );
    vault.failLogin = false;
    assert.equal(await keeper.fresh(), "t2");
    assert.ok(vault.valid(keeper.token()));
  });

  it("stop() cancels its timer and refuses further use", async () => {
    const clock = new FakeClock();
    const vault = new FakeVault(clock, 30, 3600);
    keeper = await TokenKeeper.start({ login: vault.login, renew: vault.renew, clock });
    assert.equal(clock.pending, 1);
    keeper.stop();
    assert.equal(clock.pending, 0);
    await clock.advance(100_000);
    assert.equal(vault.renewals + vault.logins, 1);
    assert.throws(() => keeper?.token(), /stopped/);
  });

  it("schedules nothing for a token without TTL", async () => {
    const clock = new FakeClock();
    keeper = await TokenKeeper.start({
      login: async () => ({
        token: "root",
        accessor: "",
        policies: ["root"],
        leaseDurationSec: 0,
        renewable: false,
      }),
      clock,
    });
    assert.equal(clock.pending, 0);
    assert.equal(keeper.expiresAt, Infinity);
    assert.equal(keeper.token(), "root");
  });

  it("start() rejects when the first login fails", async () => {
    await assert.rejects(
      TokenKeeper.start({
        login: async () => {
          throw new Error("no SVID");
        },
      }),
      /no SVID/,
    );
  });

  it("works on real timers with a short TTL (unref'd timers)", async () => {
    let n = 0;
    keeper = await TokenKeeper.start({
      login: async () => ({
        token: `r${++n}`,
        accessor: "",
        policies: [],
        leaseDurationSec: 0.3,
        renewable: false,
      }),
    });
    await new Promise((r) => setTimeout(r, 700));
    assert.ok(n >= 3, `logins ${n}`);
  });
});
