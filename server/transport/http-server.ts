/**
 * The JSON/HTTP transport (node:https; node:http only when `insecure` is explicitly set), over the same
 * HpcsService as gRPC. Authentication: `Authorization: Bearer <JWT-SVID>`. Request id: `X-Request-Id`
 * (or a fresh UUID), echoed on every response (header, and `requestId` in error bodies) so a job can log
 * it. Registration and node-token routes are rate-limited per client address (rate-limit.ts: 429 with
 * Retry-After). Refusals the service never saw (rate limit, malformed body or Authorization header) are
 * audited here; the service's own calls are audited by service/audited-service.ts. Bodies are JSON objects of at most 64 KiB (413 beyond,
 * 400 for anything that is not a JSON object). Errors: `{"error": {"code", "message", "requestId"}}`
 * with ServiceError code → 400/401/403/404/409/412/429/503/500. Timestamps are ISO 8601 strings (UTC);
 * `expiresAt` in a request also accepts UNIX seconds.
 *
 *   POST   /v1/clients/register  {clientName, enrollmentSecret, selectors?: [{type, value}]}
 *                                 or {idToken, selectors?} (OIDC login, [hpcs-server] oidc-issuer)
 *                                 → {…, joinToken, nextEnrollmentSecret?, nextEnrollmentExpiresAt?}
 *   POST   /v1/grants            {secret, nodes, users?, groups?, expiresAt?}
 *   DELETE /v1/grants/<secret>   [?deleteSecret=true]
 *   GET    /v1/grants            → {grants: [...]}
 *   POST   /v1/nodes/token       {node, user, operatorToken?, mungeCredential?}
 *   POST   /v1/nodes/end-job     {node, user, joinToken}
 *   GET    /v1/health            200 serving / 503 not_serving, same body
 *
 * Compatibility routes: the original server's (CSCfi/HPCS server/app.py, Quart) request fields and
 * response keys, over the same service. The original answered 200 with `success: false` on failure; here
 * a failure keeps the `{success: false, message}` body but carries the real status code.
 *
 *   POST /api/agents/token?hostname=<node>            → nodeJoinToken
 *     original: query `hostname`, no body; answered {success, message, spiffeID, token}.
 *     here: also `user` (query or JSON body; required by the agent model) and, per node-attestation
 *     mode, `operator_token` / `munge_credential` (JSON body). Answer adds `expires_at`, `aliases`.
 *   POST /api/client/register                         → registerClient
 *     original: no body, client id = sha256(remote address)[0:9]; answered
 *     {success, message, client_id, spiffeID, token}.
 *     here: JSON body {client_name, enrollment_secret, selectors?}. Without them the service sees empty
 *     strings and the peer address and decides: only its insecure-ip-identity mode accepts that.
 *     Answer adds `workload_spiffeID`, `vault_role`, `secrets_path_prefix`, `expires_at`; not the next
 *     enrollment secret (the original's clients would drop it and lose the client's way back in).
 *   POST /api/client/create-workloads                 → grant
 *     original: JSON {secret, jwt, compute_nodes, users, groups}; answered {success, message, clientID,
 *     spiffeID, compute_nodes_added: {<node>: {users, groups}}, secrets_path, user_role}.
 *     here: same fields; the JWT-SVID comes from `jwt` or the Authorization header. `secrets_path` is
 *     the kv path below the mount (hpcs/<id>/<secret>, as a kv-v2 client takes it), `user_role` the
 *     Vault role. Adds `secret_path` (full kv/data/… path) and `expires_at`.
 */

import { readFileSync } from "node:fs";
import * as http from "node:http";
import * as https from "node:https";
import type { AddressInfo } from "node:net";
import { claimedSpiffeId, type Logger } from "../../lib/log.js";
import type { AuditAction, AuditLog } from "../service/audit-log.js";
import {
  type CallContext,
  type GrantSummary,
  type HpcsService,
  type Selector,
  ServiceError,
} from "../service/types.js";
import { bearerFrom, HTTP_STATUS, logCall, requestIdFrom, toServiceError } from "./call-log.js";
import { type LimitGroup, peerKey, RateLimitedError, type RateLimiter } from "./rate-limit.js";

export const MAX_BODY_BYTES = 64 * 1024;

export interface HttpServerOptions {
  host: string;
  /** 0 = an ephemeral port (see HttpServerHandle.port). */
  port: number;
  tls?: { certFile: string; keyFile: string };
  /** Plaintext HTTP; only when explicitly configured (test benches). */
  insecure?: boolean;
  maxBodyBytes?: number;
  /** Audit of refusals the service never saw; none when absent (unit tests). */
  audit?: AuditLog;
  /** Limits for routes with a `limit` group; none when absent. */
  limiter?: RateLimiter;
}

export interface HttpServerHandle {
  port: number;
  close(): Promise<void>;
}

type Json = Record<string, unknown>;

interface RouteInput {
  ctx: CallContext;
  body: Json;
  params: string[];
  query: URLSearchParams;
}

interface RouteResult {
  status?: number;
  body: unknown;
  /** An identity the service vouched for (see CallRecord.caller). */
  caller?: string | undefined;
}

interface Route {
  method: "GET" | "POST" | "DELETE";
  path: RegExp;
  /** The template logged instead of the URL. */
  name: string;
  /** Original-compatible error shape {success: false, message}. */
  compat: boolean;
  /** Whether the route reads a JSON body. */
  body: boolean;
  /** The audit action of the service call behind the route (health has none). */
  action?: AuditAction;
  /** The rate-limit group the route counts against. */
  limit?: LimitGroup;
  run(input: RouteInput, service: HpcsService): Promise<RouteResult>;
}

class HttpError extends ServiceError {
  constructor(
    readonly status: number,
    code: ConstructorParameters<typeof ServiceError>[0],
    message: string,
  ) {
    super(code, message);
  }
}

// ---- field readers: one-line errors naming the field ----

function bad(field: string, fix: string): ServiceError {
  return new ServiceError("invalid_argument", `${field}: ${fix}`);
}

function str(body: Json, field: string): string {
  const v = body[field];
  if (typeof v !== "string" || v === "") throw bad(field, "required, a non-empty string");
  return v;
}

function optStr(body: Json, field: string): string | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") throw bad(field, "must be a string");
  return v;
}

function strList(body: Json, field: string, required: boolean): string[] {
  const v = body[field];
  if (v === undefined || v === null) {
    if (required) throw bad(field, 'required, a list of strings, e.g. ["nid001"]');
    return [];
  }
  if (!Array.isArray(v) || !v.every((x) => typeof x === "string")) {
    throw bad(field, 'must be a list of strings, e.g. ["nid001"]');
  }
  return v as string[];
}

function selectors(body: Json, field: string): Selector[] | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  const ok =
    Array.isArray(v) &&
    v.every(
      (s) =>
        typeof s === "object" &&
        s !== null &&
        typeof (s as Json).type === "string" &&
        typeof (s as Json).value === "string",
    );
  if (!ok) throw bad(field, 'must be a list of {"type", "value"}, e.g. [{"type":"unix","value":"uid:1000"}]');
  return (v as Selector[]).map((s) => ({ type: s.type, value: s.value }));
}

function optDate(body: Json, field: string): Date | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  const d =
    typeof v === "number" && Number.isSafeInteger(v) && v > 0
      ? new Date(v * 1000)
      : typeof v === "string" && /^\d{4}-\d{2}-\d{2}T/.test(v)
        ? new Date(v)
        : undefined;
  if (d === undefined || Number.isNaN(d.getTime())) {
    throw bad(field, "must be an ISO 8601 time (e.g. 2030-01-31T12:00:00Z) or UNIX seconds");
  }
  return d;
}

function iso(d: Date | undefined): string | undefined {
  return d === undefined ? undefined : d.toISOString();
}

function summary(g: GrantSummary): Json {
  return { ...g, expiresAt: iso(g.expiresAt) };
}

/** kv/data/hpcs/<id>/<secret> → hpcs/<id>/<secret> (the path a kv-v2 client takes below its mount). */
function belowMount(secretPath: string): string {
  const m = /^.*?\/data\/(.+)$/.exec(secretPath);
  return m?.[1] ?? secretPath;
}

// ---- routes ----

export const ROUTES: Route[] = [
  {
    method: "POST",
    path: /^\/v1\/clients\/register$/,
    name: "POST /v1/clients/register",
    action: "client.register",
    limit: "register",
    compat: false,
    body: true,
    async run({ ctx, body }, service) {
      const sel = selectors(body, "selectors");
      const idToken = optStr(body, "idToken");
      // With an idToken the service refuses any enrollment field sent along, so they are passed on.
      const r = await service.registerClient(ctx, {
        clientName: idToken ? (optStr(body, "clientName") ?? "") : str(body, "clientName"),
        enrollmentSecret: idToken ? (optStr(body, "enrollmentSecret") ?? "") : str(body, "enrollmentSecret"),
        ...(idToken ? { idToken } : {}),
        ...(sel ? { selectors: sel } : {}),
      });
      return {
        caller: r.agentSpiffeId,
        body: {
          ...r,
          joinTokenExpiresAt: iso(r.joinTokenExpiresAt),
          nextEnrollmentExpiresAt: iso(r.nextEnrollmentExpiresAt),
        },
      };
    },
  },
  {
    method: "POST",
    path: /^\/v1\/grants$/,
    name: "POST /v1/grants",
    action: "grant.create",
    compat: false,
    body: true,
    async run({ ctx, body }, service) {
      const expiresAt = optDate(body, "expiresAt");
      const r = await service.grant(ctx, {
        secret: str(body, "secret"),
        nodes: strList(body, "nodes", true),
        users: strList(body, "users", false),
        groups: strList(body, "groups", false),
        ...(expiresAt ? { expiresAt } : {}),
      });
      return { caller: claimedSpiffeId(ctx.bearerJwt), body: { ...r, expiresAt: iso(r.expiresAt) } };
    },
  },
  {
    method: "DELETE",
    path: /^\/v1\/grants\/([^/]+)$/,
    name: "DELETE /v1/grants/:secret",
    action: "grant.revoke",
    compat: false,
    body: false,
    async run({ ctx, params, query }, service) {
      const flag = query.get("deleteSecret");
      if (flag !== null && flag !== "true" && flag !== "false") {
        throw bad("deleteSecret", "must be true or false");
      }
      const r = await service.revoke(ctx, { secret: params[0] ?? "", deleteSecret: flag === "true" });
      return { caller: claimedSpiffeId(ctx.bearerJwt), body: r };
    },
  },
  {
    method: "GET",
    path: /^\/v1\/grants$/,
    name: "GET /v1/grants",
    action: "grant.list",
    compat: false,
    body: false,
    async run({ ctx }, service) {
      const grants = await service.listGrants(ctx);
      return { caller: claimedSpiffeId(ctx.bearerJwt), body: { grants: grants.map(summary) } };
    },
  },
  {
    method: "POST",
    path: /^\/v1\/nodes\/token$/,
    name: "POST /v1/nodes/token",
    action: "node.token",
    limit: "node-token",
    compat: false,
    body: true,
    async run({ ctx, body }, service) {
      const operatorToken = optStr(body, "operatorToken");
      const mungeCredential = optStr(body, "mungeCredential");
      const r = await service.nodeJoinToken(ctx, {
        node: str(body, "node"),
        user: str(body, "user"),
        ...(operatorToken ? { operatorToken } : {}),
        ...(mungeCredential ? { mungeCredential } : {}),
      });
      return { caller: r.agentSpiffeId, body: { ...r, expiresAt: iso(r.expiresAt) } };
    },
  },
  {
    method: "POST",
    path: /^\/v1\/nodes\/end-job$/,
    name: "POST /v1/nodes/end-job",
    action: "node.end-job",
    limit: "node-token",
    compat: false,
    body: true,
    async run({ ctx, body }, service) {
      await service.endJob(ctx, {
        node: str(body, "node"),
        user: str(body, "user"),
        joinToken: str(body, "joinToken"),
      });
      return { body: {} };
    },
  },
  {
    method: "GET",
    path: /^\/v1\/health$/,
    name: "GET /v1/health",
    compat: false,
    body: false,
    async run({ ctx }, service) {
      const r = await service.health(ctx);
      return { status: r.status === "serving" ? 200 : 503, body: r };
    },
  },
  // ---- the original's routes (see the header comment for the mapping) ----
  {
    method: "POST",
    path: /^\/api\/agents\/token$/,
    name: "POST /api/agents/token",
    action: "node.token",
    limit: "node-token",
    compat: true,
    body: true,
    async run({ ctx, body, query }, service) {
      const node = query.get("hostname") ?? optStr(body, "hostname");
      if (!node) throw bad("hostname", "required; pass ?hostname=<compute node>");
      const user = query.get("user") ?? optStr(body, "user");
      if (!user) throw bad("user", "required; pass ?user=<UNIX user the job runs as>");
      const operatorToken = optStr(body, "operator_token");
      const mungeCredential = optStr(body, "munge_credential");
      const r = await service.nodeJoinToken(ctx, {
        node,
        user,
        ...(operatorToken ? { operatorToken } : {}),
        ...(mungeCredential ? { mungeCredential } : {}),
      });
      const secs = Math.max(0, Math.round((r.expiresAt.getTime() - Date.now()) / 1000));
      return {
        caller: r.agentSpiffeId,
        body: {
          success: true,
          message: `spiffeID created, token expires in ${secs} seconds`,
          spiffeID: r.agentSpiffeId,
          token: r.joinToken,
          expires_at: iso(r.expiresAt),
          aliases: r.aliases,
        },
      };
    },
  },
  {
    method: "POST",
    path: /^\/api\/client\/register$/,
    name: "POST /api/client/register",
    action: "client.register",
    limit: "register",
    compat: true,
    body: true,
    async run({ ctx, body }, service) {
      const sel = selectors(body, "selectors");
      const r = await service.registerClient(ctx, {
        clientName: optStr(body, "client_name") ?? "",
        enrollmentSecret: optStr(body, "enrollment_secret") ?? "",
        ...(sel ? { selectors: sel } : {}),
      });
      const secs = Math.max(0, Math.round((r.joinTokenExpiresAt.getTime() - Date.now()) / 1000));
      return {
        caller: r.agentSpiffeId,
        body: {
          success: true,
          message: `token created, it expires in ${secs} seconds. Workloads have been registered too.`,
          client_id: r.clientId,
          spiffeID: r.agentSpiffeId,
          token: r.joinToken,
          workload_spiffeID: r.workloadSpiffeId,
          vault_role: r.vaultRole,
          secrets_path_prefix: r.secretPathPrefix,
          expires_at: iso(r.joinTokenExpiresAt),
        },
      };
    },
  },
  {
    method: "POST",
    path: /^\/api\/client\/create-workloads$/,
    name: "POST /api/client/create-workloads",
    action: "grant.create",
    compat: true,
    body: true,
    async run({ ctx, body }, service) {
      const jwt = optStr(body, "jwt");
      if (jwt && ctx.bearerJwt && jwt !== ctx.bearerJwt) {
        throw bad("jwt", "differs from the Authorization header; send the JWT-SVID once");
      }
      const callCtx: CallContext = jwt && !ctx.bearerJwt ? { ...ctx, bearerJwt: jwt } : ctx;
      const nodes = strList(body, "compute_nodes", true);
      const users = strList(body, "users", false);
      const groups = strList(body, "groups", false);
      const r = await service.grant(callCtx, { secret: str(body, "secret"), nodes, users, groups });
      const added: Record<string, { users: string[]; groups: string[] }> = {};
      for (const n of nodes) added[n] = { users: [...users], groups: [...groups] };
      return {
        caller: claimedSpiffeId(callCtx.bearerJwt),
        body: {
          success: true,
          message: "successfully registered spiffeID, policy and role",
          clientID: r.clientId,
          spiffeID: r.spiffeId,
          compute_nodes_added: added,
          secrets_path: belowMount(r.secretPath),
          user_role: r.vaultRole,
          secret_path: r.secretPath,
          expires_at: iso(r.expiresAt),
        },
      };
    },
  },
];

// ---- the server ----

export async function startHttpServer(
  service: HpcsService,
  log: Logger,
  opts: HttpServerOptions,
): Promise<HttpServerHandle> {
  const limit = opts.maxBodyBytes ?? MAX_BODY_BYTES;
  const guards: Guards = { audit: opts.audit, limiter: opts.limiter };
  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    void handle(req, res, service, log, limit, guards);
  };
  let server: http.Server;
  if (opts.tls) {
    server = https.createServer(
      { cert: readFileSync(opts.tls.certFile), key: readFileSync(opts.tls.keyFile) },
      handler,
    );
  } else if (opts.insecure === true) {
    server = http.createServer(handler);
  } else {
    throw new ServiceError(
      "failed_precondition",
      "HTTP server: no TLS certificate; set [hpcs-server] tls-cert and tls-key (plaintext only with --insecure)",
    );
  }
  server.headersTimeout = 20_000;
  server.requestTimeout = 60_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
        setTimeout(() => server.closeAllConnections(), 5000).unref();
      }),
  };
}

/** Reads the body up to `limit` bytes; past it, answers 413 itself and returns undefined. */
function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers["content-length"] ?? "0");
    if (declared > limit) {
      reject(new HttpError(413, "invalid_argument", `request body over ${limit} bytes; send a smaller body`));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    req.on("data", (c: Buffer) => {
      if (done) return;
      size += c.length;
      if (size > limit) {
        done = true;
        reject(
          new HttpError(413, "invalid_argument", `request body over ${limit} bytes; send a smaller body`),
        );
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => {
      if (!done) {
        done = true;
        resolve(Buffer.concat(chunks));
      }
    });
    req.on("error", (e) => {
      if (!done) {
        done = true;
        reject(e);
      }
    });
  });
}

function parseJsonObject(buf: Buffer): Json {
  if (buf.length === 0) return {};
  let v: unknown;
  try {
    v = JSON.parse(buf.toString("utf8"));
  } catch {
    // JSON.parse's message quotes the body; it stays out of the answer.
    throw new ServiceError("invalid_argument", "request body is not valid JSON; send one JSON object");
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new ServiceError("invalid_argument", "request body must be a JSON object");
  }
  return v as Json;
}

function headerString(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

function send(res: http.ServerResponse, status: number, requestId: string, body: unknown, extra = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json; charset=utf-8",
    "content-length": Buffer.byteLength(text),
    "cache-control": "no-store",
    "x-request-id": requestId,
    ...extra,
  });
  res.end(text);
}

/** After a 413: discard what the client still sends (up to 1 MiB more), then drop the connection. */
function drain(req: http.IncomingMessage): void {
  let extra = 0;
  req.on("data", (c: Buffer) => {
    extra += c.length;
    if (extra > 1024 * 1024) req.socket.destroy();
  });
  req.resume();
}

interface Guards {
  audit: AuditLog | undefined;
  limiter: RateLimiter | undefined;
}

async function handle(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  service: HpcsService,
  log: Logger,
  limit: number,
  guards: Guards,
): Promise<void> {
  const startedAt = process.hrtime.bigint();
  const requestId = requestIdFrom(headerString(req.headers["x-request-id"]));
  const peer = req.socket.remoteAddress;
  const url = new URL(req.url ?? "/", "http://hpcs.invalid");
  const method = req.method ?? "GET";

  const candidates = ROUTES.filter((r) => r.path.test(url.pathname));
  const route = candidates.find((r) => r.method === method);
  const compat = url.pathname.startsWith("/api/");
  let bearerJwt: string | undefined;
  let body: Json = {};
  const name = route?.name ?? `${method} (unknown route)`;

  try {
    if (!route) {
      if (candidates.length > 0) {
        throw new HttpError(
          405,
          "invalid_argument",
          `method ${method} not allowed here; use ${candidates.map((r) => r.method).join(", ")}`,
        );
      }
      throw new HttpError(404, "not_found", `no route ${url.pathname}; see /v1/health for a liveness check`);
    }
    // Before the body is read: a flood costs as little as possible.
    if (route.limit) guards.limiter?.take(route.limit, peerKey(peer));
    if (route.body) {
      body = parseJsonObject(await readBody(req, limit));
    } else {
      req.resume();
    }
    bearerJwt = bearerFrom(headerString(req.headers.authorization));
    const ctx: CallContext = { requestId };
    if (peer !== undefined) ctx.peerAddress = peer;
    if (bearerJwt !== undefined) ctx.bearerJwt = bearerJwt;
    const params = (route.path.exec(url.pathname) ?? []).slice(1).map((p) => {
      try {
        return decodeURIComponent(p);
      } catch {
        throw new ServiceError("invalid_argument", "path: bad percent-encoding");
      }
    });
    const out = await route.run({ ctx, body, params, query: url.searchParams }, service);
    const status = out.status ?? 200;
    logCall(log, {
      requestId,
      transport: "http",
      method: name,
      code: "ok",
      status,
      startedAt,
      ...(peer !== undefined ? { peer } : {}),
      bearerJwt: bearerJwt ?? (typeof body.jwt === "string" ? body.jwt : undefined),
      ...(out.caller !== undefined ? { caller: out.caller } : {}),
    });
    send(res, status, requestId, out.body);
  } catch (err) {
    const secrets = [
      bearerJwt,
      ...["jwt", "enrollmentSecret", "enrollment_secret", "joinToken", "operatorToken", "operator_token"].map(
        (k) => (typeof body[k] === "string" ? (body[k] as string) : undefined),
      ),
      ...["mungeCredential", "munge_credential"].map((k) =>
        typeof body[k] === "string" ? (body[k] as string) : undefined,
      ),
    ];
    const se = toServiceError(err, log, requestId, secrets);
    const status = se instanceof HttpError ? se.status : HTTP_STATUS[se.code];
    if (guards.audit && route?.action && !guards.audit.wasRecorded(err)) {
      const claimed = claimedSpiffeId(bearerJwt ?? (typeof body.jwt === "string" ? body.jwt : undefined));
      guards.audit.recordFailure(
        { requestId, action: route.action, caller: claimed, callerVerified: false, peer },
        se,
        secrets,
      );
    }
    logCall(log, {
      requestId,
      transport: "http",
      method: name,
      code: se.code,
      status,
      startedAt,
      ...(peer !== undefined ? { peer } : {}),
      bearerJwt,
    });
    const extra: Record<string, string> = {};
    if (status === 405 && candidates.length > 0) extra.allow = candidates.map((r) => r.method).join(", ");
    if (status === 401) extra["www-authenticate"] = "Bearer";
    if (se instanceof RateLimitedError) extra["retry-after"] = String(se.retryAfterSec);
    if (status === 413) {
      extra.connection = "close";
      drain(req);
    }
    const payload = compat
      ? { success: false, message: se.message, request_id: requestId }
      : { error: { code: se.code, message: se.message, requestId } };
    send(res, status, requestId, payload, extra);
  }
}
