/**
 * Clean-up of per-job agents whose job ended without `endJob` (killed job, crashed node).
 *
 * The aliases nodes.ts creates carry expires_at, and the SPIRE server's registration manager
 * deletes expired entries itself — but only every 5 minutes (pkg/server/registration/manager.go,
 * PruneRegistrationEntries), and until then SPIRE keeps serving them: checked on the bench (SPIRE
 * 1.13), an agent still received a grant through an alias 25 s past its expires_at. So:
 *
 *   sweepExpiredAliases  deletes expired entries with given alias IDs at once (call it for the
 *                        …/h/<node>/u/<user> and …/h/<node>/g/<group> IDs of a new token, or on a
 *                        timer for known nodes), closing that window.
 *   AgentSweeper         evicts join-token agents that no entry is parented to any more: SPIRE
 *                        never removes an attested agent, it keeps renewing its own
 *                        …/spire/agent/join_token/<token> SVID after the token expired. Without
 *                        aliases that identity holds no grants, so this is tidiness, not isolation.
 *
 * Listing agents needs SPIRE's ListAgents RPC, which lib/spire does not wrap yet, so the listing is
 * an injected interface; nothing here runs on a timer by itself.
 */

import type { SpiffeId } from "../../lib/spiffe-id.js";
import { Code, SpireError, type SpireRegistration } from "../../lib/spire/registration.js";

export interface AgentDirectory {
  /** IDs of attested agents that used the join_token attestor (…/spire/agent/join_token/<token>). */
  listJoinTokenAgents(): Promise<SpiffeId[]>;
}

export interface SweepResult {
  evicted: string[];
  kept: number;
}

export class AgentSweeper {
  constructor(
    private readonly spire: Pick<SpireRegistration, "listEntries" | "evictAgent">,
    private readonly agents: AgentDirectory,
  ) {}

  /**
   * Evicts every join-token agent without any entry parented to it. Agents of clients and site
   * agents keep a non-expiring alias (CreateJoinToken's agent_id), so they are never touched.
   */
  async sweep(): Promise<SweepResult> {
    const evicted: string[] = [];
    let kept = 0;
    for (const id of await this.agents.listJoinTokenAgents()) {
      if (!id.path.startsWith("/spire/agent/join_token/")) {
        kept++;
        continue;
      }
      const entries = await this.spire.listEntries({ byParentId: id });
      if (entries.length > 0) {
        kept++;
        continue;
      }
      try {
        await this.spire.evictAgent(id);
        evicted.push(id.toString());
      } catch (err) {
        // Evicted concurrently (endJob, another replica): the goal is reached.
        if (!(err instanceof SpireError && err.code === Code.NOT_FOUND)) throw err;
      }
    }
    return { evicted, kept };
  }
}

/**
 * Deletes every entry whose SPIFFE ID is one of `aliasIds` and whose expires_at has passed; entries
 * without an expiry are never touched. Returns the deleted entry IDs.
 */
export async function sweepExpiredAliases(
  spire: Pick<SpireRegistration, "listEntries" | "batchDeleteEntries">,
  aliasIds: SpiffeId[],
  now: Date = new Date(),
): Promise<string[]> {
  const expired: string[] = [];
  for (const id of aliasIds) {
    for (const e of await spire.listEntries({ bySpiffeId: id })) {
      if (e.expiresAt !== undefined && e.expiresAt.getTime() <= now.getTime()) expired.push(e.id);
    }
  }
  if (expired.length === 0) return [];
  const results = await spire.batchDeleteEntries(expired);
  return results.filter((r) => r.status === "deleted").map((r) => r.id);
}
