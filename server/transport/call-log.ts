/**
 * What the gRPC and HTTP transports share: request ids, the Authorization header, the ServiceError →
 * status tables, and the one log line each request gets.
 */

import { randomUUID } from "node:crypto";
import { status as GrpcStatus } from "@grpc/grpc-js";
import { claimedSpiffeId, type Logger, scrub } from "../../lib/log.js";
import { ServiceError, type ServiceErrorCode } from "../service/types.js";

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** The caller's request id when it is a plain token (letters, digits, . _ : -, ≤128), else a fresh UUID. */
export function requestIdFrom(value: string | undefined): string {
  return value !== undefined && REQUEST_ID.test(value) ? value : randomUUID();
}

export class BadAuthorizationError extends ServiceError {
  constructor() {
    super("unauthenticated", "authorization: expected 'Bearer <JWT-SVID>'; fetch a JWT-SVID from your agent");
  }
}

/** `Bearer <jwt>` → jwt; undefined when absent; BadAuthorizationError when present but malformed. */
export function bearerFrom(value: string | undefined): string | undefined {
  if (value === undefined || value === "") return undefined;
  const m = /^Bearer[ \t]+([A-Za-z0-9\-_=.~+/]+)[ \t]*$/i.exec(value);
  if (!m?.[1]) throw new BadAuthorizationError();
  return m[1];
}

export const GRPC_STATUS: Record<ServiceErrorCode, GrpcStatus> = {
  invalid_argument: GrpcStatus.INVALID_ARGUMENT,
  unauthenticated: GrpcStatus.UNAUTHENTICATED,
  permission_denied: GrpcStatus.PERMISSION_DENIED,
  not_found: GrpcStatus.NOT_FOUND,
  already_exists: GrpcStatus.ALREADY_EXISTS,
  failed_precondition: GrpcStatus.FAILED_PRECONDITION,
  resource_exhausted: GrpcStatus.RESOURCE_EXHAUSTED,
  unavailable: GrpcStatus.UNAVAILABLE,
  internal: GrpcStatus.INTERNAL,
};

export const HTTP_STATUS: Record<ServiceErrorCode, number> = {
  invalid_argument: 400,
  unauthenticated: 401,
  permission_denied: 403,
  not_found: 404,
  already_exists: 409,
  failed_precondition: 412,
  resource_exhausted: 429,
  unavailable: 503,
  internal: 500,
};

/**
 * Any thrown value as a ServiceError the caller may see. A ServiceError passes through (its message is
 * one line without secrets by contract); anything else becomes a generic `internal` error and its
 * details go to the log only, scrubbed of the request's secret values.
 */
export function toServiceError(
  err: unknown,
  log: Logger,
  requestId: string,
  secrets: readonly (string | undefined)[],
): ServiceError {
  if (err instanceof ServiceError) return err;
  const e = err instanceof Error ? err : new Error(String(err));
  log.error(
    {
      requestId,
      errName: e.name,
      errMessage: scrub(e.message, secrets),
      stack: scrub(e.stack ?? "", secrets),
    },
    "unexpected error",
  );
  return new ServiceError(
    "internal",
    `internal error (request id ${requestId}); the server log has the details`,
  );
}

export interface CallRecord {
  requestId: string;
  transport: "grpc" | "http";
  /** gRPC method name, or the HTTP route template (never the raw URL: query strings may carry tokens). */
  method: string;
  /** ServiceError code, or "ok". */
  code: ServiceErrorCode | "ok";
  /** HTTP status (http) or numeric gRPC status (grpc). */
  status: number;
  startedAt: bigint;
  peer?: string;
  bearerJwt?: string;
  /**
   * An identity the service vouched for: the registered agent, or the JWT-SVID subject of a call that
   * required one and succeeded. Otherwise the line carries the bearer's claimed `sub`, callerVerified false.
   */
  caller?: string;
}

/** One info line per request (warn for 5xx / INTERNAL / UNAVAILABLE); never a token or secret. */
export function logCall(log: Logger, r: CallRecord): void {
  const durationMs = Number((process.hrtime.bigint() - r.startedAt) / 1000n) / 1000;
  const caller = r.caller ?? claimedSpiffeId(r.bearerJwt);
  const line = {
    requestId: r.requestId,
    transport: r.transport,
    method: r.method,
    code: r.code,
    status: r.status,
    durationMs,
    ...(caller !== undefined ? { caller, callerVerified: r.caller !== undefined } : {}),
    ...(r.peer !== undefined ? { peer: r.peer } : {}),
  };
  if (r.code === "internal" || r.code === "unavailable") log.warn(line, "request");
  else log.info(line, "request");
}
