/**
 * Single use of MUNGE credentials across server replicas and restarts.
 *
 * munged refuses a credential it has already decoded, but only its own: a second server replica (its
 * own munged) or a restarted munged would accept it again. So the server remembers the SHA-256 of
 * every credential it accepted, in Vault kv v2 under its own prefix, until the credential could no
 * longer pass the freshness check anyway.
 *
 * Layout: 256 records `<prefix>/<first two hex digits of the digest>`, each
 * `{ seen: { <digest>: <unix seconds until which it is remembered> } }`. A claim reads the record,
 * refuses a digest that is still remembered, and writes the record back — without the digests whose
 * time has passed, plus the new one — with check-and-set on the version it read; a CAS conflict (a
 * concurrent claim on the same record, from any replica) re-reads and retries. Exactly one of two
 * concurrent claims of one digest wins.
 *
 * Why not one record per digest: the hpcs server's Vault policy (lib/vault/policies.ts) gives it
 * create/read/update on `<kv>/data/hpcs-server/*` only — no delete, no metadata, no list — so
 * per-digest records could never be removed and would grow by one per job forever. The 256 records
 * prune themselves on every write; kv keeps at most the mount's max_versions old copies of each.
 */

import { setTimeout as sleep } from "node:timers/promises";
import type { VaultClient } from "../../lib/vault/vault-client.js";
import { VaultError } from "../../lib/vault/vault-error.js";

export interface ReplayGuard {
  /**
   * Records `digest` (64 lower-case hex) as used until `until`. Resolves true when this is its first
   * use, false when it was already used; rejects (ReplayStoreError) when the store cannot answer.
   */
  claim(digest: string, until: Date): Promise<boolean>;
}

export class ReplayStoreError extends Error {
  constructor(
    readonly transient: boolean,
    message: string,
  ) {
    super(message);
    this.name = "ReplayStoreError";
  }
}

export const DEFAULT_REPLAY_PREFIX = "hpcs-server/munge-replay";

const DIGEST = /^[0-9a-f]{64}$/;

export interface VaultReplayGuardOptions {
  /** kv path prefix inside the mount; default hpcs-server/munge-replay. */
  pathPrefix?: string;
  now?: () => Date;
  /** CAS attempts before giving up (unavailable); default 12. */
  maxAttempts?: number;
}

export class VaultReplayGuard implements ReplayGuard {
  private readonly prefix: string;
  private readonly now: () => Date;
  private readonly maxAttempts: number;

  constructor(
    private readonly vault: VaultClient,
    opts: VaultReplayGuardOptions = {},
  ) {
    this.prefix = opts.pathPrefix ?? DEFAULT_REPLAY_PREFIX;
    this.now = opts.now ?? (() => new Date());
    this.maxAttempts = opts.maxAttempts ?? 12;
  }

  /** The kv path (inside the mount) of the record that holds `digest`. */
  recordPath(digest: string): string {
    return `${this.prefix}/${digest.slice(0, 2)}`;
  }

  async claim(digest: string, until: Date): Promise<boolean> {
    if (!DIGEST.test(digest)) throw new ReplayStoreError(false, "replay store: not a SHA-256 hex digest");
    const path = this.recordPath(digest);
    const untilSec = Math.ceil(until.getTime() / 1000);
    for (let attempt = 1; ; attempt++) {
      const nowSec = this.now().getTime() / 1000;
      const stored = await this.vault.kvRead(path).catch(storeError);
      const seen = seenOf(stored?.data);
      const known = seen[digest];
      if (known !== undefined && known > nowSec) return false;
      const next: Record<string, number> = {};
      for (const [d, t] of Object.entries(seen)) if (t > nowSec) next[d] = t;
      next[digest] = untilSec;
      try {
        await this.vault.kvWrite(path, { seen: next }, { cas: stored?.version ?? 0 });
        return true;
      } catch (err) {
        // 400 = check-and-set mismatch: another claim wrote this record since we read it.
        if (!(err instanceof VaultError && err.status === 400)) storeError(err);
        if (attempt >= this.maxAttempts) {
          throw new ReplayStoreError(true, "replay store: too many concurrent claims; retry");
        }
        await sleep(Math.floor(Math.random() * 20 * attempt));
      }
    }
  }
}

/** The record's map, ignoring anything that is not digest → number (a record is never trusted blindly). */
function seenOf(data: Record<string, unknown> | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  const seen = data?.seen;
  if (seen === null || typeof seen !== "object") return out;
  for (const [d, t] of Object.entries(seen as Record<string, unknown>)) {
    if (DIGEST.test(d) && typeof t === "number" && Number.isFinite(t)) out[d] = t;
  }
  return out;
}

function storeError(err: unknown): never {
  if (err instanceof VaultError) {
    throw new ReplayStoreError(err.status === undefined || err.status >= 500, `replay store: ${err.message}`);
  }
  throw err;
}
