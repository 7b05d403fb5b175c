/**
 * Node attestation for `nodeJoinToken`: the seam that proves "this caller runs on node N as user U"
 * before the server hands out a join token whose agent is allowed to hold …/h/N/u/U and the group
 * aliases (DESIGN "Agents and isolation"). Three modes, chosen by `[hpcs-server] node-attestation`:
 *
 *   munge     (default) Slurm's MUNGE credential made on the node, verified with the site's key, the
 *             uid's running job asked of Slurm (munge-attestor.ts).
 *   operator  An operator pre-issues a single-use token for exactly one (node, user).
 *   open      The original's behaviour: the claimed node and user are believed. Insecure; only when
 *             configured, and every use is logged as a warning.
 *
 * The user's groups are resolved here, on the server, from NSS: the caller never names its groups,
 * so it cannot claim a group alias it is not a member of.
 */

import { createHash, randomBytes } from "node:crypto";
import { execFile } from "node:child_process";
import { InvalidNameError, isValidName, type NameKind, validateName } from "../../lib/names.js";
import type { VaultClient } from "../../lib/vault/vault-client.js";
import { VaultError } from "../../lib/vault/vault-error.js";
import { type CallContext, type NodeTokenRequest, ServiceError } from "./types.js";

/** What an attestor vouches for: node and user as proven, groups as NSS resolved them. */
export interface AttestedNode {
  node: string;
  user: string;
  uid?: number;
  groups: string[];
}

export interface NodeAttestor {
  /** Resolves only when node and user are proven; rejects with a ServiceError otherwise. */
  attest(req: NodeTokenRequest, ctx: CallContext): Promise<AttestedNode>;
}

export interface Logger {
  warn(obj: object, msg: string): void;
}

/** Where a user's groups come from; an interface so unit tests need no real accounts. */
export interface GroupResolver {
  groupsOf(user: string): Promise<string[]>;
}

/**
 * Groups from the server's NSS (`id -Gn -- <user>`, argv, no shell). The server and the compute
 * nodes must share the account database (LDAP/SSSD, as HPC sites do); the primary group is included
 * because it is a group the user's processes carry too. Names that fail lib/names are dropped with a
 * warning rather than failing the job: they can never be a grant target, so dropping loses nothing.
 */
export class NssGroupResolver implements GroupResolver {
  constructor(private readonly opts: { idBin?: string; timeoutMs?: number; logger?: Logger } = {}) {}

  groupsOf(user: string): Promise<string[]> {
    return new Promise((resolve, reject) => {
      // Checked here too (not only by the caller): the name becomes an argv word of `id`.
      name("user", user);
      execFile(
        this.opts.idBin ?? "id",
        ["-Gn", "--", user],
        { timeout: this.opts.timeoutMs ?? 5000, env: { PATH: "/usr/bin:/bin", LC_ALL: "C" } },
        (err, stdout) => {
          if (err) {
            // `id` fails for an unknown user: the server cannot vouch for its groups, so no token.
            reject(
              new ServiceError(
                "permission_denied",
                `user ${JSON.stringify(user)} is unknown to the server's account database: check NSS (LDAP/SSSD) on the hpcs server`,
              ),
            );
            return;
          }
          const out: string[] = [];
          for (const g of stdout.trim().split(/\s+/).filter(Boolean)) {
            if (isValidName("group", g)) {
              if (!out.includes(g)) out.push(g);
            } else {
              this.opts.logger?.warn({ user, group: g }, "group name not usable as a grant target; skipped");
            }
          }
          resolve(out);
        },
      );
    });
  }
}

/** Where a uid's user name comes from; an interface so unit tests need no real accounts. */
export interface UidResolver {
  /** The uid's user name, or undefined when NSS has no such uid (or its name is not a valid user name). */
  userOf(uid: number): Promise<string | undefined>;
}

/**
 * User names from the server's NSS (`getent passwd <uid>`, argv, no shell): the same account database
 * the compute nodes use (LDAP/SSSD), so the uid munged vouched for on the node is the same person here.
 */
export class NssUidResolver implements UidResolver {
  constructor(private readonly opts: { getentBin?: string; timeoutMs?: number } = {}) {}

  userOf(uid: number): Promise<string | undefined> {
    return new Promise((resolve, reject) => {
      if (!Number.isSafeInteger(uid) || uid < 0) {
        resolve(undefined);
        return;
      }
      execFile(
        this.opts.getentBin ?? "getent",
        ["passwd", String(uid)],
        { timeout: this.opts.timeoutMs ?? 5000, env: { PATH: "/usr/bin:/bin", LC_ALL: "C" } },
        (err, stdout) => {
          // getent exits 2 for "no such key"; anything else means NSS could not answer.
          if (err) {
            if ((err as { code?: unknown }).code === 2) resolve(undefined);
            else
              reject(
                new ServiceError("unavailable", `getent passwd ${uid} failed: check NSS on the hpcs server`),
              );
            return;
          }
          const [user, , id] = (stdout.split("\n")[0] ?? "").split(":");
          resolve(user !== undefined && id === String(uid) && isValidName("user", user) ? user : undefined);
        },
      );
    });
  }
}

/** The original's mode: anyone may claim any node and user. */
export class OpenAttestor implements NodeAttestor {
  constructor(
    private readonly groups: GroupResolver,
    private readonly logger: Logger,
  ) {}

  async attest(req: NodeTokenRequest, ctx: CallContext): Promise<AttestedNode> {
    const node = name("node", req.node);
    const user = name("user", req.user);
    // Logged every time so that an open deployment is visible in the logs, not only in the config.
    this.logger.warn(
      { node, user, requestId: ctx.requestId, peer: ctx.peerAddress },
      "node-attestation = open: node and user are NOT verified; any caller can obtain this user's identities",
    );
    return { node, user, groups: await this.groups.groupsOf(user) };
  }
}

/** A token record as stored in Vault; the token itself is never stored, only its SHA-256. */
interface TokenRecord {
  node: string;
  user: string;
  expiresAt: string;
  used: boolean;
  issuedAt: string;
  usedAt?: string;
}

export interface IssuedNodeToken {
  token: string;
  expiresAt: Date;
}

const TOKEN_BYTES = 32;
// base64url of 32 bytes; anything else is refused before it reaches a Vault path or a hash.
const TOKEN_FORMAT = /^[A-Za-z0-9_-]{43}$/;
const DEFAULT_OPERATOR_TTL = 24 * 3600;
const MAX_OPERATOR_TTL = 30 * 24 * 3600;

/** The kv path (inside the kv mount) of a token's record. */
export function nodeTokenPath(prefix: string, token: string): string {
  return `${prefix}/${createHash("sha256").update(token, "utf8").digest("hex")}`;
}

/**
 * Operator-issued, single-use node tokens kept in Vault kv v2.
 *
 * Why Vault and not a stateless HMAC-signed token: single use needs a record of "redeemed", and the
 * server is stateless by design (types.ts), so some shared store is unavoidable; Vault is already
 * there, and kv v2 check-and-set makes "redeem" atomic across server replicas (two concurrent
 * redemptions of one token: exactly one CAS write wins). Only SHA-256(token) is stored — the token
 * has 256 random bits, so the hash cannot be reversed and a reader of kv cannot redeem it — and the
 * path is the hash, so a lookup needs no listing. The hpcs server's Vault policy must allow
 * create/read/update on `<kv>/data/<prefix>/*` for this mode.
 */
export class OperatorAttestor implements NodeAttestor {
  private readonly prefix: string;

  constructor(
    private readonly vault: VaultClient,
    private readonly groups: GroupResolver,
    opts: { pathPrefix?: string; now?: () => Date } = {},
  ) {
    this.prefix = opts.pathPrefix ?? "hpcs-server/node-tokens";
    this.now = opts.now ?? (() => new Date());
  }

  private readonly now: () => Date;

  /** A fresh token for exactly (node, user), valid for ttlSeconds; printed once to the operator. */
  async issue(node: string, user: string, ttlSeconds = DEFAULT_OPERATOR_TTL): Promise<IssuedNodeToken> {
    name("node", node);
    name("user", user);
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > MAX_OPERATOR_TTL) {
      throw new ServiceError(
        "invalid_argument",
        `invalid ttl ${ttlSeconds}: use whole seconds, 1-${MAX_OPERATOR_TTL}`,
      );
    }
    const token = randomBytes(TOKEN_BYTES).toString("base64url");
    const issuedAt = this.now();
    const expiresAt = new Date(issuedAt.getTime() + ttlSeconds * 1000);
    const record: TokenRecord = {
      node,
      user,
      expiresAt: expiresAt.toISOString(),
      used: false,
      issuedAt: issuedAt.toISOString(),
    };
    // cas 0: a (astronomically unlikely) hash collision fails instead of overwriting a record.
    await this.vault.kvWrite(nodeTokenPath(this.prefix, token), { ...record }, { cas: 0 }).catch(rethrow);
    return { token, expiresAt };
  }

  async attest(req: NodeTokenRequest, _ctx: CallContext): Promise<AttestedNode> {
    const node = name("node", req.node);
    const user = name("user", req.user);
    const token = req.operatorToken;
    if (token === undefined || token === "") {
      throw new ServiceError(
        "unauthenticated",
        "operatorToken is missing: node-attestation = operator needs the token an operator issued for this node and user",
      );
    }
    if (!TOKEN_FORMAT.test(token)) {
      throw new ServiceError(
        "unauthenticated",
        "operatorToken is malformed: pass the token exactly as issued",
      );
    }
    const path = nodeTokenPath(this.prefix, token);
    const stored = await this.vault.kvRead(path).catch(rethrow);
    // One message for unknown, used and expired, so the answer reveals nothing about other tokens.
    const refused = new ServiceError(
      "unauthenticated",
      "operatorToken is unknown, already used or expired: ask the operator for a new one",
    );
    if (!stored) throw refused;
    const rec = stored.data as unknown as TokenRecord;
    if (rec.node !== node || rec.user !== user) {
      // Not consumed: the holder may still redeem it for the node and user it was issued for.
      throw new ServiceError(
        "permission_denied",
        "operatorToken was issued for another node or user: use the token issued for this node and user",
      );
    }
    if (rec.used || !(Date.parse(rec.expiresAt) > this.now().getTime())) throw refused;
    // Resolve groups before consuming, so an NSS failure does not burn the token.
    const groups = await this.groups.groupsOf(user);
    const used: TokenRecord = { ...rec, used: true, usedAt: this.now().toISOString() };
    try {
      await this.vault.kvWrite(path, { ...used }, { cas: stored.version });
    } catch (err) {
      // 400 = CAS mismatch: another request redeemed it between our read and write.
      if (err instanceof VaultError && err.status === 400) throw refused;
      rethrow(err);
    }
    return { node, user, groups };
  }

  /** Removes a token's record (revocation by the operator, test clean-up). */
  async revoke(token: string): Promise<void> {
    if (!TOKEN_FORMAT.test(token)) return;
    await this.vault.kvDestroyAll(nodeTokenPath(this.prefix, token)).catch(rethrow);
  }
}

function rethrow(err: unknown): never {
  if (err instanceof VaultError) {
    throw new ServiceError(
      err.status === undefined ? "unavailable" : "internal",
      `node token store: ${err.message}`,
    );
  }
  throw err;
}

/** lib/names as a one-line invalid_argument ServiceError. */
function name(kind: NameKind, value: string): string {
  try {
    return validateName(kind, value);
  } catch (err) {
    if (err instanceof InvalidNameError) throw new ServiceError("invalid_argument", err.message);
    throw err;
  }
}
