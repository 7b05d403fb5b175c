/**
 * Join tokens for compute nodes (`nodeJoinToken`) and their clean-up (`endJob`), for both agent
 * models of DESIGN "Agents and isolation":
 *
 *   per-job  The agent is the job's own process. Its identities are exactly
 *            …/h/<node>/u/<user> plus …/h/<node>/g/<group> for each group NSS lists for the user,
 *            so it receives only grants meant for that user or a group it is in — never another
 *            user's, whatever the agent does with its selectors.
 *   site     A root agent installed by the site: one alias …/h/<node>; the agent's unix selectors
 *            separate users.
 *
 * Per-job aliases are created by us, not by CreateJoinToken's agent_id: SPIRE's own alias entry has
 * no expiry, ours carry expires_at = the token's expiry, so SPIRE prunes them even if endJob is never
 * called. All aliases go in one BatchCreateEntry call; on any failure the created ones are deleted.
 */

import { InvalidNameError, validateName } from "../../lib/names.js";
import { InvalidSpiffeIdError, SpiffeId } from "../../lib/spiffe-id.js";
import {
  Code,
  type EntrySpec,
  InvalidRegistrationError,
  SpireError,
  type SpireRegistration,
} from "../../lib/spire/registration.js";
import type { NodeAttestor } from "./node-attestation.js";
import {
  type CallContext,
  type EndJobRequest,
  type NodeTokenRequest,
  type NodeTokenResponse,
  ServiceError,
} from "./types.js";

export const DEFAULT_NODE_TOKEN_TTL = 3600;

export interface NodeTokensOptions {
  spire: SpireRegistration;
  attestor: NodeAttestor;
  trustDomain: string;
  agentModel: "site" | "per-job";
  /** Lifetime of the join token and (per-job) of the aliases; must cover the job's walltime. */
  ttlSeconds?: number;
}

// SPIRE's join tokens are UUIDs; this is looser but keeps the value a single safe SPIFFE ID segment.
const JOIN_TOKEN = /^[A-Za-z0-9-]{1,128}$/;

export class NodeTokens {
  private readonly ttlSeconds: number;

  constructor(private readonly opts: NodeTokensOptions) {
    this.ttlSeconds = opts.ttlSeconds ?? DEFAULT_NODE_TOKEN_TTL;
    // Fails at start-up, not per request, when the trust domain is wrong.
    SpiffeId.of(opts.trustDomain);
  }

  async nodeJoinToken(ctx: CallContext, req: NodeTokenRequest): Promise<NodeTokenResponse> {
    // Validate before attesting, so bad input never consumes a single-use operator token.
    const node = field("node", req?.node);
    const user = field("user", req?.user);
    const attested = await this.opts.attestor.attest({ ...req, node, user }, ctx);
    if (attested.node !== node || attested.user !== user) {
      throw new ServiceError("permission_denied", "node attestation vouched for another node or user");
    }
    const groups = attested.groups.map((g) => field("group", g));
    return this.opts.agentModel === "site" ? this.siteToken(node) : this.perJobToken(node, user, groups);
  }

  /** Only the token holder can end a job: the token is the proof, node and user must match its alias. */
  async endJob(_ctx: CallContext, req: EndJobRequest): Promise<void> {
    const node = field("node", req?.node);
    const user = field("user", req?.user);
    if (typeof req.joinToken !== "string" || !JOIN_TOKEN.test(req.joinToken)) {
      throw new ServiceError(
        "invalid_argument",
        "invalid joinToken: pass the join token nodeJoinToken returned",
      );
    }
    if (this.opts.agentModel === "site") {
      // Site agents outlive jobs and belong to the site's admins, not to a job's token holder.
      throw new ServiceError("failed_precondition", "endJob applies to agent-model = per-job only");
    }
    const agentId = this.joinTokenId(req.joinToken);
    const expected = this.perJobAlias(node, user).toString();
    const entries = await spire(() => this.opts.spire.listEntries({ byParentId: agentId }));
    if (entries.length > 0 && !entries.some((e) => e.spiffeId.toString() === expected)) {
      throw new ServiceError("permission_denied", "joinToken belongs to another node or user");
    }
    if (entries.length > 0) {
      const results = await spire(() => this.opts.spire.batchDeleteEntries(entries.map((e) => e.id)));
      const failed = results.filter((r) => r.status === "error");
      if (failed.length > 0) {
        throw new ServiceError(
          "unavailable",
          `SPIRE did not delete ${failed.length} alias entries; retry endJob`,
        );
      }
    }
    try {
      await this.opts.spire.evictAgent(agentId);
    } catch (err) {
      // No agent: it never attested (or was already evicted). Fine once its aliases are gone.
      if (err instanceof SpireError && err.code === Code.NOT_FOUND) {
        if (entries.length === 0) {
          throw new ServiceError("not_found", "no job with this joinToken (already ended or expired)");
        }
        return;
      }
      throw toServiceError(err);
    }
  }

  private async siteToken(node: string): Promise<NodeTokenResponse> {
    // A site agent is long-lived, so SPIRE's own non-expiring alias is what we want here.
    const agentSpiffeId = this.nodeId(node);
    const jt = await spire(() =>
      this.opts.spire.createJoinToken({ ttlSeconds: this.ttlSeconds, agentId: agentSpiffeId }),
    );
    return {
      joinToken: jt.token,
      expiresAt: jt.expiresAt,
      agentSpiffeId: agentSpiffeId.toString(),
      aliases: [],
    };
  }

  private async perJobToken(node: string, user: string, groups: string[]): Promise<NodeTokenResponse> {
    const userAlias = this.perJobAlias(node, user);
    const groupAliases = groups.map((g) => this.nodeId(node).child("g", g));
    // Built before the token exists, so an invalid ID fails without leaving a token behind.
    const jt = await spire(() => this.opts.spire.createJoinToken({ ttlSeconds: this.ttlSeconds }));
    const parentId = this.joinTokenId(jt.token);
    // The selector SPIRE itself puts on agent aliases (seen with `token generate -spiffeID`): it
    // matches the agent's own attested ID, so exactly this agent holds the alias.
    const selectors = [{ type: "spiffe_id", value: parentId.toString() }];
    const specs: EntrySpec[] = [userAlias, ...groupAliases].map((spiffeId) => ({
      spiffeId,
      parentId,
      selectors,
      expiresAt: jt.expiresAt,
    }));
    const results = await spire(() => this.opts.spire.batchCreateEntries(specs));
    const failed = results.filter((r) => r.status === "error");
    if (failed.length > 0) {
      const created = results.flatMap((r) => (r.status === "created" ? [r.id] : []));
      // No partial state: an agent with some of its aliases would see a confusing subset of grants.
      await this.opts.spire.batchDeleteEntries(created).catch(() => undefined);
      throw new ServiceError("unavailable", `SPIRE refused ${failed.length} agent alias entries; retry`);
    }
    return {
      joinToken: jt.token,
      expiresAt: jt.expiresAt,
      agentSpiffeId: userAlias.toString(),
      aliases: groupAliases.map((a) => a.toString()),
    };
  }

  private nodeId(node: string): SpiffeId {
    return SpiffeId.of(this.opts.trustDomain, "h", node);
  }

  private perJobAlias(node: string, user: string): SpiffeId {
    return this.nodeId(node).child("u", user);
  }

  private joinTokenId(token: string): SpiffeId {
    return SpiffeId.of(this.opts.trustDomain, "spire", "agent", "join_token", token);
  }
}

/** A lib/names check as a one-line invalid_argument naming the field and the fix. */
function field(kind: "node" | "user" | "group", value: unknown): string {
  if (typeof value !== "string") {
    throw new ServiceError("invalid_argument", `${kind} is missing: give the ${kind} name`);
  }
  try {
    return validateName(kind, value);
  } catch (err) {
    if (err instanceof InvalidNameError) throw new ServiceError("invalid_argument", oneLine(err.message));
    throw err;
  }
}

// A name of 300 characters would make a 300-character error; the fix matters, not the full value.
function oneLine(msg: string): string {
  const s = msg.replace(/\s+/g, " ");
  return s.length > 300 ? `${s.slice(0, 140)}…${s.slice(-150)}` : s;
}

async function spire<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw toServiceError(err);
  }
}

function toServiceError(err: unknown): unknown {
  if (err instanceof ServiceError) return err;
  if (err instanceof InvalidRegistrationError || err instanceof InvalidSpiffeIdError) {
    return new ServiceError("invalid_argument", oneLine(err.message));
  }
  if (err instanceof SpireError) {
    const code = err.code === Code.UNAVAILABLE || err.code === -1 ? "unavailable" : "internal";
    return new ServiceError(code, oneLine(err.message));
  }
  return err;
}
