import type { VaultLogin } from "./vault-client.js";

/**
 * Keeps one Vault login alive. After each login or renewal it schedules the next step at `renewAt`
 * (default 2/3) of the token's TTL: a renewal (`auth/token/renew-self`) while the token can still be
 * extended, a fresh login once renewal fails, the token is not renewable, or Vault capped the renewal
 * at the token's max TTL. A failed login is retried with backoff; callers keep getting the old token
 * until it actually expires. All state lives in the instance; its timers are unref'd, so a keeper never
 * holds a process open.
 */

/** Time source and timer, replaceable in unit tests. */
export interface KeeperClock {
  now(): number;
  /** Runs fn after ms; returns a function that cancels it. */
  schedule(fn: () => void, ms: number): () => void;
}

export const systemClock: KeeperClock = {
  now: () => Date.now(),
  schedule(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref();
    return () => clearTimeout(t);
  },
};

export type KeeperEvent =
  | { kind: "login"; ttlSec: number }
  | { kind: "renewed"; ttlSec: number; capped: boolean }
  | { kind: "error"; during: "login" | "renew"; error: Error; retryInMs?: number };

export interface TokenKeeperOptions {
  /** Obtains a fresh token, e.g. fetch a JWT-SVID and call VaultClient.loginJwt. */
  login: () => Promise<VaultLogin>;
  /** Renews a token, e.g. (t) => vault.renewSelf(t). Without it the keeper only re-logs-in. */
  renew?: (token: string) => Promise<VaultLogin>;
  /** Fraction of the TTL after which to act, 0 < renewAt < 1; default 2/3. */
  renewAt?: number;
  /** First retry delay after a failed login (doubles up to retryMaxMs); default 1000. */
  retryMinMs?: number;
  retryMaxMs?: number;
  clock?: KeeperClock;
  /** For logging; never receives a token. */
  onEvent?: (e: KeeperEvent) => void;
}

interface Held {
  token: string;
  /** Epoch ms; Infinity for a token without TTL (e.g. a root token). */
  expiresAt: number;
  renewable: boolean;
  /** TTL granted at login; a renewal that returns less means the max TTL was reached. */
  loginTtlSec: number;
  capped: boolean;
}

export class TokenKeeper {
  private held: Held;
  private cancelTimer: (() => void) | undefined;
  private stopped = false;
  private inflight: Promise<void> | undefined;
  private lastError: Error | undefined;
  private retryMs: number;
  private readonly clock: KeeperClock;
  private readonly renewAt: number;
  private readonly retryMinMs: number;
  private readonly retryMaxMs: number;

  private constructor(
    private readonly opts: TokenKeeperOptions,
    first: VaultLogin,
  ) {
    this.clock = opts.clock ?? systemClock;
    this.renewAt = opts.renewAt ?? 2 / 3;
    if (!(this.renewAt > 0 && this.renewAt < 1)) throw new Error("TokenKeeper: renewAt must be in (0, 1)");
    this.retryMinMs = opts.retryMinMs ?? 1000;
    this.retryMaxMs = opts.retryMaxMs ?? 30_000;
    this.retryMs = this.retryMinMs;
    this.held = this.fromLogin(first);
    this.scheduleNext();
  }

  /** Logs in once (rejecting if that fails) and keeps the token alive from then on. */
  static async start(opts: TokenKeeperOptions): Promise<TokenKeeper> {
    const first = await opts.login();
    const keeper = new TokenKeeper(opts, first);
    opts.onEvent?.({ kind: "login", ttlSec: first.leaseDurationSec });
    return keeper;
  }

  /** The current token. Throws when stopped, or when it expired and no new login succeeded yet. */
  token(): string {
    if (this.stopped) throw new Error("vault token keeper is stopped");
    if (this.clock.now() >= this.held.expiresAt) {
      const why = this.lastError ? `: ${this.lastError.message}` : "";
      throw new Error(`vault token expired and a new login has not succeeded yet${why}`);
    }
    return this.held.token;
  }

  /** Like token(), but when the token has expired waits for (or starts) a new login first. */
  async fresh(): Promise<string> {
    if (this.stopped) throw new Error("vault token keeper is stopped");
    if (this.clock.now() >= this.held.expiresAt) await this.relogin();
    return this.token();
  }

  /** Epoch ms at which the current token expires (Infinity if it has no TTL). */
  get expiresAt(): number {
    return this.held.expiresAt;
  }

  /** Cancels the timer; the token itself is left to expire (revoke it first if you must). */
  stop(): void {
    this.stopped = true;
    this.cancelTimer?.();
    this.cancelTimer = undefined;
  }

  private fromLogin(l: VaultLogin): Held {
    return {
      token: l.token,
      expiresAt: l.leaseDurationSec > 0 ? this.clock.now() + l.leaseDurationSec * 1000 : Infinity,
      renewable: l.renewable,
      loginTtlSec: l.leaseDurationSec,
      capped: false,
    };
  }

  private scheduleNext(): void {
    if (this.stopped || this.held.expiresAt === Infinity) return;
    const left = this.held.expiresAt - this.clock.now();
    this.setTimer(() => void this.step(), Math.max(0, Math.floor(left * this.renewAt)));
  }

  private setTimer(fn: () => void, ms: number): void {
    this.cancelTimer?.();
    this.cancelTimer = this.clock.schedule(fn, ms);
  }

  private async step(): Promise<void> {
    if (this.stopped) return;
    const h = this.held;
    if (this.opts.renew && h.renewable && !h.capped) {
      try {
        const r = await this.opts.renew(h.token);
        if (this.stopped || this.held !== h) return;
        if (r.leaseDurationSec > 0) {
          // Vault caps a renewal at the token's max TTL; less than the login TTL means the end is near.
          const capped = r.leaseDurationSec < h.loginTtlSec;
          this.held = {
            ...h,
            token: r.token || h.token,
            expiresAt: this.clock.now() + r.leaseDurationSec * 1000,
            renewable: r.renewable,
            capped,
          };
          this.lastError = undefined;
          this.opts.onEvent?.({ kind: "renewed", ttlSec: r.leaseDurationSec, capped });
          this.scheduleNext();
          return;
        }
      } catch (err) {
        if (this.stopped) return;
        this.opts.onEvent?.({ kind: "error", during: "renew", error: err as Error });
      }
    }
    await this.relogin();
  }

  /** One login at a time; on failure schedules a retry and resolves (the error is in lastError). */
  private relogin(): Promise<void> {
    if (!this.inflight) {
      this.inflight = this.doLogin().finally(() => {
        this.inflight = undefined;
      });
    }
    return this.inflight;
  }

  private async doLogin(): Promise<void> {
    try {
      const l = await this.opts.login();
      if (this.stopped) return;
      this.held = this.fromLogin(l);
      this.lastError = undefined;
      this.retryMs = this.retryMinMs;
      this.opts.onEvent?.({ kind: "login", ttlSec: l.leaseDurationSec });
      this.scheduleNext();
    } catch (err) {
      if (this.stopped) return;
      this.lastError = err as Error;
      const retryInMs = this.retryMs;
      this.retryMs = Math.min(this.retryMs * 2, this.retryMaxMs);
      this.opts.onEvent?.({ kind: "error", during: "login", error: err as Error, retryInMs });
      this.setTimer(() => void this.relogin(), retryInMs);
    }
  }
}
