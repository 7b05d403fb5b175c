/**
 * The client's identity for one run (DESIGN flow 2), established in this order:
 *
 *   1. enrollment secret — from `[hpcs-server] enrollment-secret-file` (or the caller); the client name
 *      from the caller, `[hpcs-server] client-name` or the file's JSON form;
 *      or OIDC login      — an id_token from HPCS_OIDC_TOKEN, `[hpcs-server] oidc-token-file` or the
 *                          device-code login at `oidc-issuer` (oidc-token-source.ts); when one of these
 *                          is set the enrollment secret is not used (and not spent)
 *   2. register          — POST /v1/clients/register: a join token for spiffe://<td>/c/<id>, and the next
 *                          one-time enrollment secret (none with OIDC: the next login is OIDC again)
 *   3. save next secret  — written over the file at once (atomically, 0600), before anything else can
 *                          fail: the secret just used is spent
 *   4. start spire-agent — ClientAgent with the join token
 *   5. fetch JWT-SVID    — spiffe://<td>/c/<id>/workload through the agent's Workload API, retried with
 *                          backoff until the workload entry has reached the agent (a few seconds)
 *   6. vault login       — jwt role from registration, audience `[vault] audience`
 *
 * Everything that can be checked without side effects (names, trust bundle, Vault URL, the secret
 * file) is checked before step 2, so a misconfiguration does not spend the secret. A failure at any
 * step undoes what was started (the agent is stopped, its directory deleted) and throws one
 * ClientIdentityError line naming the step. close() revokes the Vault token (best effort), closes the
 * Workload API connection and stops the agent.
 *
 * Secrets — the enrollment secrets, the join token, the Vault token, JWT-SVIDs — are never logged,
 * put in argv or error messages.
 */

import { accessSync, constants, readFileSync } from "node:fs";
import type { ClientConfig } from "../../lib/config/client-config.js";
import { InvalidNameError, validateName } from "../../lib/names.js";
import { SpiffeId } from "../../lib/spiffe-id.js";
import { JwtSource } from "../../lib/spiffe/jwt-source.js";
import { WorkloadClient } from "../../lib/spiffe/workload-client.js";
import type { Selector } from "../../lib/spire/registration.js";
import { secretPath } from "../../lib/vault/policies.js";
import { VaultClient, type VaultClientConfig } from "../../lib/vault/vault-client.js";
import { HpcsServerClient } from "../hpcs-server-client.js";
import { ClientAgent } from "./client-agent.js";
import { oidcIdToken } from "./oidc-token-source.js";
import {
  type EnrollmentSecretFile,
  readEnrollmentSecretFile,
  writeNextEnrollmentSecret,
} from "./enrollment-secret-file.js";

export type IdentityStep =
  | "configuration"
  | "enrollment secret"
  | "oidc login"
  | "register"
  | "save next enrollment secret"
  | "start spire-agent"
  | "fetch JWT-SVID"
  | "vault login";

export class ClientIdentityError extends Error {
  constructor(
    readonly step: IdentityStep,
    detail: string,
  ) {
    super(`client identity: ${step} failed: ${detail.replace(/\s+/g, " ").trim()}`);
    this.name = "ClientIdentityError";
  }
}

export interface EstablishIdentityOptions {
  /** Default: `[hpcs-server] client-name`, else the clientName in the secret file's JSON form. */
  clientName?: string;
  /** Default: read from `[hpcs-server] enrollment-secret-file`. */
  enrollmentSecret?: string;
  /** Workload selectors of …/c/<id>/workload; default this process's uid (unix:uid:<uid>). */
  selectors?: Selector[];
  signal?: AbortSignal;
  /** Bound on the wait for a healthy agent, and again on the wait for the workload's SVID; default 30 s. */
  timeoutMs?: number;
  /** Default: built from `[hpcs-server] url` and `ca-file`. */
  server?: HpcsServerClient;
  /** Parent of the agent's private directory; default the OS temp dir. */
  tmpRoot?: string;
  /** Told about what works but needs attention (e.g. no next enrollment secret); never given a secret. */
  onWarning?: (message: string) => void;
  /**
   * OIDC login's messages for the user (the device code to enter, a token file readable by others);
   * default: a line on stderr, where the CLI's user sees it.
   */
  onPrompt?: (message: string) => void;
  /** Where HPCS_OIDC_TOKEN is looked up; default process.env. */
  env?: Record<string, string | undefined>;
}

const DEFAULT_TIMEOUT_MS = 30_000;
const VAULT_TIMEOUT_MS = 30_000;
const REVOKE_TIMEOUT_MS = 5_000;

/** What establishIdentity assembles; the parts after `vault` stay private to ClientIdentity. */
export interface ClientIdentityParts {
  clientId: string;
  workloadSpiffeId: string;
  vaultRole: string;
  secretPathPrefix: string;
  trustDomain: string;
  vaultUrl: string;
  vault: VaultClient;
  nextEnrollmentExpiresAt: Date | undefined;
  serverAudience: string;
  workload: WorkloadClient;
  agent: ClientAgent;
  /** Revokes the Vault token, bounded in time (close() must not hang on an unreachable Vault). */
  revokeToken: () => Promise<void>;
}

/** The registered client, its running agent and its Vault login, until close(). Built by establishIdentity. */
export class ClientIdentity {
  readonly clientId: string;
  /** spiffe://<td>/c/<id>/workload */
  readonly workloadSpiffeId: string;
  /** The Vault jwt role the workload logged in with (hpcs-client-<id>). */
  readonly vaultRole: string;
  /** kv path prefix the client may create secrets under, e.g. "hpcs/<id>/". */
  readonly secretPathPrefix: string;
  readonly trustDomain: string;
  readonly vaultUrl: string;
  /** Logged in as the workload: create-only on kv/data/hpcs/<id>/*. */
  readonly vault: VaultClient;
  /** When the saved next enrollment secret expires; undefined when none was saved. */
  readonly nextEnrollmentExpiresAt: Date | undefined;
  private readonly serverAudience: string;
  private readonly workload: WorkloadClient;
  private readonly agent: ClientAgent;
  private readonly revokeToken: () => Promise<void>;
  private readonly jwts: JwtSource;
  private closing: Promise<void> | undefined;

  constructor(p: ClientIdentityParts) {
    this.clientId = p.clientId;
    this.workloadSpiffeId = p.workloadSpiffeId;
    this.vaultRole = p.vaultRole;
    this.secretPathPrefix = p.secretPathPrefix;
    this.trustDomain = p.trustDomain;
    this.vaultUrl = p.vaultUrl;
    this.vault = p.vault;
    this.nextEnrollmentExpiresAt = p.nextEnrollmentExpiresAt;
    this.serverAudience = p.serverAudience;
    this.workload = p.workload;
    this.agent = p.agent;
    this.revokeToken = p.revokeToken;
    this.jwts = new JwtSource(p.workload);
  }

  /** A JWT-SVID of the workload for the hpcs server's audience, with at least half its lifetime left. */
  async serverJwt(): Promise<string> {
    if (this.closing) throw new Error("client identity is closed; establish it again");
    const svid = await this.jwts.fetch({ audience: [this.serverAudience], spiffeId: this.workloadSpiffeId });
    return svid.token;
  }

  /** The agent's Workload API (e.g. for the workload's X509-SVID); closed by close(). */
  get workloadApi(): WorkloadClient {
    return this.workload;
  }

  /** Creates kv `hpcs/<id>/<secretName>` (check-and-set 0: never overwrites; the policy is create-only). */
  async writeSecret(secretName: string, data: Record<string, string>): Promise<void> {
    if (this.closing) throw new Error("client identity is closed; establish it again");
    await this.vault.kvWrite(secretPath(this.clientId, secretName), data, { cas: 0 });
  }

  /** Revokes the Vault token (best effort), closes the Workload API connection, stops the agent. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.revokeToken().catch(() => undefined);
      this.workload.close();
      await this.agent.stop();
    })();
    return this.closing;
  }
}

export async function establishIdentity(
  cfg: ClientConfig,
  opts: EstablishIdentityOptions = {},
): Promise<ClientIdentity> {
  const signal = opts.signal;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;

  // 1. Everything checkable without side effects.
  const pre = await step("configuration", async () => {
    const trustBundle = cfg.spireServer.trustBundle;
    if (trustBundle === undefined) {
      throw new Error(
        `no SPIRE trust bundle in ${cfg.source}: set [spire-server] trust-bundle to the PEM file of the SPIRE trust bundle (spire-server bundle show); the client's spire-agent needs it`,
      );
    }
    try {
      accessSync(trustBundle, constants.R_OK);
    } catch (err) {
      throw new Error(
        `cannot read [spire-server] trust-bundle ${trustBundle} (${(err as NodeJS.ErrnoException).code ?? "error"}); point it at the PEM file of the SPIRE trust bundle`,
      );
    }
    const vaultConfig: VaultClientConfig = {
      url: cfg.vault.url,
      ...(cfg.vault.caFile !== undefined ? { caPem: readCa(cfg.vault.caFile) } : {}),
      timeoutMs: VAULT_TIMEOUT_MS,
    };
    const anonymous = new VaultClient(vaultConfig);
    const server = opts.server ?? new HpcsServerClient(cfg.hpcsServer);
    return { trustBundle, vaultConfig, anonymous, server };
  });
  // An explicit enrollment secret from the caller wins over a configured OIDC login.
  const idToken =
    opts.enrollmentSecret === undefined
      ? await step("oidc login", () =>
          oidcIdToken(cfg, {
            env: opts.env ?? process.env,
            onNotice: opts.onPrompt ?? ((m) => process.stderr.write(`${m}\n`)),
            ...(signal ? { signal } : {}),
          }),
        )
      : undefined;
  const enrollment =
    idToken === undefined ? await step("enrollment secret", () => enrollmentOf(cfg, opts)) : undefined;
  const selectors = opts.selectors ?? defaultSelectors();

  // 2. Register: spends the enrollment secret.
  const reg = await step("register", () =>
    pre.server.register(
      enrollment
        ? { clientName: enrollment.clientName, enrollmentSecret: enrollment.secret, selectors }
        : { clientName: "", enrollmentSecret: "", idToken: idToken ?? "", selectors },
      signal ? { signal } : {},
    ),
  );

  // 3. The next secret replaces the spent one before anything else can fail.
  let nextExpiresAt: Date | undefined;
  if (enrollment === undefined) {
    // OIDC login: nothing was spent, nothing to keep.
  } else if (reg.nextEnrollmentSecret === undefined) {
    opts.onWarning?.(
      `the hpcs server issued no next enrollment secret; the next run of client ${reg.clientId} needs a new one from the operator`,
    );
  } else if (enrollment.file === undefined) {
    opts.onWarning?.(
      `no [hpcs-server] enrollment-secret-file to keep the next enrollment secret in; the next run of client ${reg.clientId} needs a new one from the operator`,
    );
  } else {
    const next = {
      clientName: reg.clientId,
      secret: reg.nextEnrollmentSecret,
      ...(reg.nextEnrollmentExpiresAt ? { expiresAt: reg.nextEnrollmentExpiresAt } : {}),
    };
    const file = enrollment.file;
    await step("save next enrollment secret", () => writeNextEnrollmentSecret(file.path, file.format, next));
    nextExpiresAt = reg.nextEnrollmentExpiresAt;
  }

  // 4–6. From here on, a failure stops the agent again.
  const agent = await step("start spire-agent", () =>
    ClientAgent.start({
      serverAddress: cfg.spireServer.address,
      serverPort: cfg.spireServer.port,
      trustDomain: cfg.spireServer.trustDomain,
      trustBundlePath: pre.trustBundle,
      joinToken: reg.joinToken,
      agentBin: cfg.spireServer.agentBin,
      healthTimeoutMs: timeoutMs,
      ...(opts.tmpRoot !== undefined ? { tmpRoot: opts.tmpRoot } : {}),
      ...(signal ? { signal } : {}),
    }),
  );
  const workload = new WorkloadClient(agent.socketPath);
  try {
    const workloadId = SpiffeId.parse(reg.workloadSpiffeId);
    const vaultJwt = await step("fetch JWT-SVID", () =>
      firstSvid(workload, cfg.vault.audience, workloadId, timeoutMs, signal),
    );
    const login = await step("vault login", () => pre.anonymous.loginJwt(reg.vaultRole, vaultJwt));
    const revoker = new VaultClient({ ...pre.vaultConfig, timeoutMs: REVOKE_TIMEOUT_MS, token: login.token });
    return new ClientIdentity({
      clientId: reg.clientId,
      workloadSpiffeId: reg.workloadSpiffeId,
      vaultRole: reg.vaultRole,
      secretPathPrefix: reg.secretPathPrefix,
      trustDomain: reg.trustDomain,
      vaultUrl: cfg.vault.url,
      vault: pre.anonymous.withToken(login.token),
      nextEnrollmentExpiresAt: nextExpiresAt,
      serverAudience: cfg.hpcsServer.audience,
      workload,
      agent,
      revokeToken: () => revoker.revokeSelf(),
    });
  } catch (err) {
    workload.close();
    await agent.stop();
    throw err;
  }
}

/** Runs one step; any failure becomes a ClientIdentityError naming it (its message is already one line). */
async function step<T>(name: IdentityStep, fn: () => Promise<T> | T): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof ClientIdentityError) throw err;
    throw new ClientIdentityError(name, err instanceof Error ? err.message : String(err));
  }
}

function readCa(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new Error(
      `cannot read [vault] ca-file ${path}: ${(err as NodeJS.ErrnoException).code ?? "error"}; point it at the PEM CA of Vault's certificate`,
    );
  }
}

function defaultSelectors(): Selector[] {
  const uid = process.getuid?.();
  if (uid === undefined) {
    throw new ClientIdentityError(
      "configuration",
      "no UNIX uid on this platform; pass the workload selectors",
    );
  }
  return [{ type: "unix", value: `uid:${uid}` }];
}

interface Enrollment {
  clientName: string;
  secret: string;
  /** Where the next secret goes; undefined when there is no secret file. */
  file?: { path: string; format: "plain" | "json" };
}

async function enrollmentOf(cfg: ClientConfig, opts: EstablishIdentityOptions): Promise<Enrollment> {
  const path = cfg.hpcsServer.enrollmentSecretFile;
  let read: EnrollmentSecretFile | undefined;
  if (opts.enrollmentSecret === undefined) {
    if (path === undefined) {
      throw new Error(
        `no enrollment secret: set [hpcs-server] enrollment-secret-file in ${cfg.source} to the file holding the secret from 'hpcs-server enroll'`,
      );
    }
    read = await readEnrollmentSecretFile(path);
  }
  const configured = cfg.hpcsServer.clientName;
  if (configured !== undefined && read?.clientName !== undefined && configured !== read.clientName) {
    throw new Error(
      `[hpcs-server] client-name is ${configured} but enrollment-secret-file ${path} is for ${read.clientName}; make them agree`,
    );
  }
  const clientName = opts.clientName ?? configured ?? read?.clientName;
  if (clientName === undefined) {
    throw new Error(
      `no client name: set [hpcs-server] client-name in ${cfg.source} to the name the operator enrolled (hpcs-server enroll <name>)`,
    );
  }
  try {
    validateName("client", clientName);
  } catch (err) {
    if (err instanceof InvalidNameError) throw new Error(`client name: ${err.message}`);
    throw err;
  }
  const secret = opts.enrollmentSecret ?? read?.secret ?? "";
  const out: Enrollment = { clientName, secret };
  // A secret from the file goes back in its form; one passed in starts a self-describing JSON file.
  if (path !== undefined) out.file = { path, format: read?.format ?? "json" };
  return out;
}

/**
 * The workload's first JWT-SVID. The server creates the workload entry just before the join token, but
 * the agent learns of it only at its next sync (every few seconds): "no identity issued" until then, so
 * this retries with backoff (200 ms doubling to 2 s) up to `timeoutMs`.
 */
async function firstSvid(
  workload: WorkloadClient,
  audience: string,
  spiffeId: SpiffeId,
  timeoutMs: number,
  signal: AbortSignal | undefined,
): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let delay = 200;
  for (;;) {
    signal?.throwIfAborted();
    let last: string;
    try {
      const [svid] = await workload.fetchJwtSvid({ audience: [audience], spiffeId });
      if (svid) return svid.token;
      last = "the agent returned no SVID";
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    if (Date.now() + delay > deadline) {
      throw new Error(`no JWT-SVID for ${spiffeId} within ${timeoutMs} ms: ${last}`);
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 2000);
  }
}
