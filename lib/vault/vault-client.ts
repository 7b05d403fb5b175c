import nodeVault from "node-vault";
import { fromVaultRole, type JwtRoleSpec, toVaultRole } from "./jwt-role.js";
import { VaultError } from "./vault-error.js";
import { checkKvPath, checkMount, checkVaultName } from "./vault-paths.js";

/**
 * The Vault operations hpcs needs, over node-vault, configured only from what is passed in:
 * node-vault's VAULT_ADDR / VAULT_TOKEN / VAULT_NAMESPACE / VAULT_PREFIX / VAULT_SKIP_VERIFY environment
 * defaults are overridden, so a stray variable cannot redirect a client or switch off TLS checks.
 * Every failure is a VaultError (one line: operation, path, status, Vault's message).
 */

export interface VaultClientConfig {
  /** e.g. https://vault:8200 */
  url: string;
  /** PEM of the CA that signed Vault's certificate; the system CAs are used when absent. */
  caPem?: string | Buffer;
  timeoutMs: number;
  /** kv-v2 mount, default "kv". */
  kvMount?: string;
  /** jwt auth mount, default "jwt". */
  jwtMount?: string;
  /** The token sent with each request, or a function returning the current one (e.g. a TokenKeeper's). */
  token?: string | (() => string);
}

export interface VaultLogin {
  token: string;
  accessor: string;
  policies: string[];
  /** Seconds the token is valid for from now. */
  leaseDurationSec: number;
  renewable: boolean;
}

export interface KvSecret {
  data: Record<string, unknown>;
  version: number;
  createdTime: string;
  customMetadata: Record<string, string>;
}

export interface KvMetadata {
  currentVersion: number;
  customMetadata: Record<string, string>;
  /** Vault's duration string, e.g. "1h0m0s"; "0s" when versions never expire. */
  deleteVersionAfter: string;
}

export interface KvMetadataUpdate {
  customMetadata: Record<string, string>;
  /** Seconds after which each version is deleted; 0 = never. */
  deleteVersionAfterSec?: number;
  maxVersions?: number;
}

type NodeVaultClient = ReturnType<typeof nodeVault>;
type Body = Record<string, unknown> | undefined;

export class VaultClient {
  readonly kvMount: string;
  readonly jwtMount: string;
  private readonly nv: NodeVaultClient;

  constructor(
    /** Private: it may hold a token. */
    private readonly config: VaultClientConfig,
    shared?: NodeVaultClient,
  ) {
    let url: URL;
    try {
      url = new URL(config.url);
    } catch {
      throw new Error(`vault url ${JSON.stringify(config.url)} is not a URL, e.g. https://vault:8200`);
    }
    if (url.protocol !== "https:" && url.protocol !== "http:") {
      throw new Error(`vault url ${JSON.stringify(config.url)} must be http(s), e.g. https://vault:8200`);
    }
    this.kvMount = checkMount("kv mount", config.kvMount ?? "kv");
    this.jwtMount = checkMount("jwt mount", config.jwtMount ?? "jwt");
    this.nv = shared ?? VaultClient.makeNodeVault(config);
  }

  private static makeNodeVault(config: VaultClientConfig): NodeVaultClient {
    const nv = nodeVault({
      endpoint: config.url,
      apiVersion: "v1",
      // Explicit so that VAULT_SKIP_VERIFY cannot turn certificate checks off.
      rpDefaults: { strictSSL: true },
      requestOptions: {
        timeout: config.timeoutMs,
        ...(config.caPem !== undefined ? { ca: config.caPem } : {}),
      },
    } as Parameters<typeof nodeVault>[0]);
    // node-vault falls back to the environment for these; we send tokens per request ourselves.
    nv.token = "";
    (nv as unknown as { namespace: string | undefined }).namespace = undefined;
    (nv as unknown as { pathPrefix: string }).pathPrefix = "";
    return nv;
  }

  /** The same Vault, mounts and TLS settings, authenticating with another token. */
  withToken(token: string | (() => string)): VaultClient {
    return new VaultClient({ ...this.config, token }, this.nv);
  }

  // --- auth ---

  /** Logs in to jwt auth with a JWT-SVID; sends no token. */
  async loginJwt(role: string, jwt: string): Promise<VaultLogin> {
    checkVaultName("jwt role name", role);
    const path = `auth/${this.jwtMount}/login`;
    const res = await this.call("jwt login", path, "POST", { role, jwt }, null);
    return toLogin("jwt login", path, res);
  }

  /** `auth/token/renew-self`: extends the token's TTL (capped by its max TTL). */
  async renewSelf(token?: string): Promise<VaultLogin> {
    const path = "auth/token/renew-self";
    const res = await this.call("token renew", path, "POST", {}, token);
    return toLogin("token renew", path, res);
  }

  /** `auth/token/revoke-self`. */
  async revokeSelf(token?: string): Promise<void> {
    await this.call("token revoke", "auth/token/revoke-self", "POST", {}, token);
  }

  // --- kv v2 ---

  /** Writes a new version; with `cas: 0` only if the secret does not exist yet. Returns the version. */
  async kvWrite(path: string, data: Record<string, unknown>, opts: { cas?: number } = {}): Promise<number> {
    const p = this.kvApiPath("data", path);
    const body: Record<string, unknown> = { data };
    if (opts.cas !== undefined) body.options = { cas: opts.cas };
    const res = await this.call("kv write", p, "POST", body);
    return Number((res?.data as { version?: number } | undefined)?.version ?? 0);
  }

  /** The latest version, or undefined when the secret does not exist (or its latest version is deleted). */
  async kvRead(path: string): Promise<KvSecret | undefined> {
    const p = this.kvApiPath("data", path);
    const res = await this.call("kv read", p, "GET", undefined, undefined, true);
    if (res === undefined) return undefined;
    const d = res.data as { data?: Record<string, unknown> | null; metadata?: Record<string, unknown> };
    if (!d?.data) return undefined;
    return {
      data: d.data,
      version: Number(d.metadata?.version ?? 0),
      createdTime: String(d.metadata?.created_time ?? ""),
      customMetadata: (d.metadata?.custom_metadata as Record<string, string> | null) ?? {},
    };
  }

  /** Soft-deletes the latest version (recoverable with kv undelete). */
  async kvDelete(path: string): Promise<void> {
    await this.call("kv delete", this.kvApiPath("data", path), "DELETE");
  }

  /** Deletes the metadata and every version of the secret, permanently. */
  async kvDestroyAll(path: string): Promise<void> {
    await this.call("kv destroy", this.kvApiPath("metadata", path), "DELETE");
  }

  async kvWriteMetadata(path: string, update: KvMetadataUpdate): Promise<void> {
    const body: Record<string, unknown> = { custom_metadata: update.customMetadata };
    if (update.deleteVersionAfterSec !== undefined) {
      body.delete_version_after = `${Math.floor(update.deleteVersionAfterSec)}s`;
    }
    if (update.maxVersions !== undefined) body.max_versions = update.maxVersions;
    await this.call("kv metadata write", this.kvApiPath("metadata", path), "POST", body);
  }

  async kvReadMetadata(path: string): Promise<KvMetadata | undefined> {
    const p = this.kvApiPath("metadata", path);
    const res = await this.call("kv metadata read", p, "GET", undefined, undefined, true);
    if (res === undefined) return undefined;
    const d = (res.data ?? {}) as Record<string, unknown>;
    return {
      currentVersion: Number(d.current_version ?? 0),
      customMetadata: (d.custom_metadata as Record<string, string> | null) ?? {},
      deleteVersionAfter: String(d.delete_version_after ?? "0s"),
    };
  }

  // --- ACL policies ---

  async writePolicy(name: string, hcl: string): Promise<void> {
    const path = `sys/policies/acl/${checkVaultName("policy name", name)}`;
    await this.call("policy write", path, "PUT", { policy: hcl });
  }

  /** The policy's HCL, or undefined when there is no such policy. */
  async readPolicy(name: string): Promise<string | undefined> {
    const path = `sys/policies/acl/${checkVaultName("policy name", name)}`;
    const res = await this.call("policy read", path, "GET", undefined, undefined, true);
    if (res === undefined) return undefined;
    return String((res.data as { policy?: string } | undefined)?.policy ?? "");
  }

  /** Deleting a policy that does not exist succeeds. */
  async deletePolicy(name: string): Promise<void> {
    await this.call("policy delete", `sys/policies/acl/${checkVaultName("policy name", name)}`, "DELETE");
  }

  // --- jwt roles ---

  async writeJwtRole(name: string, spec: JwtRoleSpec): Promise<void> {
    const path = `auth/${this.jwtMount}/role/${checkVaultName("jwt role name", name)}`;
    await this.call("jwt role write", path, "POST", toVaultRole(spec));
  }

  async readJwtRole(name: string): Promise<JwtRoleSpec | undefined> {
    const path = `auth/${this.jwtMount}/role/${checkVaultName("jwt role name", name)}`;
    const res = await this.call("jwt role read", path, "GET", undefined, undefined, true);
    if (res === undefined) return undefined;
    return fromVaultRole((res.data ?? {}) as Record<string, unknown>);
  }

  async deleteJwtRole(name: string): Promise<void> {
    const path = `auth/${this.jwtMount}/role/${checkVaultName("jwt role name", name)}`;
    await this.call("jwt role delete", path, "DELETE");
  }

  // --- plumbing ---

  private kvApiPath(kind: "data" | "metadata", path: string): string {
    return `${this.kvMount}/${kind}/${checkKvPath(path)}`;
  }

  private currentToken(): string {
    const t = this.config.token;
    return typeof t === "function" ? t() : (t ?? "");
  }

  /**
   * One request. `token`: undefined = the configured one, null = none (login). `absentOk`: a 404
   * resolves to undefined instead of throwing.
   */
  private async call(
    operation: string,
    path: string,
    method: "GET" | "POST" | "PUT" | "DELETE",
    body?: Body,
    token?: string | null,
    absentOk = false,
  ): Promise<Record<string, unknown> | undefined> {
    const headers: Record<string, string> = {};
    const tok = token === null ? "" : (token ?? this.currentToken());
    if (tok) headers["X-Vault-Token"] = tok;
    // The CA is already in node-vault's shared https agent; passing it again would build a new agent.
    const options: Record<string, unknown> = {
      timeout: this.config.timeoutMs,
      path: `/${path}`,
      method,
      headers,
    };
    if (body !== undefined) options.json = body;
    try {
      const res = (await this.nv.request(options as { path: string; method: string })) as
        Record<string, unknown> | undefined;
      return res ?? {};
    } catch (err) {
      const e = toVaultError(operation, path, err, this.config);
      if (absentOk && e.isNotFound) return undefined;
      throw e;
    }
  }
}

function toLogin(operation: string, path: string, res: Record<string, unknown> | undefined): VaultLogin {
  const auth = res?.auth as Record<string, unknown> | undefined;
  if (!auth || typeof auth.client_token !== "string") {
    throw new VaultError(operation, path, 200, "answer carries no auth.client_token");
  }
  return {
    token: auth.client_token,
    accessor: String(auth.accessor ?? ""),
    policies: Array.isArray(auth.policies) ? auth.policies.map(String) : [],
    leaseDurationSec: Number(auth.lease_duration ?? 0),
    renewable: auth.renewable === true,
  };
}

/** Only the status, Vault's messages and the network error code/message are kept (no request config). */
function toVaultError(operation: string, path: string, err: unknown, config: VaultClientConfig): VaultError {
  const e = err as {
    response?: { statusCode?: number; body?: { errors?: unknown[] } };
    code?: string;
    message?: string;
  };
  if (e?.response?.statusCode !== undefined) {
    const errors = Array.isArray(e.response.body?.errors) ? e.response.body.errors.map(String) : [];
    const detail = errors.length > 0 ? errors.map(cleanVaultMessage).join("; ") : "(no message)";
    return new VaultError(operation, path, e.response.statusCode, detail);
  }
  const timeout = e?.code === "ECONNABORTED" || e?.code === "ETIMEDOUT";
  const detail = timeout
    ? `no answer from ${config.url} within ${config.timeoutMs} ms`
    : `cannot reach ${config.url}: ${oneLine(e?.message ?? String(err))}`;
  return new VaultError(operation, path, undefined, detail);
}

/** "1 error occurred:\n\t* permission denied\n\n" -> "permission denied". */
function cleanVaultMessage(m: string): string {
  return oneLine(m.replace(/^\s*\d+ errors? occurred:\s*/, "").replace(/^\s*\*\s*/gm, ""));
}

function oneLine(s: string): string {
  return s
    .replace(/\s*\n\s*/g, "; ")
    .replace(/\s+/g, " ")
    .replace(/^; |; $/g, "")
    .trim();
}
