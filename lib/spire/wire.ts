/**
 * The SPIRE API messages in their snake_case object form. Both transports produce exactly this
 * shape — proto-loader with keepCase, and the CLI's protojson output with UseProtoNames — so one
 * mapping serves both; only bytes (Buffer vs base64) and int64 (string vs number) differ.
 */

import { SpiffeId } from "../spiffe-id.js";
import {
  Code,
  type CreateEntryResult,
  type DeleteEntryResult,
  type Entry,
  type EntrySpec,
  fromEpochSeconds,
  type TrustBundle,
  toEpochSeconds,
} from "./registration.js";

type Int64 = string | number;

export interface WireSpiffeId {
  trust_domain: string;
  path: string;
}

export interface WireSelector {
  type: string;
  value: string;
}

export interface WireEntry {
  id?: string;
  spiffe_id?: WireSpiffeId | null;
  parent_id?: WireSpiffeId | null;
  selectors?: WireSelector[];
  x509_svid_ttl?: number;
  jwt_svid_ttl?: number;
  expires_at?: Int64;
  hint?: string;
  revision_number?: Int64;
  created_at?: Int64;
}

export interface WireStatus {
  code?: number;
  message?: string;
}

export interface WireCreateResult {
  status?: WireStatus | null;
  entry?: WireEntry | null;
}

export interface WireDeleteResult {
  status?: WireStatus | null;
  id?: string;
}

export interface WireBundle {
  trust_domain?: string;
  x509_authorities?: { asn1?: Buffer | Uint8Array | string; tainted?: boolean }[];
  jwt_authorities?: {
    public_key?: Buffer | Uint8Array | string;
    key_id?: string;
    expires_at?: Int64;
    tainted?: boolean;
  }[];
  refresh_hint?: Int64;
  sequence_number?: Int64;
}

export function toWireSpiffeId(id: SpiffeId): WireSpiffeId {
  return { trust_domain: id.trustDomain, path: id.path };
}

export function fromWireSpiffeId(id: WireSpiffeId | null | undefined): SpiffeId {
  if (!id) throw new Error("SPIRE returned an entry without a SPIFFE ID");
  // The API allows a path without its leading slash ("SHOULD have"), so normalise before parsing.
  const path = id.path === "" || id.path.startsWith("/") ? id.path : `/${id.path}`;
  return SpiffeId.parse(`spiffe://${id.trust_domain}${path}`);
}

/** An EntrySpec (already validated) as the API's Entry message. */
export function toWireEntry(e: EntrySpec): WireEntry {
  return {
    spiffe_id: toWireSpiffeId(e.spiffeId),
    parent_id: toWireSpiffeId(e.parentId),
    selectors: e.selectors.map((s) => ({ type: s.type, value: s.value })),
    x509_svid_ttl: e.x509SvidTtl ?? 0,
    jwt_svid_ttl: e.jwtSvidTtl ?? 0,
    expires_at: toEpochSeconds(e.expiresAt),
    hint: e.hint ?? "",
  };
}

export function fromWireEntry(w: WireEntry): Entry {
  const entry: Entry = {
    id: w.id ?? "",
    spiffeId: fromWireSpiffeId(w.spiffe_id),
    parentId: fromWireSpiffeId(w.parent_id),
    selectors: (w.selectors ?? []).map((s) => ({ type: s.type, value: s.value })),
  };
  if (w.x509_svid_ttl) entry.x509SvidTtl = w.x509_svid_ttl;
  if (w.jwt_svid_ttl) entry.jwtSvidTtl = w.jwt_svid_ttl;
  const expiresAt = fromEpochSeconds(w.expires_at);
  if (expiresAt) entry.expiresAt = expiresAt;
  if (w.hint) entry.hint = w.hint;
  const createdAt = fromEpochSeconds(w.created_at);
  if (createdAt) entry.createdAt = createdAt;
  if (w.revision_number !== undefined) entry.revisionNumber = Number(w.revision_number);
  return entry;
}

/**
 * One BatchCreateEntry result. ALREADY_EXISTS is success for an idempotent grant: the server
 * puts the existing entry (with its id) in the result, which is what the caller must remember.
 */
export function fromWireCreateResult(r: WireCreateResult): CreateEntryResult {
  const code = r.status?.code ?? Code.OK;
  if (code === Code.OK && r.entry?.id) {
    return { status: "created", id: r.entry.id, entry: fromWireEntry(r.entry) };
  }
  if (code === Code.ALREADY_EXISTS && r.entry?.id) {
    return { status: "exists", id: r.entry.id, entry: fromWireEntry(r.entry) };
  }
  if (code === Code.OK) {
    return { status: "error", code: Code.OK, message: "SPIRE reported success but returned no entry ID" };
  }
  if (code === Code.ALREADY_EXISTS) {
    // The CLI replaces the returned entry by the requested one, losing the id; its caller resolves it.
    return { status: "error", code, message: r.status?.message || "entry already exists (id unknown)" };
  }
  return { status: "error", code, message: r.status?.message || `code ${code}` };
}

export function fromWireDeleteResult(r: WireDeleteResult, requestedId: string): DeleteEntryResult {
  const code = r.status?.code ?? Code.OK;
  const id = r.id || requestedId;
  if (code === Code.OK) return { id, status: "deleted" };
  if (code === Code.NOT_FOUND) return { id, status: "not-found" };
  return { id, status: "error", code, message: r.status?.message || `code ${code}` };
}

function toBuffer(b: Buffer | Uint8Array | string | undefined): Buffer {
  if (b === undefined) return Buffer.alloc(0);
  return typeof b === "string" ? Buffer.from(b, "base64") : Buffer.from(b);
}

export function fromWireBundle(w: WireBundle): TrustBundle {
  return {
    trustDomain: w.trust_domain ?? "",
    x509Authorities: (w.x509_authorities ?? []).map((a) => toBuffer(a.asn1)),
    jwtAuthorities: (w.jwt_authorities ?? []).map((k) => {
      const expiresAt = fromEpochSeconds(k.expires_at);
      return {
        keyId: k.key_id ?? "",
        publicKey: toBuffer(k.public_key),
        ...(expiresAt ? { expiresAt } : {}),
        tainted: k.tainted ?? false,
      };
    }),
    refreshHintSeconds: Number(w.refresh_hint ?? 0),
    sequenceNumber: Number(w.sequence_number ?? 0),
  };
}

/** Two selector lists name the same set (SPIRE's notion of a "similar" entry ignores order). */
export function sameSelectors(a: readonly WireSelector[], b: readonly WireSelector[]): boolean {
  const key = (s: WireSelector) => `${s.type}\u0000${s.value}`;
  const as = new Set(a.map(key));
  const bs = new Set(b.map(key));
  return as.size === bs.size && [...as].every((k) => bs.has(k));
}
