/**
 * The HpcsService with an audit line for every call but health (see audit-log.ts): wraps the real
 * service in the composition root, so both transports and the original's routes are audited alike.
 *
 * Caller: on success the identity the service vouched for (the registered agent, the attested job
 * agent, the verified JWT-SVID subject or mTLS peer ID); on failure what the request claimed (the JWT's unverified
 * `sub`, `client:<name>`, `node:<node>/user:<user>`), with callerVerified false. Every secret value
 * of the request and of the answer (enrollment secrets, join tokens, operator tokens, MUNGE
 * credentials, the bearer JWT) is scrubbed from the line, though none is ever put into it.
 */

import { claimedSpiffeId } from "../../lib/log.js";
import type { AuditAction, AuditLog, AuditValue } from "./audit-log.js";
import type { CallContext, HpcsService } from "./types.js";

type Target = Record<string, AuditValue | undefined>;

interface Claim {
  caller?: string | undefined;
  target: Target;
  secrets: (string | undefined)[];
}

interface Vouched {
  caller?: string | undefined;
  target?: Target;
  secrets?: (string | undefined)[];
}

async function audited<T>(
  audit: AuditLog,
  ctx: CallContext,
  action: AuditAction,
  claim: Claim,
  call: () => Promise<T>,
  vouched: (r: T) => Vouched,
): Promise<T> {
  const secrets = [ctx.bearerJwt, ...claim.secrets];
  const base = { requestId: ctx.requestId, action, peer: ctx.peerAddress };
  let r: T;
  try {
    r = await call();
  } catch (err) {
    audit.recordFailure(
      { ...base, caller: claim.caller, callerVerified: false, target: claim.target },
      err,
      secrets,
    );
    throw err;
  }
  const v = vouched(r);
  audit.record(
    {
      ...base,
      result: "ok",
      caller: v.caller ?? claim.caller,
      callerVerified: true,
      target: { ...claim.target, ...v.target },
    },
    [...secrets, ...(v.secrets ?? [])],
  );
  return r;
}

/** A verified peer SPIFFE ID (mTLS) is the caller; otherwise the bearer JWT's unverified `sub`. */
const claimedCaller = (ctx: CallContext) => ctx.peerSpiffeId ?? claimedSpiffeId(ctx.bearerJwt);
const iso = (d: Date | undefined) => d?.toISOString();
const str = (v: unknown) => (typeof v === "string" ? v : undefined);

export function auditedService(inner: HpcsService, audit: AuditLog): HpcsService {
  return {
    registerClient: (ctx, req) =>
      audited(
        audit,
        ctx,
        "client.register",
        {
          caller: str(req?.clientName) ? `client:${req.clientName}` : undefined,
          target: { clientName: str(req?.clientName), method: str(req?.idToken) ? "oidc" : "enrollment" },
          secrets: [str(req?.enrollmentSecret), str(req?.idToken)],
        },
        () => inner.registerClient(ctx, req),
        (r) => ({
          caller: r.agentSpiffeId,
          target: { clientId: r.clientId, rotated: r.nextEnrollmentSecret !== undefined },
          secrets: [r.joinToken, r.nextEnrollmentSecret],
        }),
      ),
    grant: (ctx, req) =>
      audited(
        audit,
        ctx,
        "grant.create",
        {
          caller: claimedCaller(ctx),
          target: {
            secret: str(req?.secret),
            nodes: Array.isArray(req?.nodes) ? req.nodes.map(String) : undefined,
            users: Array.isArray(req?.users) ? req.users.map(String) : undefined,
            groups: Array.isArray(req?.groups) ? req.groups.map(String) : undefined,
            expiresAt:
              req?.expiresAt instanceof Date && !Number.isNaN(req.expiresAt.getTime())
                ? iso(req.expiresAt)
                : undefined,
          },
          secrets: [],
        },
        () => inner.grant(ctx, req),
        (r) => ({
          target: {
            spiffeId: r.spiffeId,
            vaultRole: r.vaultRole,
            entriesCreated: r.entriesCreated,
            entriesExisting: r.entriesExisting,
          },
        }),
      ),
    revoke: (ctx, req) =>
      audited(
        audit,
        ctx,
        "grant.revoke",
        {
          caller: claimedCaller(ctx),
          target: { secret: str(req?.secret), deleteSecret: req?.deleteSecret === true },
          secrets: [],
        },
        () => inner.revoke(ctx, req),
        (r) => ({
          target: {
            entriesDeleted: r.entriesDeleted,
            roleDeleted: r.roleDeleted,
            policyDeleted: r.policyDeleted,
            secretDeleted: r.secretDeleted,
          },
        }),
      ),
    listGrants: (ctx) =>
      audited(
        audit,
        ctx,
        "grant.list",
        { caller: claimedCaller(ctx), target: {}, secrets: [] },
        () => inner.listGrants(ctx),
        (r) => ({ target: { grants: r.length } }),
      ),
    nodeJoinToken: (ctx, req) =>
      audited(
        audit,
        ctx,
        "node.token",
        {
          caller: `node:${str(req?.node) ?? "?"}/user:${str(req?.user) ?? "?"}`,
          target: { node: str(req?.node), user: str(req?.user) },
          secrets: [str(req?.operatorToken), str(req?.mungeCredential)],
        },
        () => inner.nodeJoinToken(ctx, req),
        (r) => ({
          caller: r.agentSpiffeId,
          target: { aliases: r.aliases, expiresAt: iso(r.expiresAt) },
          secrets: [r.joinToken],
        }),
      ),
    endJob: (ctx, req) =>
      audited(
        audit,
        ctx,
        "node.end-job",
        {
          caller: `node:${str(req?.node) ?? "?"}/user:${str(req?.user) ?? "?"}`,
          target: { node: str(req?.node), user: str(req?.user) },
          secrets: [str(req?.joinToken)],
        },
        () => inner.endJob(ctx, req),
        () => ({}),
      ),
    health: (ctx) => inner.health(ctx),
  };
}
