import { createHash } from "node:crypto";
import { validateName } from "../names.js";
import { checkMount, checkVaultName } from "./vault-paths.js";

/**
 * The least-privilege Vault ACL policies of the design, as pure functions of validated names:
 *
 * - client `hpcs-client-<id>`: create-only on `kv/data/hpcs/<id>/*` — a client can store new secrets
 *   under its own prefix but never read, overwrite or list them (not even its own);
 * - grant `hpcs-grant-<id>.<secret>.<hash>`: read-only on exactly `kv/data/hpcs/<id>/<secret>`;
 * - the hpcs server: write `auth/jwt/role/hpcs-*` and `sys/policies/acl/hpcs-*`, nothing else
 *   (the original README grants `auth/jwt/role/*` and `sys/policies/acl/*` with sudo), and explicitly
 *   not its own role and policy, so it cannot widen them.
 *
 * Each jwt role carries the same name as its policy.
 *
 * Grant names: `<id>.<secret>` is unambiguous because client names contain no '.'. Vault lower-cases
 * policy names while kv paths are case-sensitive, and a jwt role name must end in a letter or digit,
 * so the name carries the lower-cased secret (for humans) plus 12 hex digits of sha256("<id>/<secret>")
 * (so "Data" and "data" of one client never share a policy, and "data-" still forms a valid name).
 */

export const SERVER_CAPABILITIES = ["create", "read", "update", "delete"] as const;

export interface PolicyOptions {
  /** kv-v2 mount, default "kv". */
  kvMount?: string;
}

export interface ServerPolicyOptions {
  /** jwt auth mount, default "jwt". */
  jwtMount?: string;
  /** kv-v2 mount, default "kv". */
  kvMount?: string;
  /** The server's own role (and policy) name, `[vault] server-role`; default "hpcs-server". */
  serverRole?: string;
}

/** The kv path (inside the mount) of a client's secret: `hpcs/<id>/<secret>`. */
export function secretPath(clientId: string, secret: string): string {
  return `hpcs/${validateName("client", clientId)}/${validateName("secret", secret)}`;
}

/** `hpcs-client-<id>`, the name of the client's policy and jwt role. */
export function clientPolicyName(clientId: string): string {
  // The client pattern already ends in a letter or digit, as Vault role names must.
  validateName("client", clientId);
  return checkVaultName("policy name", `hpcs-client-${clientId}`);
}

/** `hpcs-grant-<id>.<secret, lower-cased>.<12 hex>`, the name of a grant's policy and jwt role. */
export function grantPolicyName(clientId: string, secret: string): string {
  validateName("client", clientId);
  validateName("secret", secret);
  const tag = createHash("sha256").update(`${clientId}/${secret}`).digest("hex").slice(0, 12);
  return checkVaultName("policy name", `hpcs-grant-${clientId}.${secret.toLowerCase()}.${tag}`);
}

/** Create-only on the client's own prefix. */
export function clientPolicy(clientId: string, opts: PolicyOptions = {}): string {
  const kv = checkMount("kv mount", opts.kvMount ?? "kv");
  validateName("client", clientId);
  return [
    `# ${clientPolicyName(clientId)}: store new secrets under its own prefix; no read, update or list.`,
    `path "${kv}/data/hpcs/${clientId}/*" {`,
    `  capabilities = ["create"]`,
    `}`,
    ``,
  ].join("\n");
}

/** Read-only on exactly one secret. */
export function grantPolicy(clientId: string, secret: string, opts: PolicyOptions = {}): string {
  const kv = checkMount("kv mount", opts.kvMount ?? "kv");
  const path = secretPath(clientId, secret);
  return [
    `# ${grantPolicyName(clientId, secret)}: read exactly one secret.`,
    `path "${kv}/data/${path}" {`,
    `  capabilities = ["read"]`,
    `}`,
    ``,
  ].join("\n");
}

/** What the hpcs server needs to manage client and grant roles and policies, and no more. */
export function serverPolicy(opts: ServerPolicyOptions = {}): string {
  const jwt = checkMount("jwt mount", opts.jwtMount ?? "jwt");
  const kv = checkMount("kv mount", opts.kvMount ?? "kv");
  const self = checkVaultName("server role name", opts.serverRole ?? "hpcs-server");
  const caps = SERVER_CAPABILITIES.map((c) => `"${c}"`).join(", ");
  const lines = [
    `# hpcs server: manage hpcs-* jwt roles and ACL policies only.`,
    `path "auth/${jwt}/role/hpcs-*" {`,
    `  capabilities = [${caps}]`,
    `}`,
    ``,
    `path "sys/policies/acl/hpcs-*" {`,
    `  capabilities = [${caps}]`,
    `}`,
    ``,
    `# Its own records (enrollments, node tokens, grant index), written with check-and-set.`,
    `path "${kv}/data/hpcs-server/*" {`,
    `  capabilities = ["create", "read", "update"]`,
    `}`,
    ``,
    `# Secret metadata only (grant expiry, revoke --delete-secret); never the secrets' data.`,
    `path "${kv}/metadata/hpcs/*" {`,
    `  capabilities = [${caps}]`,
    `}`,
    ``,
  ];
  if (self.startsWith("hpcs-")) {
    lines.push(
      `# ...except its own role and policy, which the glob above would otherwise let it widen.`,
      `path "auth/${jwt}/role/${self}" {`,
      `  capabilities = ["deny"]`,
      `}`,
      ``,
      `path "sys/policies/acl/${self}" {`,
      `  capabilities = ["deny"]`,
      `}`,
      ``,
    );
  }
  return lines.join("\n");
}
