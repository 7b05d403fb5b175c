/**
 * The client side of the hpcs server's JSON/HTTP API (server/transport/http-server.ts), over node:https:
 *
 *   register()  POST   /v1/clients/register   enrollment secret → join token (+ the next secret),
 *                                             or an OIDC id_token → join token
 *   grant()     POST   /v1/grants             bearer JWT-SVID
 *   revoke()    DELETE /v1/grants/<secret>    bearer JWT-SVID
 *   health()    GET    /v1/health
 *
 * Every failure is one HpcsServerError line naming the problem and the key to fix: the server's own
 * `{"error": {code, message, requestId}}` answers keep their code and HTTP status; an unreachable
 * server, a TLS failure, a timeout or an abort get codes of their own. The enrollment secret and the
 * bearer token are never part of a message (any echo of them is cut out), and nothing here logs.
 *
 * Plain http:// is refused: the enrollment secret and the JWT-SVIDs would cross the network readable.
 */

import { readFileSync } from "node:fs";
import type { IncomingMessage } from "node:http";
import { request } from "node:https";
import { InvalidNameError, type NameKind, validateName } from "../lib/names.js";
import type {
  GrantRequest,
  GrantResponse,
  HealthResponse,
  RegisterClientRequest,
  RegisterClientResponse,
  RevokeResponse,
  ServiceErrorCode,
} from "../server/service/types.js";

export type { GrantRequest, GrantResponse, HealthResponse, RegisterClientResponse, RevokeResponse };
export type RegisterRequest = RegisterClientRequest;

export interface HpcsServerClientOptions {
  /** `[hpcs-server] url`, e.g. https://hpcs-server:10080 (a path prefix is kept). */
  url: string;
  /** `[hpcs-server] ca-file`: PEM CA of the server's certificate; the system CAs when absent. */
  caFile?: string;
  /** The CA itself (wins over reading caFile, which is then only named in messages). */
  caPem?: string | Buffer;
  /** Deadline of each call unless the call gives its own; default 30 s. */
  timeoutMs?: number;
}

export interface CallOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
}

export type HpcsServerErrorCode =
  | ServiceErrorCode
  | "config" // the client's own settings are unusable (url, ca-file)
  | "unreachable"
  | "tls"
  | "timeout"
  | "aborted"
  | "bad_response"; // not the hpcs server's JSON, or a field missing

/** One line; `status` is the HTTP status when the server answered, `requestId` its request id. */
export class HpcsServerError extends Error {
  constructor(
    readonly code: HpcsServerErrorCode,
    message: string,
    readonly status?: number,
    readonly requestId?: string,
  ) {
    super(message);
    this.name = "HpcsServerError";
  }
}

export const DEFAULT_TIMEOUT_MS = 30_000;
const MAX_RESPONSE_BYTES = 1024 * 1024;

// Node's codes for "no TCP connection": the fix is the URL (or the server's availability).
const UNREACHABLE = new Set([
  "ECONNREFUSED",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
]);

type Json = Record<string, unknown>;

interface Answer {
  status: number;
  body: Json;
}

export class HpcsServerClient {
  /** The base URL without a trailing '/', as configured. */
  readonly url: string;
  private readonly ca: string | Buffer | undefined;
  private readonly caFile: string | undefined;
  private readonly timeoutMs: number;

  constructor(opts: HpcsServerClientOptions) {
    let u: URL;
    try {
      u = new URL(opts.url);
    } catch {
      throw new HpcsServerError(
        "config",
        `[hpcs-server] url ${JSON.stringify(opts.url)} is not a URL; set it to e.g. https://hpcs-server:10080`,
      );
    }
    if (u.protocol !== "https:") {
      throw new HpcsServerError(
        "config",
        `[hpcs-server] url ${opts.url} is not https: the enrollment secret and JWT-SVIDs would cross the network readable; set it to the server's https:// address`,
      );
    }
    this.url = opts.url.replace(/\/+$/, "");
    this.caFile = opts.caFile;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (opts.caPem !== undefined) {
      this.ca = opts.caPem;
    } else if (opts.caFile !== undefined) {
      try {
        this.ca = readFileSync(opts.caFile);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? "unreadable";
        throw new HpcsServerError(
          "config",
          `cannot read [hpcs-server] ca-file ${opts.caFile}: ${code}; point it at the PEM CA of the hpcs server's certificate`,
        );
      }
    }
  }

  /**
   * Exchanges the one-time enrollment secret for a join token and, normally, the next secret; or, with
   * `idToken` (and empty clientName / enrollmentSecret), an OIDC id_token for a join token.
   */
  async register(req: RegisterRequest, opts: CallOptions = {}): Promise<RegisterClientResponse> {
    let body: Json;
    let secret: string;
    if (typeof req.idToken === "string" && req.idToken !== "") {
      if (req.clientName || req.enrollmentSecret) {
        throw new HpcsServerError(
          "invalid_argument",
          "register: an OIDC id_token and an enrollment secret were both given; use one login method",
        );
      }
      body = { idToken: req.idToken };
      secret = req.idToken;
    } else {
      const clientName = checkName("client", "clientName", req.clientName);
      if (typeof req.enrollmentSecret !== "string" || req.enrollmentSecret === "") {
        throw new HpcsServerError(
          "invalid_argument",
          "register: no enrollment secret; set [hpcs-server] enrollment-secret-file to the file holding it",
        );
      }
      body = { clientName, enrollmentSecret: req.enrollmentSecret };
      secret = req.enrollmentSecret;
    }
    if (req.selectors && req.selectors.length > 0) {
      body.selectors = req.selectors.map((s) => ({ type: s.type, value: s.value }));
    }
    const a = await this.call("register", "POST", "/v1/clients/register", {
      body,
      secrets: [secret],
      opts,
    });
    const f = fields("register", this.url, a.body);
    const out: RegisterClientResponse = {
      clientId: f.str("clientId"),
      agentSpiffeId: f.str("agentSpiffeId"),
      workloadSpiffeId: f.str("workloadSpiffeId"),
      joinToken: f.str("joinToken"),
      joinTokenExpiresAt: f.date("joinTokenExpiresAt"),
      vaultRole: f.str("vaultRole"),
      secretPathPrefix: f.str("secretPathPrefix"),
      trustDomain: f.str("trustDomain"),
    };
    const next = f.optStr("nextEnrollmentSecret");
    if (next !== undefined) {
      out.nextEnrollmentSecret = next;
      out.nextEnrollmentExpiresAt = f.date("nextEnrollmentExpiresAt");
    }
    return out;
  }

  /** Grants the caller's secret to nodes × (users ∪ groups); `bearerJwt` is the caller's JWT-SVID. */
  async grant(bearerJwt: string, req: GrantRequest, opts: CallOptions = {}): Promise<GrantResponse> {
    const secret = checkName("secret", "secret", req.secret);
    const body: Json = { secret, nodes: req.nodes, users: req.users, groups: req.groups };
    if (req.expiresAt !== undefined) body.expiresAt = req.expiresAt.toISOString();
    const a = await this.call("grant", "POST", "/v1/grants", { body, bearer: bearerJwt, opts });
    const f = fields("grant", this.url, a.body);
    const out: GrantResponse = {
      clientId: f.str("clientId"),
      secret: f.str("secret"),
      spiffeId: f.str("spiffeId"),
      vaultRole: f.str("vaultRole"),
      secretPath: f.str("secretPath"),
      entriesCreated: f.num("entriesCreated"),
      entriesExisting: f.num("entriesExisting"),
    };
    const expiresAt = f.optDate("expiresAt");
    if (expiresAt !== undefined) out.expiresAt = expiresAt;
    return out;
  }

  /** Removes the grant's entries, role and policy; with deleteSecret also the secret itself. */
  async revoke(
    bearerJwt: string,
    secret: string,
    flags: { deleteSecret: boolean },
    opts: CallOptions = {},
  ): Promise<RevokeResponse> {
    const name = checkName("secret", "secret", secret);
    const path = `/v1/grants/${encodeURIComponent(name)}?deleteSecret=${flags.deleteSecret ? "true" : "false"}`;
    const a = await this.call("revoke", "DELETE", path, { bearer: bearerJwt, opts });
    const f = fields("revoke", this.url, a.body);
    return {
      entriesDeleted: f.num("entriesDeleted"),
      roleDeleted: f.bool("roleDeleted"),
      policyDeleted: f.bool("policyDeleted"),
      secretDeleted: f.bool("secretDeleted"),
    };
  }

  /** The server's health; a 503 (SPIRE or Vault unreachable) is an answer too, with status not_serving. */
  async health(opts: CallOptions = {}): Promise<HealthResponse> {
    const a = await this.call("health", "GET", "/v1/health", { opts, alsoOk: [503] });
    const f = fields("health", this.url, a.body);
    const status = f.str("status");
    if (status !== "serving" && status !== "not_serving") {
      throw new HpcsServerError(
        "bad_response",
        `health: the hpcs server at ${this.url} answered status ${JSON.stringify(status)}; check [hpcs-server] url points at an hpcs server`,
        a.status,
      );
    }
    return { status, spire: f.bool("spire"), vault: f.bool("vault"), version: f.str("version") };
  }

  private call(
    op: string,
    method: "GET" | "POST" | "DELETE",
    path: string,
    c: { body?: Json; bearer?: string; secrets?: string[]; opts: CallOptions; alsoOk?: number[] },
  ): Promise<Answer> {
    const secrets = [...(c.secrets ?? [])];
    const headers: Record<string, string> = { accept: "application/json" };
    if (c.bearer !== undefined) {
      // Checked so that nothing but a JWT ever lands in a header (and so a mix-up fails here, clearly).
      if (!/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(c.bearer)) {
        throw new HpcsServerError(
          "invalid_argument",
          `${op}: the bearer token is not a JWT; pass the JWT-SVID fetched for the hpcs server's audience`,
        );
      }
      headers.authorization = `Bearer ${c.bearer}`;
      secrets.push(c.bearer);
    }
    const payload = c.body === undefined ? undefined : JSON.stringify(c.body);
    if (payload !== undefined) {
      headers["content-type"] = "application/json";
      headers["content-length"] = String(Buffer.byteLength(payload));
    }
    const timeoutMs = c.opts.timeoutMs ?? this.timeoutMs;
    const signal = c.opts.signal;
    const target = new URL(`${this.url}${path}`);
    const scrub = (s: string) => redact(s, secrets);

    return new Promise<Answer>((resolve, reject) => {
      let settled = false;
      const finish = (err: HpcsServerError | undefined, answer?: Answer) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        if (err) {
          req.destroy();
          reject(err);
        } else if (answer) {
          resolve(answer);
        }
      };
      const onAbort = () =>
        finish(new HpcsServerError("aborted", `${op}: request to the hpcs server at ${this.url} aborted`));
      if (signal?.aborted) {
        reject(new HpcsServerError("aborted", `${op}: request to the hpcs server at ${this.url} aborted`));
        return;
      }

      const req = request(
        target,
        {
          method,
          headers,
          // One connection per call: a few calls per run, and no idle socket outlives the client.
          agent: false,
          ...(this.ca !== undefined ? { ca: this.ca } : {}),
        },
        (res) => {
          readBody(res).then(
            (text) => {
              const status = res.statusCode ?? 0;
              const body = parseObject(text);
              const ok = (status >= 200 && status < 300) || (c.alsoOk ?? []).includes(status);
              if (ok && body) {
                finish(undefined, { status, body });
                return;
              }
              finish(this.errorFromAnswer(op, status, body, scrub));
            },
            () =>
              finish(
                new HpcsServerError(
                  "bad_response",
                  `${op}: the hpcs server at ${this.url} sent an answer over ${MAX_RESPONSE_BYTES} bytes or broke it off; check [hpcs-server] url points at the hpcs server`,
                  res.statusCode,
                ),
              ),
          );
        },
      );
      const timer = setTimeout(
        () =>
          finish(
            new HpcsServerError(
              "timeout",
              `${op}: no answer from the hpcs server at ${this.url} within ${timeoutMs} ms; check [hpcs-server] url and the server's health (GET /v1/health)`,
            ),
          ),
        timeoutMs,
      );
      signal?.addEventListener("abort", onAbort, { once: true });
      req.on("error", (err: NodeJS.ErrnoException) => finish(this.networkError(op, err, scrub)));
      req.end(payload);
    });
  }

  private errorFromAnswer(
    op: string,
    status: number,
    body: Json | undefined,
    scrub: (s: string) => string,
  ): HpcsServerError {
    const e = body?.error as Json | undefined;
    if (e && typeof e.code === "string" && typeof e.message === "string") {
      const requestId = typeof e.requestId === "string" ? e.requestId : undefined;
      const code = e.code as ServiceErrorCode;
      return new HpcsServerError(
        code,
        `${op}: ${oneLine(scrub(e.message))} [hpcs server: HTTP ${status} ${code}${requestId ? `, request ${requestId}` : ""}]`,
        status,
        requestId,
      );
    }
    return new HpcsServerError(
      "bad_response",
      `${op}: the hpcs server at ${this.url} answered HTTP ${status} without its JSON ${body ? "error" : "body"}; check [hpcs-server] url points at the hpcs server`,
      status,
    );
  }

  private networkError(
    op: string,
    err: NodeJS.ErrnoException,
    scrub: (s: string) => string,
  ): HpcsServerError {
    const code = err.code ?? "";
    if (UNREACHABLE.has(code)) {
      return new HpcsServerError(
        "unreachable",
        `cannot reach the hpcs server at ${this.url}: ${code}; check [hpcs-server] url`,
      );
    }
    if (code === "ERR_TLS_CERT_ALTNAME_INVALID") {
      return new HpcsServerError(
        "tls",
        `TLS to the hpcs server at ${this.url} failed: its certificate does not name ${new URL(this.url).hostname}; check [hpcs-server] url uses the name in the server's certificate`,
      );
    }
    if (/CERT|SELF_SIGNED|UNABLE_TO_|^ERR_TLS|^ERR_SSL|^EPROTO$/.test(code)) {
      const ca = this.caFile ?? "unset, so the system CAs are used";
      return new HpcsServerError(
        "tls",
        `TLS to the hpcs server at ${this.url} failed: ${code}; check [hpcs-server] ca-file (${ca}) is the CA of the server's certificate`,
      );
    }
    return new HpcsServerError(
      "unreachable",
      `${op}: request to the hpcs server at ${this.url} failed: ${oneLine(scrub(code || err.message))}; check [hpcs-server] url`,
    );
  }
}

function checkName(kind: NameKind, field: string, value: string): string {
  try {
    return validateName(kind, value);
  } catch (err) {
    if (err instanceof InvalidNameError)
      throw new HpcsServerError("invalid_argument", `${field}: ${err.message}`);
    throw err;
  }
}

function readBody(res: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    res.on("data", (c: Buffer) => {
      size += c.length;
      if (size > MAX_RESPONSE_BYTES) {
        res.destroy();
        reject(new Error("too large"));
        return;
      }
      chunks.push(c);
    });
    res.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    res.on("error", reject);
    res.on("close", () => {
      if (!res.complete) reject(new Error("broken off"));
    });
  });
}

function parseObject(text: string): Json | undefined {
  try {
    const v: unknown = JSON.parse(text);
    return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Json) : undefined;
  } catch {
    return undefined;
  }
}

function redact(s: string, secrets: string[]): string {
  let out = s;
  for (const x of secrets) if (x.length >= 8) out = out.split(x).join("<redacted>");
  return out;
}

function oneLine(s: string): string {
  return s.replace(/\s+/g, " ").trim();
}

/** Typed reads of an answer's fields; a missing or mistyped one is a bad_response naming it. */
function fields(op: string, url: string, body: Json) {
  const bad = (key: string, want: string) =>
    new HpcsServerError(
      "bad_response",
      `${op}: the hpcs server at ${url} answered without a valid ${key} (${want}); check [hpcs-server] url points at an hpcs server of a matching version`,
    );
  const date = (key: string, v: unknown): Date => {
    const d = typeof v === "string" ? new Date(v) : undefined;
    if (!d || Number.isNaN(d.getTime())) throw bad(key, "an ISO 8601 time");
    return d;
  };
  return {
    str(key: string): string {
      const v = body[key];
      if (typeof v !== "string") throw bad(key, "a string");
      return v;
    },
    optStr(key: string): string | undefined {
      const v = body[key];
      if (v === undefined || v === null) return undefined;
      if (typeof v !== "string") throw bad(key, "a string");
      return v;
    },
    num(key: string): number {
      const v = body[key];
      if (typeof v !== "number" || !Number.isFinite(v)) throw bad(key, "a number");
      return v;
    },
    bool(key: string): boolean {
      const v = body[key];
      if (typeof v !== "boolean") throw bad(key, "true or false");
      return v;
    },
    date: (key: string): Date => date(key, body[key]),
    optDate(key: string): Date | undefined {
      const v = body[key];
      return v === undefined || v === null ? undefined : date(key, v);
    },
  };
}
