import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { validateName } from "../../lib/names.js";
import { clientPolicyName } from "../../lib/vault/policies.js";
import type { VaultClient } from "../../lib/vault/vault-client.js";
import { isCasMismatch, toServiceError } from "./backend-error.js";
import { ServiceError } from "./types.js";

/**
 * Operator enrollment: `hpcs-server enroll <client-name>` prints a one-time secret that the client
 * presents once to register. Only a hash and the expiry are stored, in Vault kv at
 * `<kv>/data/hpcs-server/enrollments/<client-name>`, so the server stays stateless and a reader of
 * Vault's storage cannot register as the client.
 *
 * The hash is plain SHA-256: the secret is 256 random bits, so there is nothing to brute-force and a
 * slow KDF (scrypt) would add only latency; a salt is unnecessary for the same reason (no two records
 * share a secret and no dictionary exists).
 *
 * Single use is enforced by Vault's kv check-and-set: redeem writes the "used" version with
 * `cas = <version it read>`, so of two concurrent redeems only one write succeeds.
 *
 * Rotation: a client that registered successfully gets a fresh one-time secret for its next
 * registration (rotate()), so a researcher needs the operator once, not for every run. It replaces the
 * used record with check-and-set against the redeeming version, so an operator's re-enrollment in
 * between wins over it. Its lifetime is ROTATION_TTL_SEC unless the caller passes another.
 */

/** The Vault calls enrollment needs (a fake can stand in for VaultClient in unit tests). */
export type EnrollmentVault = Pick<VaultClient, "kvRead" | "kvWrite" | "readJwtRole">;

export interface EnrollmentOptions {
  vault: EnrollmentVault;
  /** Milliseconds since the epoch; injectable for tests. */
  now?: () => number;
  /** kv path prefix inside the mount; default "hpcs-server/enrollments". */
  prefix?: string;
}

export interface EnrollResult {
  clientName: string;
  /** Show once; it is not stored anywhere. */
  secret: string;
  expiresAt: Date;
}

/** Proof that a redeem succeeded; `version` is the kv version that marked the record used. */
export interface Redemption {
  clientName: string;
  version: number;
}

interface EnrollmentRecord {
  sha256: string;
  expiresAt: string;
  createdAt: string;
  used: boolean;
  usedAt?: string;
}

const SECRET_BYTES = 32;
// base64url of 32 bytes, no padding.
const SECRET_PATTERN = /^[A-Za-z0-9_-]{43}$/;
export const MIN_ENROLL_TTL_SEC = 60;
export const MAX_ENROLL_TTL_SEC = 30 * 24 * 3600;
/** Lifetime of a rotated secret: a month covers a researcher's gaps between runs. */
export const ROTATION_TTL_SEC = 30 * 24 * 3600;

export class Enrollments {
  private readonly now: () => number;
  private readonly prefix: string;

  constructor(private readonly opts: EnrollmentOptions) {
    this.now = opts.now ?? Date.now;
    this.prefix = opts.prefix ?? "hpcs-server/enrollments";
  }

  /**
   * Issues a new secret for clientName, replacing any pending one. Refuses a client that is already
   * registered (its Vault role exists) unless `force`, so a typo cannot hand an existing client's
   * identity to someone else.
   */
  async enroll(
    clientName: string,
    ttlSeconds: number,
    opts: { force?: boolean } = {},
  ): Promise<EnrollResult> {
    const name = checkClient(clientName);
    checkTtl(ttlSeconds);
    const path = this.path(name);
    try {
      if (!opts.force && (await this.opts.vault.readJwtRole(clientPolicyName(name))) !== undefined) {
        throw new ServiceError(
          "already_exists",
          `client ${name} is already registered; use --force to enroll it again (its old agent keeps working until revoked)`,
        );
      }
      const current = await this.opts.vault.kvRead(path);
      const { secret, expiresAt, record } = this.freshRecord(ttlSeconds);
      await this.opts.vault.kvWrite(path, { ...record }, { cas: current?.version ?? 0 });
      return { clientName: name, secret, expiresAt };
    } catch (err) {
      if (isCasMismatch(err)) {
        throw new ServiceError(
          "already_exists",
          `client ${name} was enrolled concurrently; run enroll again`,
        );
      }
      throw toServiceError(err, `enroll ${name}`);
    }
  }

  /** Checks the secret and consumes it; ServiceError("unauthenticated") when wrong, used or expired. */
  async redeem(clientName: string, secret: string): Promise<Redemption> {
    const name = checkClient(clientName);
    // One message for "no such enrollment" and "wrong secret", so a guesser learns nothing.
    const refused = new ServiceError(
      "unauthenticated",
      `enrollment secret for client ${name} is not valid; ask the operator for a new one (hpcs-server enroll ${name})`,
    );
    if (typeof secret !== "string" || !SECRET_PATTERN.test(secret)) throw refused;
    const path = this.path(name);
    try {
      const current = await this.opts.vault.kvRead(path);
      const record = current ? parseRecord(current.data) : undefined;
      if (!current || !record) throw refused;
      const want = Buffer.from(record.sha256, "hex");
      const got = createHash("sha256").update(secret).digest();
      if (want.length !== got.length || !timingSafeEqual(want, got)) throw refused;
      // Only the holder of the secret gets past here, so the specific reasons below leak nothing.
      if (record.used) {
        throw new ServiceError("unauthenticated", `enrollment secret for client ${name} was already used`);
      }
      if (Date.parse(record.expiresAt) <= this.now()) {
        throw new ServiceError(
          "unauthenticated",
          `enrollment secret for client ${name} expired at ${record.expiresAt}; ask the operator for a new one`,
        );
      }
      const used: EnrollmentRecord = { ...record, used: true, usedAt: new Date(this.now()).toISOString() };
      const version = await this.opts.vault.kvWrite(path, { ...used }, { cas: current.version });
      return { clientName: name, version };
    } catch (err) {
      if (isCasMismatch(err)) {
        throw new ServiceError("unauthenticated", `enrollment secret for client ${name} was already used`);
      }
      throw toServiceError(err, `redeem enrollment of ${name}`);
    }
  }

  /**
   * Undoes a redeem when registration failed after it, so a transient SPIRE or Vault failure does not
   * burn the operator's secret. Check-and-set against the redeeming version: if anything (a new enroll)
   * changed the record since, it is left alone. Returns whether the record was restored.
   */
  async release(r: Redemption): Promise<boolean> {
    const path = this.path(r.clientName);
    try {
      const current = await this.opts.vault.kvRead(path);
      const record = current ? parseRecord(current.data) : undefined;
      if (!current || !record || current.version !== r.version) return false;
      const restored: Record<string, unknown> = { ...record, used: false };
      delete restored.usedAt;
      await this.opts.vault.kvWrite(path, restored, { cas: r.version });
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Issues the next one-time secret of a client whose registration (redeemed as `r`) succeeded. Returns
   * undefined, leaving the record alone, when it changed since the redeem (an operator enrolled the
   * client again: that secret wins). Other failures throw ServiceError.
   */
  async rotate(r: Redemption, ttlSeconds = ROTATION_TTL_SEC): Promise<EnrollResult | undefined> {
    const name = checkClient(r.clientName);
    checkTtl(ttlSeconds);
    const path = this.path(name);
    try {
      const current = await this.opts.vault.kvRead(path);
      if (!current || current.version !== r.version) return undefined;
      const { secret, expiresAt, record } = this.freshRecord(ttlSeconds);
      await this.opts.vault.kvWrite(path, { ...record }, { cas: r.version });
      return { clientName: name, secret, expiresAt };
    } catch (err) {
      if (isCasMismatch(err)) return undefined;
      throw toServiceError(err, `rotate enrollment of ${name}`);
    }
  }

  private freshRecord(ttlSeconds: number): { secret: string; expiresAt: Date; record: EnrollmentRecord } {
    const secret = randomBytes(SECRET_BYTES).toString("base64url");
    const now = this.now();
    const expiresAt = new Date(now + ttlSeconds * 1000);
    const record: EnrollmentRecord = {
      sha256: sha256Hex(secret),
      expiresAt: expiresAt.toISOString(),
      createdAt: new Date(now).toISOString(),
      used: false,
    };
    return { secret, expiresAt, record };
  }

  private path(name: string): string {
    return `${this.prefix}/${name}`;
  }
}

function checkClient(clientName: string): string {
  try {
    return validateName("client", clientName);
  } catch (err) {
    throw toServiceError(err, "client name");
  }
}

function checkTtl(ttlSeconds: number): void {
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < MIN_ENROLL_TTL_SEC || ttlSeconds > MAX_ENROLL_TTL_SEC) {
    throw new ServiceError(
      "invalid_argument",
      `enrollment TTL ${ttlSeconds}: use whole seconds between ${MIN_ENROLL_TTL_SEC} and ${MAX_ENROLL_TTL_SEC}`,
    );
  }
}

function sha256Hex(s: string): string {
  return createHash("sha256").update(s).digest("hex");
}

function parseRecord(d: Record<string, unknown>): EnrollmentRecord | undefined {
  if (typeof d.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(d.sha256)) return undefined;
  if (typeof d.expiresAt !== "string" || Number.isNaN(Date.parse(d.expiresAt))) return undefined;
  const r: EnrollmentRecord = {
    sha256: d.sha256,
    expiresAt: d.expiresAt,
    createdAt: String(d.createdAt ?? ""),
    used: d.used === true,
  };
  if (typeof d.usedAt === "string") r.usedAt = d.usedAt;
  return r;
}
