/**
 * Rate limits for the routes anyone can call without a JWT-SVID: client registration and node join
 * tokens (with end-job). Each is real work for SPIRE, Vault, munged and Slurm (a MUNGE-attested token
 * runs unmunge and squeue), so one address must not be able to flood them. A token bucket per (route
 * group, client address): `count` calls at once, refilled continuously at count per period. Limits are
 * per process (a second replica has its own buckets), which bounds the load on each.
 *
 * The key is the peer address, never a name from the request: a name would let anyone exhaust the
 * victim's bucket. Forty lines do not justify a dependency.
 */

import type { RateLimit } from "../../lib/config/server-config.js";
import { ServiceError } from "../service/types.js";

export type LimitGroup = "register" | "node-token";

const GROUP_WORDS: Record<LimitGroup, string> = {
  register: "registrations",
  "node-token": "node token calls",
};

export class RateLimitedError extends ServiceError {
  constructor(
    readonly retryAfterSec: number,
    message: string,
  ) {
    super("resource_exhausted", message);
  }
}

interface Bucket {
  tokens: number;
  at: number;
}

export interface RateLimiterOptions {
  /** Milliseconds since the epoch; injectable for tests. */
  now?: () => number;
  /** Buckets kept before full ones are dropped (a full bucket is the same as none). Default 10 000. */
  maxKeys?: number;
}

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly now: () => number;
  private readonly maxKeys: number;

  constructor(
    private readonly limits: Partial<Record<LimitGroup, RateLimit>>,
    opts: RateLimiterOptions = {},
  ) {
    this.now = opts.now ?? Date.now;
    this.maxKeys = opts.maxKeys ?? 10_000;
  }

  /** Takes one call from (group, key)'s bucket, or throws RateLimitedError saying when to retry. */
  take(group: LimitGroup, key: string): void {
    const limit = this.limits[group];
    if (!limit) return;
    const now = this.now();
    const id = `${group} ${key}`;
    const b = this.refilled(this.buckets.get(id), limit, now);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      this.buckets.delete(id); // re-inserted last: the Map's order is least recently used first
      this.buckets.set(id, b);
      this.prune(now);
      return;
    }
    const retryAfterSec = Math.max(1, Math.ceil(((1 - b.tokens) * limit.periodSec) / limit.count));
    throw new RateLimitedError(
      retryAfterSec,
      `rate limit: at most ${limit.count} ${GROUP_WORDS[group]} per ${limit.periodSec} s from ${key}; retry in ${retryAfterSec} s`,
    );
  }

  private refilled(b: Bucket | undefined, limit: RateLimit, now: number): Bucket {
    if (!b) return { tokens: limit.count, at: now };
    const rate = limit.count / (limit.periodSec * 1000);
    return { tokens: Math.min(limit.count, b.tokens + Math.max(0, now - b.at) * rate), at: now };
  }

  private prune(now: number): void {
    if (this.buckets.size <= this.maxKeys) return;
    for (const [id, b] of this.buckets) {
      const limit = this.limits[id.slice(0, id.indexOf(" ")) as LimitGroup];
      if (!limit || this.refilled(b, limit, now).tokens >= limit.count) this.buckets.delete(id);
    }
    // Still too many (a flood from many addresses): forget the least recently used.
    for (const id of this.buckets.keys()) {
      if (this.buckets.size <= this.maxKeys) break;
      this.buckets.delete(id);
    }
  }
}

/**
 * The client address a limit is counted for, the same for both transports: HTTP's "::ffff:10.0.0.7"
 * (dual-stack socket) and gRPC's getPeer() "10.0.0.7:51234" (older grpc-js: "ipv4:10.0.0.7:51234") are
 * all "10.0.0.7"; gRPC writes IPv6 peers in brackets ("[fd00::1]:51234"), HTTP without ("fd00::1").
 */
export function peerKey(peer: string | undefined): string {
  if (!peer) return "unknown";
  const p = peer.trim().replace(/^ipv[46]:/, "");
  const bracketed = /^\[([^\]]*)\](?::\d+)?$/.exec(p);
  const v4port = /^(\d+\.\d+\.\d+\.\d+):\d+$/.exec(p);
  const addr = bracketed?.[1] ?? v4port?.[1] ?? p;
  return addr.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, "").toLowerCase();
}
