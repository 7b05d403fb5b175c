/**
 * Server logs: pino, one JSON object per line. Both transports log one line per request
 * ({requestId, transport, method, route, code/status, durationMs, caller, peer}) and never a request
 * body; the redact list below is the second line of defence for anything secret-looking that a
 * future log call might pass by mistake.
 */

import { decodeJwt } from "jose";
import { pino, type DestinationStream, type Level, type Logger } from "pino";

export type { Logger } from "pino";

export const LOG_LEVELS: readonly Level[] = ["fatal", "error", "warn", "info", "debug", "trace"];

/** Keys whose values are secrets wherever they appear (top level, one or two levels down). */
const SECRET_KEYS = [
  "authorization",
  "Authorization",
  "token",
  "joinToken",
  "join_token",
  "enrollmentSecret",
  "enrollment_secret",
  "operatorToken",
  "operator_token",
  "mungeCredential",
  "munge_credential",
  "jwt",
  "bearerJwt",
  "secretValue",
  "secret_value",
  "password",
  "cookie",
];

export const REDACT_PATHS: string[] = SECRET_KEYS.flatMap((k) => [k, `*.${k}`, `*.*.${k}`]);

export const REDACTED = "[redacted]";

export interface LoggerOptions {
  /** pino level; default info. */
  level?: Level | "silent";
  /** Where lines go; default stdout. Tests pass a stream to capture them. */
  destination?: DestinationStream;
  /** `name` field on every line. */
  name?: string;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const level = opts.level ?? "info";
  if (level !== "silent" && !LOG_LEVELS.includes(level)) {
    throw new Error(`log level ${JSON.stringify(level)} is unknown; use one of ${LOG_LEVELS.join(", ")}`);
  }
  const options = {
    level,
    name: opts.name ?? "hpcs-server",
    base: { pid: process.pid },
    redact: { paths: REDACT_PATHS, censor: REDACTED },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return opts.destination ? pino(options, opts.destination) : pino(options);
}

/**
 * The `sub` claim of a JWT as presented, WITHOUT verifying it (the service verifies). Used only to
 * say who a log line is about; undefined when the token does not decode or sub is not a SPIFFE ID.
 */
export function claimedSpiffeId(jwt: string | undefined): string | undefined {
  if (!jwt) return undefined;
  try {
    const sub = decodeJwt(jwt).sub;
    return typeof sub === "string" && /^spiffe:\/\/[A-Za-z0-9._\-/]{1,2000}$/.test(sub) ? sub : undefined;
  } catch {
    return undefined;
  }
}

/** Replace every occurrence of the given secret values in a text (error messages bound for the log). */
export function scrub(text: string, secrets: readonly (string | undefined)[]): string {
  let out = text;
  for (const s of secrets) {
    if (s && s.length >= 4) out = out.split(s).join(REDACTED);
  }
  return out;
}
