/**
 * What the hpcs server needs from a SPIRE server, independent of how it is reached:
 * the admin API socket (server-client.ts) or the spire-server CLI behind a pre-command
 * (server-cli.ts). Both validate every value before it leaves the process, so a caller
 * cannot smuggle a selector, an argv flag or a control character through either path.
 */

import { SpiffeId } from "../spiffe-id.js";

export interface Selector {
  /** The attestor plugin, e.g. "unix". */
  type: string;
  /** e.g. "uid:1000", "user:alice". */
  value: string;
}

/** A registration entry to create. */
export interface EntrySpec {
  spiffeId: SpiffeId;
  parentId: SpiffeId;
  selectors: Selector[];
  /** Seconds; 0 or absent leaves the server default. */
  x509SvidTtl?: number;
  /** Seconds; 0 or absent leaves the server default. */
  jwtSvidTtl?: number;
  /** SPIRE prunes the entry after this instant. */
  expiresAt?: Date;
  hint?: string;
}

/** A registration entry as the server holds it. */
export interface Entry extends EntrySpec {
  id: string;
  createdAt?: Date;
  revisionNumber?: number;
}

export type CreateEntryResult =
  | { status: "created"; id: string; entry: Entry }
  /** SPIRE found an entry with the same SPIFFE ID, parent and selectors; `id` is that entry's. */
  | { status: "exists"; id: string; entry?: Entry }
  | { status: "error"; code: number; message: string };

export type DeleteEntryResult =
  | { id: string; status: "deleted" }
  | { id: string; status: "not-found" }
  | { id: string; status: "error"; code: number; message: string };

export interface JoinToken {
  token: string;
  expiresAt: Date;
}

export interface JwtAuthority {
  keyId: string;
  /** PKIX (SubjectPublicKeyInfo) DER. */
  publicKey: Buffer;
  expiresAt?: Date;
  tainted: boolean;
}

export interface TrustBundle {
  trustDomain: string;
  /** DER certificates. */
  x509Authorities: Buffer[];
  jwtAuthorities: JwtAuthority[];
  refreshHintSeconds: number;
  sequenceNumber: number;
}

/** At most one of the two in practice; both narrows to entries matching both. */
export interface EntryFilter {
  bySpiffeId?: SpiffeId;
  byParentId?: SpiffeId;
}

export interface SpireRegistration {
  /** A one-shot token for the join_token node attestor; agentId adds an alias entry for the agent. */
  createJoinToken(opts: { ttlSeconds: number; agentId?: SpiffeId }): Promise<JoinToken>;
  /** One result per entry, in order. Never rejects for a per-entry failure, only for a transport one. */
  batchCreateEntries(entries: EntrySpec[]): Promise<CreateEntryResult[]>;
  /** All matching entries, across every page. */
  listEntries(filter: EntryFilter): Promise<Entry[]>;
  /** One result per id, in order. */
  batchDeleteEntries(ids: string[]): Promise<DeleteEntryResult[]>;
  /** Deletes the attested agent so it must re-attest; rejects with SpireError NOT_FOUND if unknown. */
  evictAgent(id: SpiffeId): Promise<void>;
  getBundle(): Promise<TrustBundle>;
  close(): void;
}

/** gRPC status codes (google.rpc.Code) that callers branch on. */
export const Code = {
  OK: 0,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  UNAVAILABLE: 14,
} as const;

/** A failed SPIRE call as a whole (not one entry of a batch). */
export class SpireError extends Error {
  constructor(
    readonly operation: string,
    /** google.rpc.Code, or -1 when the failure carries none (e.g. the CLI could not be run). */
    readonly code: number,
    detail: string,
  ) {
    super(`SPIRE ${operation} failed${code >= 0 ? ` (code ${code})` : ""}: ${detail}`);
    this.name = "SpireError";
  }
}

export class InvalidRegistrationError extends Error {
  constructor(field: string, value: unknown, fix: string) {
    super(`invalid ${field} ${JSON.stringify(value)}: ${fix}`);
    this.name = "InvalidRegistrationError";
  }
}

// Selector types are plugin names; SPIRE itself rejects ':' (the CLI splits "type:value" on the first one).
const SELECTOR_TYPE = /^[A-Za-z0-9_-]{1,64}$/;
// Values are opaque to SPIRE (paths, k8s labels, …) so only what can confuse a log line,
// a terminal or a line-oriented tool is refused: C0/C1 controls, DEL, line/paragraph separators.
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;
const MAX_SELECTOR_VALUE = 1024;
// The character set SPIRE's datastore accepts for entry IDs.
const ENTRY_ID = /^[A-Za-z0-9._-]{1,255}$/;
const MAX_HINT = 1024;
const INT32_MAX = 2 ** 31 - 1;

export function validateSelector(s: Selector): Selector {
  if (typeof s?.type !== "string" || !SELECTOR_TYPE.test(s.type)) {
    throw new InvalidRegistrationError(
      "selector type",
      s?.type,
      "use 1-64 letters, digits, '_' or '-', e.g. unix",
    );
  }
  if (
    typeof s.value !== "string" ||
    s.value === "" ||
    s.value.length > MAX_SELECTOR_VALUE ||
    CONTROL.test(s.value)
  ) {
    throw new InvalidRegistrationError(
      "selector value",
      s.value,
      `use 1-${MAX_SELECTOR_VALUE} characters without control characters, e.g. uid:1000`,
    );
  }
  return s;
}

export function validateEntryId(id: string): string {
  if (typeof id !== "string" || !ENTRY_ID.test(id)) {
    throw new InvalidRegistrationError("entry ID", id, "use 1-255 letters, digits, '.', '_' or '-'");
  }
  return id;
}

/** A SpiffeId instance, or a string re-parsed so that a look-alike object cannot bypass validation. */
export function validateSpiffeId(field: string, id: SpiffeId): SpiffeId {
  if (!(id instanceof SpiffeId)) {
    throw new InvalidRegistrationError(field, String(id), "pass a SpiffeId (SpiffeId.parse)");
  }
  return SpiffeId.parse(id.toString());
}

function validateSeconds(field: string, v: number | undefined): void {
  if (v === undefined) return;
  if (!Number.isInteger(v) || v < 0 || v > INT32_MAX) {
    throw new InvalidRegistrationError(field, v, `use a whole number of seconds, 0-${INT32_MAX}`);
  }
}

/** Throws InvalidRegistrationError (or InvalidSpiffeIdError) naming the first bad field. */
export function validateEntrySpec(e: EntrySpec): EntrySpec {
  validateSpiffeId("entry SPIFFE ID", e.spiffeId);
  validateSpiffeId("entry parent ID", e.parentId);
  if (!Array.isArray(e.selectors) || e.selectors.length === 0) {
    throw new InvalidRegistrationError("selectors", e.selectors, "give at least one selector");
  }
  for (const s of e.selectors) validateSelector(s);
  validateSeconds("x509SvidTtl", e.x509SvidTtl);
  validateSeconds("jwtSvidTtl", e.jwtSvidTtl);
  if (e.expiresAt !== undefined && !(e.expiresAt instanceof Date && Number.isFinite(e.expiresAt.getTime()))) {
    throw new InvalidRegistrationError("expiresAt", e.expiresAt, "use a valid Date");
  }
  if (e.hint !== undefined && (e.hint.length > MAX_HINT || CONTROL.test(e.hint))) {
    throw new InvalidRegistrationError(
      "hint",
      e.hint,
      `use at most ${MAX_HINT} characters without control characters`,
    );
  }
  return e;
}

export function validateTtl(ttlSeconds: number): number {
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > INT32_MAX) {
    throw new InvalidRegistrationError(
      "join token TTL",
      ttlSeconds,
      "use a positive whole number of seconds",
    );
  }
  return ttlSeconds;
}

/** Seconds since the epoch as SPIRE stores them (0 means "unset"). */
export function toEpochSeconds(d: Date | undefined): number {
  return d === undefined ? 0 : Math.floor(d.getTime() / 1000);
}

/** The inverse of toEpochSeconds; int64 fields may arrive as strings (protojson, proto-loader longs). */
export function fromEpochSeconds(v: string | number | undefined | null): Date | undefined {
  const n = Number(v ?? 0);
  return n > 0 ? new Date(n * 1000) : undefined;
}
