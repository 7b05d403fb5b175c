/**
 * A client for the SPIFFE Workload API served by an agent (spire-agent) on a local unix socket:
 * JWT-SVIDs and their validation, JWT bundles, and the X509-SVID stream.
 * Modelled on go-spiffe's workloadapi.Client; the long-lived views on top of it are X509Source and
 * JwtSource.
 */

import type { X509Certificate } from "node:crypto";
import { resolve } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { decodeJwt, type JSONWebKeySet } from "jose";
import { SpiffeId } from "../spiffe-id.js";
import {
  loadWorkloadApi,
  type RawJwtSvid,
  type RawStruct,
  type RawValue,
  type RawX509SvidResponse,
  SECURITY_HEADER,
  type WorkloadStub,
} from "./workload-proto.js";
import { parseCertificates, parseX509Svid, type X509Svid } from "./x509-svid.js";

export interface WorkloadClientOptions {
  /** Deadline of each unary call, and of the first message of fetchJwtBundles(). Default 10 s. */
  timeoutMs?: number;
}

export interface JwtSvid {
  spiffeId: SpiffeId;
  /** JWS compact serialization. */
  token: string;
  expiresAt: Date;
  /** The operator's hint for choosing among several SVIDs; "" when none. */
  hint: string;
}

export interface ValidatedJwtSvid {
  spiffeId: SpiffeId;
  claims: Record<string, unknown>;
}

export interface X509Context {
  /** In the agent's order; the first is the default identity. */
  svids: X509Svid[];
  /** CA certificates of foreign trust domains, keyed by trust domain name. */
  federatedBundles: Map<string, X509Certificate[]>;
}

/** An open stream; close() ends it without reporting an error. */
export interface Watch {
  close(): void;
}

/** A failed Workload API call, as one line naming the socket; `code` is the gRPC status when there is one. */
export class WorkloadApiError extends Error {
  constructor(
    message: string,
    readonly code?: grpc.status,
  ) {
    super(message);
    this.name = "WorkloadApiError";
  }
}

const DEFAULT_TIMEOUT_MS = 10_000;

export class WorkloadClient {
  /** The socket's filesystem path. */
  readonly socketPath: string;
  private readonly stub: WorkloadStub;
  private readonly timeoutMs: number;
  private readonly watches = new Set<Watch>();
  private closed = false;

  /** `socket` is `unix:///path/to/agent.sock` or a plain path to it. */
  constructor(socket: string, opts: WorkloadClientOptions = {}) {
    this.socketPath = socketPathOf(socket);
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const { Client } = loadWorkloadApi();
    this.stub = new Client(
      `unix://${this.socketPath}`,
      grpc.credentials.createInsecure(),
    ) as unknown as WorkloadStub;
  }

  /** JWT-SVIDs for `audience`: one per identity this process is entitled to, or only `spiffeId`'s. */
  async fetchJwtSvid(req: { audience: string[]; spiffeId?: SpiffeId | string }): Promise<JwtSvid[]> {
    if (req.audience.length === 0 || req.audience.some((a) => a === "")) {
      throw new Error("fetchJwtSvid: audience must list at least one non-empty audience");
    }
    const spiffeId = req.spiffeId === undefined ? "" : SpiffeId.parse(req.spiffeId.toString()).toString();
    const res = await new Promise<{ svids: RawJwtSvid[] }>((ok, fail) =>
      this.stub.FetchJWTSVID(
        { audience: req.audience, spiffe_id: spiffeId },
        this.metadata(),
        { deadline: this.deadline() },
        (err, value) => (err || !value ? fail(this.error("FetchJWTSVID", err)) : ok(value)),
      ),
    );
    return res.svids.map((s) => {
      const id = SpiffeId.parse(s.spiffe_id);
      // The agent is the trusted issuer here; the token is only decoded to learn its lifetime.
      const exp = safeDecodeExp(s.svid);
      if (exp === undefined) {
        throw new WorkloadApiError(`workload API at ${this.socketPath}: JWT-SVID for ${id} has no exp claim`);
      }
      return { spiffeId: id, token: s.svid, expiresAt: new Date(exp * 1000), hint: s.hint };
    });
  }

  /** Has the agent validate `token` for `audience`; rejects (InvalidArgument) when it is not valid. */
  async validateJwtSvid(token: string, audience: string): Promise<ValidatedJwtSvid> {
    if (token === "") throw new Error("validateJwtSvid: token is empty");
    if (audience === "") throw new Error("validateJwtSvid: audience is empty");
    const res = await new Promise<{ spiffe_id: string; claims: RawStruct | null }>((ok, fail) =>
      this.stub.ValidateJWTSVID(
        { audience, svid: token },
        this.metadata(),
        { deadline: this.deadline() },
        (err, value) => (err || !value ? fail(this.error("ValidateJWTSVID", err)) : ok(value)),
      ),
    );
    return { spiffeId: SpiffeId.parse(res.spiffe_id), claims: structToJson(res.claims ?? {}) };
  }

  /** The current JWT bundles (JWKS), keyed by trust domain name: the stream's first message. */
  fetchJwtBundles(): Promise<Map<string, JSONWebKeySet>> {
    return new Promise((ok, fail) => {
      const call = this.stub.FetchJWTBundles({}, this.metadata(), { deadline: this.deadline() });
      let settled = false;
      const settle = (fn: () => void) => {
        if (settled) return;
        settled = true;
        call.cancel();
        fn();
      };
      call.on("data", (msg: { bundles: Record<string, Buffer> }) =>
        settle(() => {
          try {
            ok(this.jwtBundles(msg.bundles));
          } catch (err) {
            fail(err);
          }
        }),
      );
      call.on("error", (err: grpc.ServiceError) => settle(() => fail(this.error("FetchJWTBundles", err))));
      call.on("end", () =>
        settle(() =>
          fail(
            new WorkloadApiError(
              `workload API at ${this.socketPath}: FetchJWTBundles ended without a message`,
            ),
          ),
        ),
      );
    });
  }

  /**
   * Streams X509 contexts: onUpdate on every message (each rotation). The stream ends on the first
   * error, reported once through onError; reconnecting is the caller's choice (X509Source does it).
   * Ends silently on close() or when `signal` aborts.
   */
  watchX509Svids(
    onUpdate: (ctx: X509Context) => void,
    onError: (err: WorkloadApiError) => void,
    opts: { signal?: AbortSignal } = {},
  ): Watch {
    const { signal } = opts;
    let done = false;
    const call = signal?.aborted ? undefined : this.stub.FetchX509SVID({}, this.metadata());
    const finish = (err?: WorkloadApiError) => {
      if (done) return;
      done = true;
      this.watches.delete(watch);
      signal?.removeEventListener("abort", close);
      call?.cancel();
      if (err) onError(err);
    };
    const close = () => finish();
    const watch: Watch = { close };
    if (!call) {
      done = true;
      return watch;
    }
    this.watches.add(watch);
    signal?.addEventListener("abort", close, { once: true });
    call.on("data", (msg: RawX509SvidResponse) => {
      if (done) return;
      let ctx: X509Context;
      try {
        ctx = {
          svids: msg.svids.map(parseX509Svid),
          federatedBundles: byTrustDomain(msg.federated_bundles, (der, td) =>
            parseCertificates(der, `federated bundle of ${td}`),
          ),
        };
        if (ctx.svids.length === 0) throw new Error("no SVIDs in the message");
      } catch (err) {
        finish(
          new WorkloadApiError(
            `workload API at ${this.socketPath}: FetchX509SVID sent an unusable X509-SVID: ${(err as Error).message}`,
          ),
        );
        return;
      }
      onUpdate(ctx);
    });
    call.on("error", (err: grpc.ServiceError) => finish(this.error("FetchX509SVID", err)));
    call.on("end", () =>
      finish(
        new WorkloadApiError(
          `workload API at ${this.socketPath}: FetchX509SVID stream ended by the agent`,
          grpc.status.UNAVAILABLE,
        ),
      ),
    );
    return watch;
  }

  /** Ends open watches (silently) and the connection. */
  close(): void {
    this.closed = true;
    for (const w of [...this.watches]) w.close();
    this.stub.close();
  }

  private metadata(): grpc.Metadata {
    // A call on a closed channel throws an unhelpful "Channel has been shut down"; every call passes here first.
    if (this.closed) throw new WorkloadApiError(`workload API at ${this.socketPath}: the client is closed`);
    const md = new grpc.Metadata();
    md.set(SECURITY_HEADER, "true");
    return md;
  }

  private deadline(): Date {
    return new Date(Date.now() + this.timeoutMs);
  }

  private jwtBundles(raw: Record<string, Buffer>): Map<string, JSONWebKeySet> {
    return byTrustDomain(raw, (json, td) => {
      let doc: unknown;
      try {
        doc = JSON.parse(json.toString("utf8"));
      } catch (err) {
        throw new WorkloadApiError(
          `workload API at ${this.socketPath}: JWT bundle of ${td} is not JSON: ${(err as Error).message}`,
        );
      }
      if (!doc || typeof doc !== "object" || !Array.isArray((doc as { keys?: unknown }).keys)) {
        throw new WorkloadApiError(`workload API at ${this.socketPath}: JWT bundle of ${td} is not a JWKS`);
      }
      return doc as JSONWebKeySet;
    });
  }

  private error(op: string, err: grpc.ServiceError | null): WorkloadApiError {
    const at = `workload API at ${this.socketPath}`;
    if (!err) return new WorkloadApiError(`${at}: ${op} returned no response`);
    const details = err.details || err.message;
    switch (err.code) {
      case grpc.status.PERMISSION_DENIED:
        return new WorkloadApiError(
          `${at}: no identity issued (is a registration entry for this process's selectors present?)` +
            (details === "no identity issued" ? "" : ` [${details}]`),
          err.code,
        );
      case grpc.status.UNAVAILABLE:
        return new WorkloadApiError(
          `${at}: unavailable (is spire-agent running, and is this its socket?): ${details}`,
          err.code,
        );
      case grpc.status.DEADLINE_EXCEEDED:
        return new WorkloadApiError(`${at}: ${op} got no answer within ${this.timeoutMs} ms`, err.code);
      case grpc.status.INVALID_ARGUMENT:
        return new WorkloadApiError(`${at}: ${op} refused: ${details}`, err.code);
      default:
        return new WorkloadApiError(`${at}: ${op} failed (${grpc.status[err.code]}): ${details}`, err.code);
    }
  }
}

function socketPathOf(socket: string): string {
  if (socket.startsWith("unix://")) {
    const path = socket.slice("unix://".length);
    // unix://relative would put the first path segment in the authority: the spec wants unix:///abs.
    if (!path.startsWith("/")) throw new Error(`workload API socket ${socket}: use unix:///absolute/path`);
    return path;
  }
  if (socket.startsWith("unix:")) return resolve(socket.slice("unix:".length));
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(socket)) {
    throw new Error(
      `workload API socket ${socket}: only unix sockets are supported (unix:///path or a path)`,
    );
  }
  if (socket === "") throw new Error("workload API socket: empty path");
  return resolve(socket);
}

function safeDecodeExp(token: string): number | undefined {
  try {
    return decodeJwt(token).exp;
  } catch {
    return undefined;
  }
}

/** Re-keys a map the agent keys by trust-domain SPIFFE ID (`spiffe://td`) by the bare name (`td`). */
function byTrustDomain<T>(
  raw: Record<string, Buffer>,
  convert: (v: Buffer, td: string) => T,
): Map<string, T> {
  const out = new Map<string, T>();
  for (const [key, value] of Object.entries(raw)) {
    const td = SpiffeId.parse(key.startsWith("spiffe://") ? key : `spiffe://${key}`).trustDomain;
    out.set(td, convert(value, td));
  }
  return out;
}

function structToJson(s: RawStruct): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(s.fields ?? {})) out[k] = valueToJson(v);
  return out;
}

function valueToJson(v: RawValue): unknown {
  switch (v.kind) {
    case "numberValue":
      return v.numberValue;
    case "stringValue":
      return v.stringValue;
    case "boolValue":
      return v.boolValue;
    case "structValue":
      return structToJson(v.structValue ?? {});
    case "listValue":
      return (v.listValue?.values ?? []).map(valueToJson);
    default:
      return null;
  }
}
