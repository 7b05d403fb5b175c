import { validateName } from "../names.js";
import { SpiffeId } from "../spiffe-id.js";
import { clientPolicyName, grantPolicyName } from "./policies.js";

/**
 * A Vault jwt-auth role as hpcs uses it: bound to exactly one SPIFFE ID (the JWT-SVID's `sub`) and one
 * or more audiences, issuing tokens with the given policies. Converted to and from Vault's field names.
 */

export interface JwtRoleSpec {
  /** The SPIFFE ID the JWT-SVID's `sub` claim must equal. */
  boundSubject: string;
  /** Audiences the JWT-SVID must carry (the `-audience` the workload fetched it with). */
  boundAudiences: string[];
  tokenPolicies: string[];
  /** Token TTL in seconds; Vault's mount default when absent. */
  tokenTtlSec?: number;
  /** Hard limit in seconds after which the token cannot be renewed. */
  tokenMaxTtlSec?: number;
}

/** The body of `POST auth/<jwt mount>/role/<name>`. */
export function toVaultRole(spec: JwtRoleSpec): Record<string, unknown> {
  if (!spec.boundSubject) throw new Error("jwt role: boundSubject is required");
  if (spec.boundAudiences.length === 0) throw new Error("jwt role: at least one bound audience is required");
  const body: Record<string, unknown> = {
    role_type: "jwt",
    user_claim: "sub",
    bound_subject: spec.boundSubject,
    bound_audiences: spec.boundAudiences,
    token_policies: spec.tokenPolicies,
  };
  if (spec.tokenTtlSec !== undefined) body.token_ttl = spec.tokenTtlSec;
  if (spec.tokenMaxTtlSec !== undefined) body.token_max_ttl = spec.tokenMaxTtlSec;
  return body;
}

/** Vault's answer to `GET auth/<jwt mount>/role/<name>` (its `data`), back in our terms. */
export function fromVaultRole(data: Record<string, unknown>): JwtRoleSpec {
  const list = (v: unknown): string[] => (Array.isArray(v) ? v.map(String) : []);
  const spec: JwtRoleSpec = {
    boundSubject: String(data.bound_subject ?? ""),
    boundAudiences: list(data.bound_audiences),
    tokenPolicies: list(data.token_policies),
  };
  if (typeof data.token_ttl === "number" && data.token_ttl > 0) spec.tokenTtlSec = data.token_ttl;
  if (typeof data.token_max_ttl === "number" && data.token_max_ttl > 0)
    spec.tokenMaxTtlSec = data.token_max_ttl;
  return spec;
}

export interface RoleTarget {
  trustDomain: string;
  clientId: string;
  /** The audiences the workloads fetch their JWT-SVIDs with (`[vault] audience`). */
  audiences: string[];
  tokenTtlSec?: number;
  tokenMaxTtlSec?: number;
}

/** The client's role: `spiffe://<td>/c/<id>/workload` gets policy `hpcs-client-<id>` (create-only). */
export function clientRole(t: RoleTarget): { name: string; spec: JwtRoleSpec } {
  const name = clientPolicyName(t.clientId);
  const subject = SpiffeId.of(t.trustDomain, "c", validateName("client", t.clientId), "workload");
  return {
    name,
    spec: withTtl(t, {
      boundSubject: subject.toString(),
      boundAudiences: t.audiences,
      tokenPolicies: [name],
    }),
  };
}

/** A grant's role: `spiffe://<td>/c/<id>/s/<secret>` gets the read-only policy of that one secret. */
export function grantRole(t: RoleTarget & { secret: string }): { name: string; spec: JwtRoleSpec } {
  const name = grantPolicyName(t.clientId, t.secret);
  const subject = SpiffeId.of(
    t.trustDomain,
    "c",
    validateName("client", t.clientId),
    "s",
    validateName("secret", t.secret),
  );
  return {
    name,
    spec: withTtl(t, {
      boundSubject: subject.toString(),
      boundAudiences: t.audiences,
      tokenPolicies: [name],
    }),
  };
}

function withTtl(t: RoleTarget, spec: JwtRoleSpec): JwtRoleSpec {
  if (t.tokenTtlSec !== undefined) spec.tokenTtlSec = t.tokenTtlSec;
  if (t.tokenMaxTtlSec !== undefined) spec.tokenMaxTtlSec = t.tokenMaxTtlSec;
  return spec;
}
