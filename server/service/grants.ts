import type { ServerConfig } from "../../lib/config/server-config.js";
import { validateName, type NameKind } from "../../lib/names.js";
import { SpiffeId } from "../../lib/spiffe-id.js";
import type { Entry, EntrySpec, SpireRegistration } from "../../lib/spire/registration.js";
import { grantRole, type JwtRoleSpec } from "../../lib/vault/jwt-role.js";
import { grantPolicy, grantPolicyName, secretPath } from "../../lib/vault/policies.js";
import type { VaultClient } from "../../lib/vault/vault-client.js";
import { toServiceError } from "./backend-error.js";
import type { CallerAuthenticator } from "./caller.js";
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
 * Order: index → entries (ONE batch) → policy → role → secret metadata; any failure undoes what this
 * call created. SPIRE answers ALREADY_EXISTS for an identical entry, which is how a repeated grant stays
 * idempotent.
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
const MIN_REMAINING_SEC = 60;
export const EXPIRES_METADATA_KEY = "hpcs-expires-at";

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
  private readonly td: string;

  constructor(private readonly opts: GrantServiceOptions) {
    this.now = opts.now ?? Date.now;
    this.index = new GrantIndex(opts.vault);
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

      if (expiresAt) {
        // Only on an existing secret: metadata written first would make the client's later first write
        // an "update" in kv-v2, which its create-only policy refuses. Entries and role carry the expiry
        // either way.
        const meta = await this.opts.vault.kvReadMetadata(kvPath);
        if (meta) {
          await this.opts.vault.kvWriteMetadata(kvPath, {
            customMetadata: { ...meta.customMetadata, [EXPIRES_METADATA_KEY]: expiresAt.toISOString() },
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
    const spiffeId = SpiffeId.of(this.td, "c", clientId, "s", secret);
    const name = grantPolicyName(clientId, secret);
    const kvPath = secretPath(clientId, secret);
    try {
      const entries = await this.opts.spire.listEntries({ bySpiffeId: spiffeId });
      const hadRole = (await this.opts.vault.readJwtRole(name)) !== undefined;
      const hadPolicy = (await this.opts.vault.readPolicy(name)) !== undefined;
      const listed = (await this.index.secrets(clientId)).includes(secret);
      const hadSecret = req.deleteSecret
        ? (await this.opts.vault.kvReadMetadata(kvPath)) !== undefined
        : false;
      if (entries.length === 0 && !hadRole && !hadPolicy && !listed && !hadSecret) {
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
      // Last, so an interrupted revoke is still listed and can be repeated.
      if (listed) await this.index.remove(clientId, secret);
      return { entriesDeleted, roleDeleted: hadRole, policyDeleted: hadPolicy, secretDeleted: hadSecret };
    } catch (err) {
      throw toServiceError(err, `revoke ${secret}`);
    }
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
