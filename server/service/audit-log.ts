/**
 * The audit log: one JSON line per security-relevant action — client registration, node join token,
 * end of job, grant, revoke, list, expiry by the sweeper, enrollment and operator token issued by the
 * CLI — and per refusal, including the transport's own (rate limit, malformed request):
 *
 *   {"type":"audit","time":"2030-01-31T12:00:00.000Z","requestId":"…","action":"grant.create",
 *    "result":"ok"|"refused"|"error","caller":"spiffe://td/c/lab-a/workload","callerVerified":true,
 *    "peer":"10.0.0.7","code":"permission_denied","reason":"…","target":{"secret":"data-1",…}}
 *
 * It is separate from the request log (lib/log.ts, pino, level-filtered): audit lines are written
 * whatever the log level, synchronously (a line is on disk before the answer leaves), and only from
 * the fields below, so a secret can reach it only through a name field, and those are scrubbed of every
 * secret value the request and its answer carried. `reason` is a ServiceError message (one line, no
 * secret by contract; scrubbed anyway) or, for anything unexpected, a generic text: the details stay
 * in the request log under the same request id.
 *
 * Destination (`[hpcs-server] audit-log`): `stdout` (default) interleaves the lines with pino's on the
 * server's stdout, whole lines each, told apart by `"type":"audit"`; a file path is appended to (created
 * 0600). One-shot CLI commands print their own output on stdout, so there `stdout` means stderr.
 */

import { closeSync, openSync, writeSync } from "node:fs";
import { scrub } from "../../lib/log.js";
import { ServiceError, type ServiceErrorCode } from "./types.js";

export type AuditAction =
  | "client.register"
  | "grant.create"
  | "grant.revoke"
  | "grant.list"
  | "grant.expire"
  | "node.token"
  | "node.end-job"
  | "enrollment.issue"
  | "node-token.issue";

export type AuditResult = "ok" | "refused" | "error";

export type AuditValue = string | number | boolean | string[];

export interface AuditEvent {
  requestId: string;
  action: AuditAction;
  result: AuditResult;
  /** A SPIFFE ID, `client:<name>`, `node:<node>/user:<user>`, `operator`, `hpcs-server`. */
  caller?: string | undefined;
  /** True when the server authenticated `caller`; false when it is only what the request claimed. */
  callerVerified?: boolean;
  /** The client's address as the transport saw it (never an identity). */
  peer?: string | undefined;
  /** ServiceError code of a refusal or error. */
  code?: ServiceErrorCode | undefined;
  reason?: string | undefined;
  /** What the action was about: names, counts, times; never a secret value. */
  target?: Record<string, AuditValue | undefined>;
}

export type AuditSink = (line: string) => void;

const MAX_STRING = 256;
const MAX_LIST_ITEMS = 20;
const MAX_REASON = 400;

/** A value cut to size and scrubbed; lists keep their first items and say how many there were. */
function clean(v: AuditValue, secrets: readonly (string | undefined)[]): AuditValue {
  const one = (s: string) => {
    const t = scrub(s, secrets).replace(/[\r\n]+/g, " ");
    return t.length > MAX_STRING ? `${t.slice(0, MAX_STRING)}…` : t;
  };
  if (typeof v === "string") return one(v);
  if (Array.isArray(v)) {
    const items = v.slice(0, MAX_LIST_ITEMS).map(one);
    if (v.length > MAX_LIST_ITEMS) items.push(`…(${v.length} in all)`);
    return items;
  }
  return v;
}

/** The JSON line for one event (without the newline); `secrets` are replaced wherever they appear. */
export function formatAuditLine(
  e: AuditEvent,
  time: Date,
  secrets: readonly (string | undefined)[] = [],
): string {
  const line: Record<string, unknown> = {
    type: "audit",
    time: time.toISOString(),
    requestId: clean(e.requestId, secrets),
    action: e.action,
    result: e.result,
  };
  if (e.caller !== undefined) {
    line.caller = clean(e.caller, secrets);
    line.callerVerified = e.callerVerified === true;
  }
  if (e.peer !== undefined) line.peer = clean(e.peer, secrets);
  if (e.code !== undefined) line.code = e.code;
  if (e.reason !== undefined) {
    const r = scrub(e.reason, secrets).replace(/[\r\n]+/g, " ");
    line.reason = r.length > MAX_REASON ? `${r.slice(0, MAX_REASON)}…` : r;
  }
  if (e.target !== undefined) {
    const t: Record<string, AuditValue> = {};
    for (const [k, v] of Object.entries(e.target)) if (v !== undefined) t[k] = clean(v, secrets);
    line.target = t;
  }
  return JSON.stringify(line);
}

const REFUSALS: ReadonlySet<ServiceErrorCode> = new Set([
  "invalid_argument",
  "unauthenticated",
  "permission_denied",
  "not_found",
  "already_exists",
  "failed_precondition",
  "resource_exhausted",
]);

/** How a thrown value is audited: a ServiceError's code and message, anything else a generic error. */
export function outcomeOf(err: unknown): { result: AuditResult; code: ServiceErrorCode; reason: string } {
  if (err instanceof ServiceError) {
    return { result: REFUSALS.has(err.code) ? "refused" : "error", code: err.code, reason: err.message };
  }
  return {
    result: "error",
    code: "internal",
    reason: "unexpected error; see the server log for this request id",
  };
}

export class AuditLog {
  // Errors already audited by the service layer, so the transport does not audit them twice.
  private readonly recorded = new WeakSet<object>();

  constructor(
    private readonly sink: AuditSink,
    private readonly now: () => Date = () => new Date(),
    private readonly onSinkError: (err: Error) => void = (err) =>
      void process.stderr.write(`hpcs-server: audit log write failed: ${err.message}\n`),
  ) {}

  /** An audit log that drops everything (unit tests, the one-shot CLI apps). */
  static discard(): AuditLog {
    return new AuditLog(() => undefined);
  }

  record(e: AuditEvent, secrets: readonly (string | undefined)[] = []): void {
    const line = formatAuditLine(e, this.now(), secrets);
    try {
      this.sink(`${line}\n`);
    } catch (err) {
      // An audit sink failure must not turn a completed action into a failed answer.
      this.onSinkError(err as Error);
    }
  }

  /** Records a failure of `action` and marks the error as audited. */
  recordFailure(
    e: Omit<AuditEvent, "result" | "code" | "reason">,
    err: unknown,
    secrets: readonly (string | undefined)[] = [],
  ): void {
    const o = outcomeOf(err);
    this.record({ ...e, result: o.result, code: o.code, reason: o.reason }, secrets);
    if (typeof err === "object" && err !== null) this.recorded.add(err);
  }

  /** Whether the service layer already audited this error. */
  wasRecorded(err: unknown): boolean {
    return typeof err === "object" && err !== null && this.recorded.has(err);
  }
}

/**
 * The sink for `[hpcs-server] audit-log`: a file opened once for appending (created 0600) and written
 * synchronously, whole lines; or, for `stdout`, the writer the command gives (`serve`: the synchronous
 * stream pino writes to, so lines never interleave; one-shot commands: stderr).
 */
export function openAuditSink(
  dest: { to: "stdout" } | { to: "file"; path: string },
  stdout: AuditSink,
): { sink: AuditSink; close(): void } {
  if (dest.to === "stdout") return { sink: stdout, close: () => undefined };
  let fd: number;
  try {
    fd = openSync(dest.path, "a", 0o600);
  } catch (err) {
    throw new Error(
      `[hpcs-server] audit-log: cannot open ${dest.path} for appending (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); create its directory or fix the path`,
    );
  }
  let open = true;
  return {
    sink: (line) => void writeSync(fd, line),
    close: () => {
      if (open) closeSync(fd);
      open = false;
    },
  };
}
