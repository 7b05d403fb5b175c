/**
 * The gRPC transport: `hpcs.v1.Hpcs` (proto/hpcs/v1/hpcs.proto) over @grpc/grpc-js, each method a thin
 * mapping onto the injected HpcsService.
 *
 * - TLS from PEM cert/key (ServerCredentials.createSsl, no client certificates: callers authenticate with
 *   a JWT-SVID, an enrollment secret or a node credential); plaintext only when `insecure` is set.
 *   serveGrpc takes any credentials: grpc-mtls.ts serves the same handlers over SPIFFE mTLS, where
 *   Guards.peerIdentity names the caller from its X509-SVID and bearer tokens are not read.
 * - `authorization: Bearer <jwt>` metadata → CallContext.bearerJwt; `x-request-id` → requestId (or a
 *   fresh UUID), echoed in response headers and trailers.
 * - ServiceError codes → gRPC status codes; anything else → INTERNAL with a generic message.
 * - RegisterClient, NodeJoinToken and EndJob are rate-limited per client address (rate-limit.ts:
 *   RESOURCE_EXHAUSTED with a `retry-after` trailer); refusals the service never saw are audited here.
 */

import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { claimedSpiffeId, type Logger } from "../../lib/log.js";
import type { AuditAction, AuditLog } from "../service/audit-log.js";
import {
  type CallContext,
  type HpcsService,
  ServiceError,
  type GrantSummary,
  type Selector,
} from "../service/types.js";
import { bearerFrom, GRPC_STATUS, logCall, requestIdFrom, toServiceError } from "./call-log.js";
import { type LimitGroup, peerKey, RateLimitedError, type RateLimiter } from "./rate-limit.js";

// This file runs from dist/server/transport/ (or another out dir at the same depth): three levels up
// is the repository root, which holds proto/.
export const HPCS_PROTO_FILE = fileURLToPath(new URL("../../../proto/hpcs/v1/hpcs.proto", import.meta.url));

export const PROTO_LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** The `hpcs.v1.Hpcs` service definition (also used by clients and tests to build a stub). */
export function loadHpcsDefinition(): grpc.GrpcObject {
  const def = protoLoader.loadSync(HPCS_PROTO_FILE, PROTO_LOADER_OPTIONS);
  return grpc.loadPackageDefinition(def);
}

export function hpcsServiceDefinition(): grpc.ServiceDefinition {
  const pkg = loadHpcsDefinition() as unknown as {
    hpcs: { v1: { Hpcs: grpc.ServiceClientConstructor } };
  };
  return pkg.hpcs.v1.Hpcs.service;
}

export interface GrpcServerOptions {
  host: string;
  /** 0 = an ephemeral port (see GrpcServerHandle.port). */
  port: number;
  /** PEM files; required unless insecure. */
  tls?: { certFile: string; keyFile: string };
  /** Plaintext; only when explicitly configured (test benches). */
  insecure?: boolean;
  /** Audit of refusals the service never saw; none when absent (unit tests). */
  audit?: AuditLog;
  /** Limits for RegisterClient, NodeJoinToken and EndJob; none when absent. */
  limiter?: RateLimiter;
}

/** Per method: its audit action and rate-limit group. */
const METHOD_GUARDS: Record<string, { action?: AuditAction; limit?: LimitGroup }> = {
  RegisterClient: { action: "client.register", limit: "register" },
  Grant: { action: "grant.create" },
  Revoke: { action: "grant.revoke" },
  ListGrants: { action: "grant.list" },
  NodeJoinToken: { action: "node.token", limit: "node-token" },
  EndJob: { action: "node.end-job", limit: "node-token" },
  Health: {},
};

export interface Guards {
  audit?: AuditLog | undefined;
  limiter?: RateLimiter | undefined;
  /**
   * mTLS only: the caller's SPIFFE ID from its verified peer certificate (throws when there is none
   * acceptable). When set, it is the caller's identity (CallContext.peerSpiffeId) and the
   * `authorization` metadata is ignored.
   */
  peerIdentity?: ((call: grpc.ServerUnaryCall<unknown, unknown>) => string) | undefined;
}

export interface GrpcServerHandle {
  port: number;
  close(): Promise<void>;
}

// Raw messages as proto-loader hands them over (keepCase, longs as numbers, defaults filled in).
interface RawSelector {
  type: string;
  value: string;
}
interface RawRegisterClientRequest {
  client_name: string;
  enrollment_secret: string;
  selectors: RawSelector[];
  id_token: string;
}
interface RawGrantRequest {
  secret: string;
  nodes: string[];
  users: string[];
  groups: string[];
  expires_at_unix: number;
}
interface RawRevokeRequest {
  secret: string;
  delete_secret: boolean;
}
interface RawNodeJoinTokenRequest {
  node: string;
  user: string;
  operator_token: string;
  munge_credential: string;
}
interface RawEndJobRequest {
  node: string;
  user: string;
  join_token: string;
}

/** Result of one handler: the response message, an identity the service vouched for, secrets to scrub. */
interface Outcome {
  res: object;
  caller?: string;
}

type Handler = (ctx: CallContext, req: unknown) => Promise<Outcome>;

export function credentialsFor(opts: { tls?: { certFile: string; keyFile: string }; insecure?: boolean }) {
  if (opts.tls) {
    return grpc.ServerCredentials.createSsl(
      null,
      [{ private_key: readFileSync(opts.tls.keyFile), cert_chain: readFileSync(opts.tls.certFile) }],
      false,
    );
  }
  if (opts.insecure === true) return grpc.ServerCredentials.createInsecure();
  throw new ServiceError(
    "failed_precondition",
    "gRPC server: no TLS certificate; set [hpcs-server] tls-cert and tls-key (plaintext only with --insecure)",
  );
}

export async function startGrpcServer(
  service: HpcsService,
  log: Logger,
  opts: GrpcServerOptions,
): Promise<GrpcServerHandle> {
  const credentials = credentialsFor(opts);
  return serveGrpc(service, log, {
    host: opts.host,
    port: opts.port,
    credentials,
    guards: { audit: opts.audit, limiter: opts.limiter },
  });
}

/** Binds the hpcs.v1 service on host:port with these credentials and guards. */
export async function serveGrpc(
  service: HpcsService,
  log: Logger,
  opts: { host: string; port: number; credentials: grpc.ServerCredentials; guards: Guards },
): Promise<GrpcServerHandle> {
  const creds = opts.credentials;
  const server = new grpc.Server({ "grpc.max_receive_message_length": 64 * 1024 });
  server.addService(hpcsServiceDefinition(), grpcHandlers(service, log, opts.guards));
  const host = opts.host.includes(":") ? `[${opts.host}]` : opts.host;
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${host}:${opts.port}`, creds, (err, p) => (err ? reject(err) : resolve(p)));
  });
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(() => server.forceShutdown(), 5000);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      }),
  };
}

function seconds(d: Date | undefined): number {
  return d === undefined ? 0 : Math.floor(d.getTime() / 1000);
}

function optDate(field: string, unix: number): Date | undefined {
  if (unix === 0) return undefined;
  if (!Number.isSafeInteger(unix) || unix < 0) {
    throw new ServiceError("invalid_argument", `${field}: must be UNIX seconds (0 for none)`);
  }
  return new Date(unix * 1000);
}

function summary(g: GrantSummary): object {
  return {
    secret: g.secret,
    spiffe_id: g.spiffeId,
    vault_role: g.vaultRole,
    nodes: g.nodes,
    users: g.users,
    groups: g.groups,
    expires_at_unix: seconds(g.expiresAt),
  };
}

/** The method table: proto method name → handler. */
export function grpcHandlers(
  service: HpcsService,
  log: Logger,
  guards: Guards = {},
): grpc.UntypedServiceImplementation {
  const methods: Record<string, Handler> = {
    RegisterClient: async (ctx, raw) => {
      const req = raw as RawRegisterClientRequest;
      const selectors: Selector[] = req.selectors.map((s) => ({ type: s.type, value: s.value }));
      const r = await service.registerClient(ctx, {
        clientName: req.client_name,
        enrollmentSecret: req.enrollment_secret,
        ...(req.id_token ? { idToken: req.id_token } : {}),
        ...(selectors.length > 0 ? { selectors } : {}),
      });
      return {
        caller: r.agentSpiffeId,
        res: {
          client_id: r.clientId,
          agent_spiffe_id: r.agentSpiffeId,
          workload_spiffe_id: r.workloadSpiffeId,
          join_token: r.joinToken,
          join_token_expires_at_unix: seconds(r.joinTokenExpiresAt),
          vault_role: r.vaultRole,
          secret_path_prefix: r.secretPathPrefix,
          trust_domain: r.trustDomain,
          next_enrollment_secret: r.nextEnrollmentSecret ?? "",
          next_enrollment_expires_at_unix: seconds(r.nextEnrollmentExpiresAt),
        },
      };
    },
    Grant: async (ctx, raw) => {
      const req = raw as RawGrantRequest;
      const expiresAt = optDate("expires_at_unix", req.expires_at_unix);
      const r = await service.grant(ctx, {
        secret: req.secret,
        nodes: req.nodes,
        users: req.users,
        groups: req.groups,
        ...(expiresAt ? { expiresAt } : {}),
      });
      return {
        caller: claimedCaller(ctx),
        res: {
          client_id: r.clientId,
          secret: r.secret,
          spiffe_id: r.spiffeId,
          vault_role: r.vaultRole,
          secret_path: r.secretPath,
          entries_created: r.entriesCreated,
          entries_existing: r.entriesExisting,
          expires_at_unix: seconds(r.expiresAt),
        },
      };
    },
    Revoke: async (ctx, raw) => {
      const req = raw as RawRevokeRequest;
      const r = await service.revoke(ctx, { secret: req.secret, deleteSecret: req.delete_secret });
      return {
        caller: claimedCaller(ctx),
        res: {
          entries_deleted: r.entriesDeleted,
          role_deleted: r.roleDeleted,
          policy_deleted: r.policyDeleted,
          secret_deleted: r.secretDeleted,
        },
      };
    },
    ListGrants: async (ctx) => {
      const grants = await service.listGrants(ctx);
      return { caller: claimedCaller(ctx), res: { grants: grants.map(summary) } };
    },
    NodeJoinToken: async (ctx, raw) => {
      const req = raw as RawNodeJoinTokenRequest;
      const r = await service.nodeJoinToken(ctx, {
        node: req.node,
        user: req.user,
        ...(req.operator_token ? { operatorToken: req.operator_token } : {}),
        ...(req.munge_credential ? { mungeCredential: req.munge_credential } : {}),
      });
      return {
        caller: r.agentSpiffeId,
        res: {
          join_token: r.joinToken,
          expires_at_unix: seconds(r.expiresAt),
          agent_spiffe_id: r.agentSpiffeId,
          aliases: r.aliases,
        },
      };
    },
    EndJob: async (ctx, raw) => {
      const req = raw as RawEndJobRequest;
      await service.endJob(ctx, { node: req.node, user: req.user, joinToken: req.join_token });
      return { res: {} };
    },
    Health: async (ctx) => {
      const r = await service.health(ctx);
      return { res: { status: r.status, spire: r.spire, vault: r.vault, version: r.version } };
    },
  };

  const impl: grpc.UntypedServiceImplementation = {};
  for (const [name, handler] of Object.entries(methods)) {
    impl[name] = (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      void runUnary(name, handler, call, callback, log, guards);
    };
  }
  return impl;
}

/** The identity a call that needs a client claims: its verified peer SPIFFE ID (mTLS), else its JWT's `sub`. */
function claimedCaller(ctx: CallContext): string | undefined {
  return ctx.peerSpiffeId ?? claimedSpiffeId(ctx.bearerJwt);
}

function firstString(md: grpc.Metadata, key: string): string | undefined {
  const v = md.get(key)[0];
  return typeof v === "string" ? v : undefined;
}

/** Secret values a request carries, to scrub from any error text bound for the log. */
function requestSecrets(req: unknown, bearer: string | undefined): (string | undefined)[] {
  const r = (req ?? {}) as Record<string, unknown>;
  const pick = (k: string) => (typeof r[k] === "string" ? (r[k] as string) : undefined);
  return [
    bearer,
    pick("enrollment_secret"),
    pick("join_token"),
    pick("operator_token"),
    pick("munge_credential"),
  ];
}

async function runUnary(
  method: string,
  handler: Handler,
  call: grpc.ServerUnaryCall<unknown, unknown>,
  callback: grpc.sendUnaryData<unknown>,
  log: Logger,
  guards: Guards,
): Promise<void> {
  const startedAt = process.hrtime.bigint();
  const requestId = requestIdFrom(firstString(call.metadata, "x-request-id"));
  const peer = call.getPeer();
  const out = new grpc.Metadata();
  out.set("x-request-id", requestId);
  call.sendMetadata(out);

  let bearerJwt: string | undefined;
  let peerId: string | undefined;
  const { action, limit } = METHOD_GUARDS[method] ?? {};
  try {
    if (limit) guards.limiter?.take(limit, peerKey(peer));
    const ctx: CallContext = { requestId, peerAddress: peer };
    if (guards.peerIdentity) {
      peerId = guards.peerIdentity(call);
      ctx.peerSpiffeId = peerId;
    } else {
      bearerJwt = bearerFrom(firstString(call.metadata, "authorization"));
      if (bearerJwt !== undefined) ctx.bearerJwt = bearerJwt;
    }
    const { res, caller } = await handler(ctx, call.request);
    logCall(log, {
      requestId,
      transport: "grpc",
      method,
      code: "ok",
      status: grpc.status.OK,
      startedAt,
      peer,
      bearerJwt,
      ...(caller !== undefined ? { caller } : {}),
    });
    callback(null, res);
  } catch (err) {
    const secrets = requestSecrets(call.request, bearerJwt);
    const se = toServiceError(err, log, requestId, secrets);
    const code = GRPC_STATUS[se.code];
    if (guards.audit && action && !guards.audit.wasRecorded(err)) {
      guards.audit.recordFailure(
        { requestId, action, caller: peerId ?? claimedSpiffeId(bearerJwt), callerVerified: false, peer },
        se,
        secrets,
      );
    }
    logCall(log, {
      requestId,
      transport: "grpc",
      method,
      code: se.code,
      status: code,
      startedAt,
      peer,
      bearerJwt,
    });
    const trailers = new grpc.Metadata();
    trailers.set("x-request-id", requestId);
    if (se instanceof RateLimitedError) trailers.set("retry-after", String(se.retryAfterSec));
    callback({ code, details: se.message, metadata: trailers });
  }
}
