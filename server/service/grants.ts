import type { ServerConfig } from "../../lib/config/server-config.js";
import { validateName, type NameKind } from "../../lib/names.js";
import { SpiffeId } from "../../lib/spiffe-id.js";
import type { Entry, EntrySpec, SpireRegistration } from "../../lib/spire/registration.js";
import { grantRole, type JwtRoleSpec } from "../../lib/vault/jwt-role.js";
import { grantPolicy, grantPolicyName, secretPath } from "../../lib/vault/policies.js";
import type { VaultClient } from "../../lib/vault/vault-client.js";
import { toServiceError } from "./backend-error.js";
import type { CallerAuthenticator } from "./caller.js";
import { GrantExpiries } from "./grant-expiry.js";
import { GrantIndex } from "./grant-index.js";
import {
  type CallContext,
  type GrantRequest,
  type GrantResponse,
  type GrantSummary,
  type RevokeRequest,
  type RevokeResponse,
  ServiceError,
} from "./types.js";

/**
 * Grants (design flow 3): a client, authenticated by its JWT-SVID, lets nodes × (users ∪ groups) fetch
 * spiffe://<td>/c/<id>/s/<secret>, whose Vault role reads exactly kv/data/hpcs/<id>/<secret>. The
 * client id always comes from the caller's SVID, never from the request, so a client can only ever
 * name its own secrets: another client's secret of the same name is a different SPIFFE ID and path.
 *
 * Entries are parented as the agent model requires ("Agents and isolation" in DESIGN.md):
 *   site:    parent …/h/<node>,           selector unix:user:<u> | unix:supplementary_group:<g>
 *   per-job: parent …/h/<node>/u/<u> | …/h/<node>/g/<g>, same selectors. There the agent is the user's
 *            own process, so the parent (an alias the server gives only to an agent it verified for that
 *            uid/group) is what isolates users; the selector, true for every process of the job, only
 *            keeps the SVID away from other processes under a well-behaved agent.
 *
 * Order: index → deadline → entries (ONE batch) → policy → role → secret metadata; any failure undoes
 * what this call created. SPIRE answers ALREADY_EXISTS for an identical entry, which is how a repeated
 * grant stays idempotent.
 *
 * Expiry: a grant's deadline is carried by its entries (expires_at), by the role (token TTL ≤ the time
 * left), by the secret's metadata (custom_metadata hpcs-expires-at) and by the deadline record
 * (grant-expiry.ts); the latest grant of a secret sets the secret's deadline or, without one, clears
 * it. SPIRE prunes expired entries only every 5 minutes and serves them until then, and Vault keeps a
 * role forever, so sweepExpired (on the server's timer) revokes an expired grant like revoke with
 * deleteSecret: entries, role, policy (which also strips tokens already issued: Vault evaluates a
 * token's policies by name at each request) and the secret itself.
 */

export type GrantVault = Pick<
  VaultClient,
  | "kvRead"
  | "kvWrite"
  | "kvReadMetadata"
  | "kvWriteMetadata"
  | "kvDestroyAll"
  | "readPolicy"
  | "writePolicy"
  | "deletePolicy"
  | "readJwtRole"
  | "writeJwtRole"
  | "deleteJwtRole"
>;
export type GrantSpire = Pick<SpireRegistration, "batchCreateEntries" | "listEntries" | "batchDeleteEntries">;

export interface GrantServiceOptions {
  config: ServerConfig;
  spire: GrantSpire;
  vault: GrantVault;
  caller: Pick<CallerAuthenticator, "authenticate">;
  /** Milliseconds since the epoch; injectable for tests. */
  now?: () => number;
  /** Upper bound of a grant role's token TTL when the grant expires; default 3600 s. */
  maxTokenTtlSec?: number;
}

export const MAX_LIST = 10_000;
/** nodes × (users + groups); SPIRE handles more, but one request should not create a million entries. */
export const MAX_ENTRIES = 100_000;
// Short enough for tests and demos; a deadline closer than this is more likely a clock or unit mistake.
const MIN_REMAINING_SEC = 10;
export const EXPIRES_METADATA_KEY = "hpcs-expires-at";

export interface ExpiredGrant {
  clientId: string;
  secret: string;
  expiresAt: Date;
  /** What the sweep removed, or why it failed (it is retried on the next sweep). */
  removed?: RevokeResponse;
  error?: string;
}

export interface GrantTarget {
  trustDomain: string;
  agentModel: "site" | "per-job";
  clientId: string;
  secret: string;
  nodes: string[];
  users: string[];
  groups: string[];
  expiresAt?: Date;
}

/** The entries of one grant, one per (node × user) and (node × group). Pure: inputs already validated. */
export function grantEntries(t: GrantTarget): EntrySpec[] {
  const spiffeId = SpiffeId.of(t.trustDomain, "c", t.clientId, "s", t.secret);
  const out: EntrySpec[] = [];
  const push = (node: string, kind: "u" | "g", name: string) => {
    const host = SpiffeId.of(t.trustDomain, "h", node);
    const selector =
      kind === "u"
        ? { type: "unix", value: `user:${name}` }
        : { type: "unix", value: `supplementary_group:${name}` };
    const e: EntrySpec = {
      spiffeId,
      parentId: t.agentModel === "site" ? host : host.child(kind, name),
      selectors: [selector],
    };
    if (t.expiresAt) e.expiresAt = t.expiresAt;
    out.push(e);
  };
  for (const node of t.nodes) {
    for (const u of t.users) push(node, "u", u);
    for (const g of t.groups) push(node, "g", g);
  }
  return out;
}

export class GrantService {
  private readonly now: () => number;
  private readonly index: GrantIndex;
  private readonly expiries: GrantExpiries;
  private readonly td: string;

  constructor(private readonly opts: GrantServiceOptions) {
    this.now = opts.now ?? Date.now;
    this.index = new GrantIndex(opts.vault);
    this.expiries = new GrantExpiries(opts.vault);
    this.td = opts.config.spireServer.trustDomain;
  }

  async grant(ctx: CallContext, req: GrantRequest): Promise<GrantResponse> {
    const clientId = await this.opts.caller.authenticate(ctx);
    // All validation happens before the first write.
    const secret = checkName("secret", "secret", req.secret);
    const nodes = checkList("node", "nodes", req.nodes);
    const users = checkList("user", "users", req.users);
    const groups = checkList("group", "groups", req.groups);
    if (nodes.length === 0) throw invalid("nodes: give at least one node");
    if (users.length + groups.length === 0) throw invalid("users/groups: give at least one user or group");
    if (nodes.length * (users.length + groups.length) > MAX_ENTRIES) {
      throw invalid(`nodes × (users + groups) is more than ${MAX_ENTRIES} entries; split the grant`);
    }
    const expiresAt = req.expiresAt;
    let tokenTtl: number | undefined;
    if (expiresAt !== undefined) {
      if (!(expiresAt instanceof Date) || Number.isNaN(expiresAt.getTime())) {
        throw invalid("expiresAt: use a valid date");
      }
      const remaining = Math.floor((expiresAt.getTime() - this.now()) / 1000);
      if (remaining < MIN_REMAINING_SEC) {
        throw invalid(`expiresAt: must be at least ${MIN_REMAINING_SEC} s in the future`);
      }
      // A token issued just before the deadline may outlive it by at most this cap.
      tokenTtl = Math.min(remaining, this.opts.maxTokenTtlSec ?? 3600);
    }
    const target: GrantTarget = {
      trustDomain: this.td,
      agentModel: this.opts.config.hpcsServer.agentModel,
      clientId,
      secret,
      nodes,
      users,
      groups,
    };
    if (expiresAt) target.expiresAt = expiresAt;
    const entries = grantEntries(target);
    const spiffeId = SpiffeId.of(this.td, "c", clientId, "s", secret);
    const policyName = grantPolicyName(clientId, secret);
    const policyHcl = grantPolicy(clientId, secret, { kvMount: this.opts.config.vault.kvMount });
    const role = grantRole({
      trustDomain: this.td,
      clientId,
      secret,
      audiences: [this.opts.config.vault.audience],
      ...(tokenTtl !== undefined ? { tokenTtlSec: tokenTtl, tokenMaxTtlSec: tokenTtl } : {}),
    });
    const kvPath = secretPath(clientId, secret);

    const undo: (() => Promise<unknown>)[] = [];
    try {
      if (await this.index.add(clientId, secret, new Date(this.now()))) {
        undo.push(() => this.index.remove(clientId, secret));
      }
      // Before anything that can expire, so the sweeper always knows what to remove.
      const previousDeadline = await this.expiries.set(clientId, secret, expiresAt);
      if (previousDeadline?.getTime() !== expiresAt?.getTime()) {
        undo.push(() => this.expiries.set(clientId, secret, previousDeadline));
      }

      const results = await this.opts.spire.batchCreateEntries(entries);
      const created = results.flatMap((r) => (r.status === "created" ? [r.id] : []));
      if (created.length > 0) undo.push(() => this.opts.spire.batchDeleteEntries(created));
      const failed = results.find((r) => r.status === "error");
      if (failed || results.length !== entries.length) {
        const n = results.filter((r) => r.status === "error").length;
        throw new ServiceError(
          "internal",
          `SPIRE refused ${n} of ${entries.length} entries for ${spiffeId}: ${failed?.status === "error" ? failed.message : "result count mismatch"}`,
        );
      }

      const oldPolicy = await this.opts.vault.readPolicy(policyName);
      await this.opts.vault.writePolicy(policyName, policyHcl);
      if (oldPolicy === undefined) undo.push(() => this.opts.vault.deletePolicy(policyName));

      const oldRole: JwtRoleSpec | undefined = await this.opts.vault.readJwtRole(role.name);
      await this.opts.vault.writeJwtRole(role.name, role.spec);
      undo.push(() =>
        oldRole === undefined
          ? this.opts.vault.deleteJwtRole(role.name)
          : this.opts.vault.writeJwtRole(role.name, oldRole),
      );

      if (expiresAt || previousDeadline) {
        // Only on an existing secret: metadata written first would make the client's later first write
        // an "update" in kv-v2, which its create-only policy refuses. Entries and role carry the expiry
        // either way. A grant without a deadline removes the one an earlier grant wrote.
        const meta = await this.opts.vault.kvReadMetadata(kvPath);
        if (meta) {
          const { [EXPIRES_METADATA_KEY]: _old, ...rest } = meta.customMetadata;
          await this.opts.vault.kvWriteMetadata(kvPath, {
            customMetadata: expiresAt ? { ...rest, [EXPIRES_METADATA_KEY]: expiresAt.toISOString() } : rest,
          });
        }
      }

      const res: GrantResponse = {
        clientId,
        secret,
        spiffeId: spiffeId.toString(),
        vaultRole: role.name,
        secretPath: `${this.opts.config.vault.kvMount}/data/${kvPath}`,
        entriesCreated: created.length,
        entriesExisting: results.filter((r) => r.status === "exists").length,
      };
      if (expiresAt) res.expiresAt = expiresAt;
      return res;
    } catch (err) {
      for (const step of undo.reverse()) await step().catch(() => undefined);
      throw toServiceError(err, `grant ${secret}`);
    }
  }

  async revoke(ctx: CallContext, req: RevokeRequest): Promise<RevokeResponse> {
    const clientId = await this.opts.caller.authenticate(ctx);
    const secret = checkName("secret", "secret", req.secret);
    try {
      return await this.remove(clientId, secret, req.deleteSecret === true);
    } catch (err) {
      throw toServiceError(err, `revoke ${secret}`);
    }
  }

  /**
   * Revokes every grant whose deadline has passed, with its secret (see the header). A failure is
   * reported in the result and retried on the next sweep; a grant re-granted with a later deadline
   * since the record was read is left alone.
   */
  async sweepExpired(now: Date = new Date(this.now())): Promise<ExpiredGrant[]> {
    const out: ExpiredGrant[] = [];
    for (const g of await this.expiries.all()) {
      if (g.expiresAt.getTime() > now.getTime()) continue;
      try {
        const current = await this.expiries.get(g.clientId, g.secret);
        if (current === undefined || current.getTime() > now.getTime()) continue;
        out.push({ ...g, removed: await this.remove(g.clientId, g.secret, true) });
      } catch (err) {
        out.push({ ...g, error: toServiceError(err, `expire ${g.secret}`).message });
      }
    }
    return out;
  }

  private async remove(clientId: string, secret: string, deleteSecret: boolean): Promise<RevokeResponse> {
    const spiffeId = SpiffeId.of(this.td, "c", clientId, "s", secret);
    const name = grantPolicyName(clientId, secret);
    const kvPath = secretPath(clientId, secret);
    const entries = await this.opts.spire.listEntries({ bySpiffeId: spiffeId });
    const hadRole = (await this.opts.vault.readJwtRole(name)) !== undefined;
    const hadPolicy = (await this.opts.vault.readPolicy(name)) !== undefined;
    const listed = (await this.index.secrets(clientId)).includes(secret);
    const deadline = await this.expiries.get(clientId, secret);
    const hadSecret = deleteSecret ? (await this.opts.vault.kvReadMetadata(kvPath)) !== undefined : false;
    if (entries.length === 0 && !hadRole && !hadPolicy && !listed && !hadSecret && !deadline) {
      throw new ServiceError("not_found", `no grant of secret ${secret} for client ${clientId}`);
    }
    // Entries first: without them no job can get the SVID, even before the role is gone.
    let entriesDeleted = 0;
    if (entries.length > 0) {
      const results = await this.opts.spire.batchDeleteEntries(entries.map((e) => e.id));
      const bad = results.find((r) => r.status === "error");
      if (bad && bad.status === "error") {
        throw new ServiceError(
          "internal",
          `SPIRE could not delete entry ${bad.id}: ${bad.message}; revoke again`,
        );
      }
      entriesDeleted = results.filter((r) => r.status === "deleted").length;
    }
    if (hadRole) await this.opts.vault.deleteJwtRole(name);
    if (hadPolicy) await this.opts.vault.deletePolicy(name);
    if (hadSecret) await this.opts.vault.kvDestroyAll(kvPath);
    // Last, so an interrupted revoke is still listed (and still swept) and can be repeated.
    if (deadline) await this.expiries.set(clientId, secret, undefined);
    if (listed) await this.index.remove(clientId, secret);
    return { entriesDeleted, roleDeleted: hadRole, policyDeleted: hadPolicy, secretDeleted: hadSecret };
  }

  async listGrants(ctx: CallContext): Promise<GrantSummary[]> {
    const clientId = await this.opts.caller.authenticate(ctx);
    try {
      const out: GrantSummary[] = [];
      for (const secret of await this.index.secrets(clientId)) {
        const spiffeId = SpiffeId.of(this.td, "c", clientId, "s", secret);
        const entries = await this.opts.spire.listEntries({ bySpiffeId: spiffeId });
        if (entries.length === 0) continue; // an interrupted grant or an expired one SPIRE has pruned
        out.push(summarize(this.td, clientId, secret, spiffeId, entries));
      }
      return out;
    } catch (err) {
      throw toServiceError(err, "list grants");
    }
  }
}

/** Nodes, users and groups back from parent IDs (per-job) or selectors (site). */
export function summarize(
  td: string,
  clientId: string,
  secret: string,
  spiffeId: SpiffeId,
  entries: Entry[],
): GrantSummary {
  const nodes = new Set<string>();
  const users = new Set<string>();
  const groups = new Set<string>();
  let expiresAt: Date | undefined;
  for (const e of entries) {
    const p = e.parentId;
    const seg = p.segments;
    if (p.trustDomain !== td || seg[0] !== "h" || !seg[1]) continue;
    nodes.add(seg[1]);
    if (seg.length === 4 && seg[2] === "u" && seg[3]) users.add(seg[3]);
    else if (seg.length === 4 && seg[2] === "g" && seg[3]) groups.add(seg[3]);
    else {
      for (const s of e.selectors) {
        if (s.type !== "unix") continue;
        if (s.value.startsWith("user:")) users.add(s.value.slice(5));
        else if (s.value.startsWith("supplementary_group:")) groups.add(s.value.slice(20));
      }
    }
    if (e.expiresAt && (!expiresAt || e.expiresAt < expiresAt)) expiresAt = e.expiresAt;
  }
  const g: GrantSummary = {
    secret,
    spiffeId: spiffeId.toString(),
    vaultRole: grantPolicyName(clientId, secret),
    nodes: [...nodes].sort(),
    users: [...users].sort(),
    groups: [...groups].sort(),
  };
  if (expiresAt) g.expiresAt = expiresAt;
  return g;
}

function invalid(msg: string): ServiceError {
  return new ServiceError("invalid_argument", msg);
}

function checkName(kind: NameKind, field: string, v: unknown): string {
  if (typeof v !== "string") throw invalid(`${field}: must be a string`);
  try {
    return validateName(kind, v);
  } catch (err) {
    throw invalid(`${field}: ${(err as Error).message}`);
  }
}

/** Validated and de-duplicated, order kept. */
function checkList(kind: NameKind, field: string, v: unknown): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw invalid(`${field}: must be a list`);
  if (v.length > MAX_LIST) throw invalid(`${field}: at most ${MAX_LIST} names; split the grant`);
  const out = new Set<string>();
  v.forEach((x, i) => out.add(checkName(kind, `${field}[${i}]`, x)));
  return [...out];
}
