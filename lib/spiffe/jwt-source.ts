/**
 * JWT-SVIDs per audience (and optional SPIFFE ID), cached and fetched again once half their lifetime
 * has passed, the point at which spire-agent itself renews them; a token handed out therefore always
 * has at least half its lifetime left.
 */

import type { SpiffeId } from "../spiffe-id.js";
import type { JwtSvid, WorkloadClient } from "./workload-client.js";

interface Entry {
  svid: Promise<JwtSvid>;
  /** Epoch ms after which the entry is fetched again; Infinity while the fetch runs. */
  refreshAt: number;
}

export class JwtSource {
  private readonly cache = new Map<string, Entry>();

  constructor(
    private readonly client: WorkloadClient,
    /** Injectable clock, for tests. */
    private readonly now: () => number = Date.now,
  ) {}

  /** The JWT-SVID for `audience` (the first one when the process has several identities and no spiffeId). */
  fetch(req: { audience: string[]; spiffeId?: SpiffeId | string }): Promise<JwtSvid> {
    const key = JSON.stringify([[...req.audience].sort(), req.spiffeId?.toString() ?? ""]);
    const hit = this.cache.get(key);
    if (hit && this.now() < hit.refreshAt) return hit.svid;
    const fetchedAt = this.now();
    const entry: Entry = {
      refreshAt: Number.POSITIVE_INFINITY,
      svid: this.client.fetchJwtSvid(req).then((svids) => {
        const svid = svids[0];
        if (!svid)
          throw new Error(`workload API at ${this.client.socketPath}: FetchJWTSVID returned no SVID`);
        entry.refreshAt = fetchedAt + (svid.expiresAt.getTime() - fetchedAt) / 2;
        return svid;
      }),
    };
    // A failure is not cached: the next call asks the agent again.
    entry.svid.catch(() => {
      if (this.cache.get(key) === entry) this.cache.delete(key);
    });
    this.cache.set(key, entry);
    return entry.svid;
  }
}
