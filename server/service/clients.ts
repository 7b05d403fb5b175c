import { validateName } from "../../lib/names.js";
import { SpiffeId } from "../../lib/spiffe-id.js";
import {
  type EntrySpec,
  type Selector,
  type SpireRegistration,
  validateSelector,
} from "../../lib/spire/registration.js";
import type { ServerConfig } from "../../lib/config/server-config.js";
import { clientRole, type JwtRoleSpec } from "../../lib/vault/jwt-role.js";
import { clientPolicy, clientPolicyName } from "../../lib/vault/policies.js";
import type { VaultClient } from "../../lib/vault/vault-client.js";
import { toServiceError } from "./backend-error.js";
import type { Enrollments, Redemption } from "./enrollment.js";
import type { OidcLogin } from "./oidc-login.js";
import {
  type CallContext,
  type RegisterClientRequest,
  type RegisterClientResponse,
  ServiceError,
} from "./types.js";

/**
 * Client registration (design flow 2): the client proves itself with an operator's one-time enrollment
 * secret — or, with [hpcs-server] oidc-issuer set, an id_token of that provider (oidc-login.ts: the client
 * id is its verified claim; no redeem, no next secret) — and receives a short-lived join token for
 * spiffe://<td>/c/<id>; its processes get spiffe://<td>/c/<id>/workload, which logs in to Vault with
 * role hpcs-client-<id> (create-only on kv/data/hpcs/<id>/*).
 *
 * Order: redeem → workload entry → policy → role → join token → next enrollment secret. The join token
 * comes last of the steps that matter because it cannot be taken back; every earlier step is undone if a
 * later one fails (and the enrollment is released), so a failure leaves no entry, policy or role that
 * nobody asked for and the old secret redeemable. Steps that found something already there (a --force
 * re-enrollment) restore what was there instead of deleting it.
 *
 * The next enrollment secret (Enrollments.rotate) is issued after all of that succeeded, so a researcher
 * runs data-prep again without the operator. Its failure does not fail the registration (the agent's
 * join token is already minted): the answer then carries no next secret and the server logs a warning.
 */

export type ClientVault = Pick<
  VaultClient,
  "readPolicy" | "writePolicy" | "deletePolicy" | "readJwtRole" | "writeJwtRole" | "deleteJwtRole"
>;
export type ClientSpire = Pick<
  SpireRegistration,
  "createJoinToken" | "batchCreateEntries" | "batchDeleteEntries"
>;

/** The part of pino the service uses (pino is injected by the server's main). */
export interface WarnLogger {
  warn(obj: Record<string, unknown>, msg: string): void;
}

export interface ClientRegistrarOptions {
  config: ServerConfig;
  spire: ClientSpire;
  vault: ClientVault;
  enrollments: Pick<Enrollments, "redeem" | "release" | "rotate">;
  /** OIDC client login; undefined = off ([hpcs-server] oidc-issuer unset). */
  oidc?: Pick<OidcLogin, "clientIdFrom">;
  logger: WarnLogger;
  /**
   * Selectors for …/c/<id>/workload when the request names none. ServerConfig has no key for this yet;
   * without a default a request must carry its own.
   */
  defaultSelectors?: Selector[];
  /** Join token TTL; default 600 s: the client starts its agent right after registering. */
  joinTokenTtlSec?: number;
  /** Lifetime of the next enrollment secret; default ROTATION_TTL_SEC (30 days). */
  enrollmentRotationTtlSec?: number;
}

const MAX_SELECTORS = 16;

export class ClientRegistrar {
  private readonly tokenTtl: number;

  constructor(private readonly opts: ClientRegistrarOptions) {
    this.tokenTtl = opts.joinTokenTtlSec ?? 600;
  }

  async registerClient(ctx: CallContext, req: RegisterClientRequest): Promise<RegisterClientResponse> {
    const td = this.opts.config.spireServer.trustDomain;
    const oidc = typeof req.idToken === "string" && req.idToken !== "";
    const insecureIp = !oidc && this.opts.config.hpcsServer.insecureIpIdentity && !req.enrollmentSecret;
    // Everything is validated before anything is created or consumed.
    const clientId = oidc
      ? await this.clientIdFromOidc(req)
      : insecureIp
        ? this.clientIdFromPeer(ctx)
        : checkName(req.clientName);
    const selectors = this.selectors(req.selectors);
    const agentId = SpiffeId.of(td, "c", clientId);
    const workloadId = agentId.child("workload");
    const role = clientRole({ trustDomain: td, clientId, audiences: [this.opts.config.vault.audience] });
    const policyName = clientPolicyName(clientId);
    const policyHcl = clientPolicy(clientId, { kvMount: this.opts.config.vault.kvMount });

    if (insecureIp) {
      this.opts.logger.warn(
        { requestId: ctx.requestId, peerAddress: ctx.peerAddress, clientId, insecureIpIdentity: true },
        "client registered by IP address (insecure-ip-identity=true): anyone who can use this address can act as this client",
      );
    } else if (!oidc && !req.enrollmentSecret) {
      throw new ServiceError(
        "unauthenticated",
        `no enrollment secret; ask the operator to run 'hpcs-server enroll ${clientId}' and pass the secret it prints`,
      );
    }

    const undo: (() => Promise<unknown>)[] = [];
    let redemption: Redemption | undefined;
    try {
      if (!insecureIp && !oidc) {
        redemption = await this.opts.enrollments.redeem(clientId, req.enrollmentSecret);
        const r = redemption;
        undo.push(() => this.opts.enrollments.release(r));
      }

      const entry: EntrySpec = { spiffeId: workloadId, parentId: agentId, selectors };
      const [res] = await this.opts.spire.batchCreateEntries([entry]);
      if (!res || res.status === "error") {
        throw new ServiceError(
          "internal",
          `SPIRE refused the workload entry ${workloadId}: ${res?.status === "error" ? res.message : "no result"}`,
        );
      }
      if (res.status === "created") {
        const id = res.id;
        undo.push(() => this.opts.spire.batchDeleteEntries([id]));
      }

      const oldPolicy = await this.opts.vault.readPolicy(policyName);
      await this.opts.vault.writePolicy(policyName, policyHcl);
      undo.push(() =>
        oldPolicy === undefined
          ? this.opts.vault.deletePolicy(policyName)
          : this.opts.vault.writePolicy(policyName, oldPolicy),
      );

      const oldRole: JwtRoleSpec | undefined = await this.opts.vault.readJwtRole(role.name);
      await this.opts.vault.writeJwtRole(role.name, role.spec);
      undo.push(() =>
        oldRole === undefined
          ? this.opts.vault.deleteJwtRole(role.name)
          : this.opts.vault.writeJwtRole(role.name, oldRole),
      );

      const token = await this.opts.spire.createJoinToken({ ttlSeconds: this.tokenTtl, agentId });
      const answer: RegisterClientResponse = {
        clientId,
        agentSpiffeId: agentId.toString(),
        workloadSpiffeId: workloadId.toString(),
        joinToken: token.token,
        joinTokenExpiresAt: token.expiresAt,
        vaultRole: role.name,
        secretPathPrefix: `hpcs/${clientId}/`,
        trustDomain: td,
      };
      if (redemption) {
        const next = await this.rotate(ctx, redemption);
        if (next) {
          answer.nextEnrollmentSecret = next.secret;
          answer.nextEnrollmentExpiresAt = next.expiresAt;
        }
      }
      return answer;
    } catch (err) {
      // Newest first; each undo is best effort so one failing undo does not stop the others.
      for (const step of undo.reverse()) await step().catch(() => undefined);
      throw toServiceError(err, `register client ${clientId}`);
    }
  }

  /** The next enrollment secret, or undefined (with a warning logged) when none could be issued. */
  private async rotate(
    ctx: CallContext,
    r: Redemption,
  ): Promise<{ secret: string; expiresAt: Date } | undefined> {
    try {
      const next = await this.opts.enrollments.rotate(r, this.opts.enrollmentRotationTtlSec);
      if (!next) {
        this.opts.logger.warn(
          { requestId: ctx.requestId, clientId: r.clientName },
          "enrollment changed during registration (re-enrolled?); no next enrollment secret issued",
        );
      }
      return next;
    } catch (err) {
      this.opts.logger.warn(
        { requestId: ctx.requestId, clientId: r.clientName, error: (err as Error).message },
        "next enrollment secret not issued; the client's next registration needs the operator",
      );
      return undefined;
    }
  }

  /** The verified id_token's client id; the request must not also carry enrollment fields. */
  private async clientIdFromOidc(req: RegisterClientRequest): Promise<string> {
    if (req.clientName || req.enrollmentSecret) {
      throw new ServiceError(
        "invalid_argument",
        "idToken: send either idToken or clientName + enrollmentSecret, not both",
      );
    }
    if (!this.opts.oidc) {
      throw new ServiceError(
        "failed_precondition",
        "OIDC login is off on this server ([hpcs-server] oidc-issuer is unset); register with an enrollment secret from the operator",
      );
    }
    return this.opts.oidc.clientIdFrom(req.idToken ?? "");
  }

  /**
   * The original's identity-by-IP: only behind insecure-ip-identity=true. The address is reduced to
   * [a-z0-9-] ("::ffff:10.0.0.7" → "ip-10-0-0-7", "fd00::1" → "ip-fd00--1") so it is a valid client name.
   */
  private clientIdFromPeer(ctx: CallContext): string {
    const raw = (ctx.peerAddress ?? "").trim().toLowerCase();
    const addr = raw
      .replace(/^\[|\](:\d+)?$/g, "")
      .replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/, "")
      .replace(/%.*$/, "");
    const id = `ip-${addr.replace(/[^a-z0-9]/g, "-")}`.replace(/-+$/, "");
    if (!addr || !/^[0-9a-f:.]+$/.test(addr)) {
      throw new ServiceError(
        "failed_precondition",
        "insecure IP identity: the transport gave no usable peer address",
      );
    }
    return checkName(id);
  }

  private selectors(given: Selector[] | undefined): Selector[] {
    const list = given && given.length > 0 ? given : this.opts.defaultSelectors;
    if (!list || list.length === 0) {
      throw new ServiceError(
        "invalid_argument",
        "selectors: give at least one workload selector, e.g. unix:uid:1000",
      );
    }
    if (list.length > MAX_SELECTORS) {
      throw new ServiceError("invalid_argument", `selectors: at most ${MAX_SELECTORS}`);
    }
    try {
      return list.map((s) => ({ ...validateSelector({ type: s.type, value: s.value }) }));
    } catch (err) {
      throw toServiceError(err, "selectors");
    }
  }
}

function checkName(clientName: string): string {
  try {
    return validateName("client", clientName);
  } catch (err) {
    throw toServiceError(err, "clientName");
  }
}
