/**
 * The client side of the hpcs server's gRPC API over SPIFFE mTLS (`[hpcs-server] grpc-mtls`, the
 * server's grpc-mtls-listen): grant, revoke and listGrants, authenticated by the client workload's
 * X509-SVID (spiffe://<td>/c/<id>/workload) from its own spire-agent, with the trust bundle from the
 * same Workload API stream. The server must present exactly `serverId` (no hostname check: SPIFFE IDs
 * are the names here). A rotated SVID is used from the next connection on (lib/spiffe/spiffe-tls.ts).
 *
 * No bearer token is sent: grant()/revoke() take one only to fit PublishServer and ignore it.
 * Failures are HpcsServerError lines, like the HTTP client's: the server's own codes pass through
 * (UNAUTHENTICATED → unauthenticated, …); a failed handshake or unreachable address is `unreachable`.
 */

import { isIP } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { InvalidNameError, validateName } from "../lib/names.js";
import { SpiffeId } from "../lib/spiffe-id.js";
import { SpiffeTls } from "../lib/spiffe/spiffe-tls.js";
import type { WorkloadClient } from "../lib/spiffe/workload-client.js";
import type { GrantSummary, ServiceErrorCode } from "../server/service/types.js";
import { GRPC_STATUS } from "../server/transport/call-log.js";
import { loadHpcsDefinition } from "../server/transport/grpc-server.js";
import {
  type CallOptions,
  DEFAULT_TIMEOUT_MS,
  type GrantRequest,
  type GrantResponse,
  type HealthResponse,
  HpcsServerError,
  type RevokeResponse,
} from "./hpcs-server-client.js";

export interface HpcsGrpcClientOptions {
  /** `[hpcs-server] grpc-mtls`. */
  host: string;
  port: number;
  /** `[hpcs-server] grpc-mtls-server-id`: the only SPIFFE ID the server may present. */
  serverId: string;
  /** The client agent's Workload API; stays the caller's to close, after close(). */
  workload: WorkloadClient;
  /** The SVID to present: the client workload's SPIFFE ID. */
  spiffeId: string;
  /** Deadline of each call unless the call gives its own, and of the wait for the SVID; default 30 s. */
  timeoutMs?: number;
}

type Unary = (
  req: object,
  md: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res: Record<string, unknown>) => void,
) => grpc.ClientUnaryCall;
type Stub = grpc.Client & Record<"Grant" | "Revoke" | "ListGrants" | "Health", Unary>;

const CODE_OF = new Map<number, ServiceErrorCode>(
  Object.entries(GRPC_STATUS).map(([code, status]) => [status, code as ServiceErrorCode]),
);

export class HpcsGrpcClient {
  /** host:port as configured, for messages. */
  readonly address: string;

  private constructor(
    private readonly tls: SpiffeTls,
    private readonly stub: Stub,
    address: string,
    private readonly timeoutMs: number,
  ) {
    this.address = address;
  }

  /** Waits for the workload's X509-SVID, then prepares the channel (it connects at the first call). */
  static async open(opts: HpcsGrpcClientOptions): Promise<HpcsGrpcClient> {
    const serverId = SpiffeId.parse(opts.serverId);
    const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const address = `${opts.host.includes(":") ? `[${opts.host}]` : opts.host}:${opts.port}`;
    let tls: SpiffeTls;
    try {
      tls = await SpiffeTls.start(opts.workload, { spiffeId: SpiffeId.parse(opts.spiffeId), timeoutMs });
    } catch (err) {
      throw new HpcsServerError(
        "config",
        `grpc-mtls: no X509-SVID for ${opts.spiffeId} from the client's spire-agent: ${(err as Error).message}`,
      );
    }
    const pkg = loadHpcsDefinition() as unknown as { hpcs: { v1: { Hpcs: grpc.ServiceClientConstructor } } };
    const creds = tls.channelCredentials({ trustDomain: serverId.trustDomain, id: serverId });
    // SNI may not be an IP address (RFC 6066; Node warns): name the trust domain instead. The server
    // ignores SNI, and the server is checked by its SPIFFE ID, never by a host name.
    const options = isIP(opts.host) ? { "grpc.ssl_target_name_override": serverId.trustDomain } : {};
    const stub = new pkg.hpcs.v1.Hpcs(address, creds, options) as unknown as Stub;
    return new HpcsGrpcClient(tls, stub, address, timeoutMs);
  }

  /** Grants the client's secret to nodes × (users ∪ groups); the caller is this client's X509-SVID. */
  async grant(_bearerJwt: unknown, req: GrantRequest, opts: CallOptions = {}): Promise<GrantResponse> {
    const r = await this.call("grant", "Grant", opts, {
      secret: checkSecret(req.secret),
      nodes: req.nodes,
      users: req.users,
      groups: req.groups,
      expires_at_unix: req.expiresAt ? Math.floor(req.expiresAt.getTime() / 1000) : 0,
    });
    const out: GrantResponse = {
      clientId: str(r.client_id),
      secret: str(r.secret),
      spiffeId: str(r.spiffe_id),
      vaultRole: str(r.vault_role),
      secretPath: str(r.secret_path),
      entriesCreated: Number(r.entries_created ?? 0),
      entriesExisting: Number(r.entries_existing ?? 0),
    };
    const exp = Number(r.expires_at_unix ?? 0);
    if (exp > 0) out.expiresAt = new Date(exp * 1000);
    return out;
  }

  /** Removes the grant's entries, role and policy; with deleteSecret also the secret itself. */
  async revoke(
    _bearerJwt: unknown,
    secret: string,
    flags: { deleteSecret: boolean },
    opts: CallOptions = {},
  ): Promise<RevokeResponse> {
    const r = await this.call("revoke", "Revoke", opts, {
      secret: checkSecret(secret),
      delete_secret: flags.deleteSecret,
    });
    return {
      entriesDeleted: Number(r.entries_deleted ?? 0),
      roleDeleted: r.role_deleted === true,
      policyDeleted: r.policy_deleted === true,
      secretDeleted: r.secret_deleted === true,
    };
  }

  /** The client's own grants. */
  async listGrants(opts: CallOptions = {}): Promise<GrantSummary[]> {
    const r = await this.call("list grants", "ListGrants", opts, {});
    const grants = Array.isArray(r.grants) ? (r.grants as Record<string, unknown>[]) : [];
    return grants.map((g) => {
      const exp = Number(g.expires_at_unix ?? 0);
      return {
        secret: str(g.secret),
        spiffeId: str(g.spiffe_id),
        vaultRole: str(g.vault_role),
        nodes: g.nodes as string[],
        users: g.users as string[],
        groups: g.groups as string[],
        ...(exp > 0 ? { expiresAt: new Date(exp * 1000) } : {}),
      };
    });
  }

  async health(opts: CallOptions = {}): Promise<HealthResponse> {
    const r = await this.call("health", "Health", opts, {});
    return {
      status: r.status === "serving" ? "serving" : "not_serving",
      spire: r.spire === true,
      vault: r.vault === true,
      version: str(r.version),
    };
  }

  /** Closes the channel and stops watching the SVID; the Workload API client stays open. */
  close(): void {
    this.stub.close();
    this.tls.close();
  }

  private call(
    op: string,
    method: "Grant" | "Revoke" | "ListGrants" | "Health",
    opts: CallOptions,
    req: object,
  ): Promise<Record<string, unknown>> {
    const signal = opts.signal;
    if (signal?.aborted) {
      return Promise.reject(
        new HpcsServerError("aborted", `${op}: call to the hpcs server at ${this.address} aborted`),
      );
    }
    const deadline = new Date(Date.now() + (opts.timeoutMs ?? this.timeoutMs));
    return new Promise((resolve, reject) => {
      const onAbort = () => call.cancel();
      const call = this.stub[method](req, new grpc.Metadata(), { deadline }, (err, res) => {
        signal?.removeEventListener("abort", onAbort);
        if (err) reject(this.error(op, err, signal));
        else resolve(res);
      });
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  private error(op: string, err: grpc.ServiceError, signal: AbortSignal | undefined): HpcsServerError {
    const requestId = err.metadata?.get("x-request-id")[0];
    const rid = typeof requestId === "string" ? requestId : undefined;
    const where = `the hpcs server at ${this.address} (grpc-mtls)`;
    // grpc-js appends "(<time>). Resolution note: …" to connection failures: noise for a one-line error.
    const details = err.details
      .replace(/\s+/g, " ")
      .replace(/ \(\d{4}-\d\d-\d\dT[^)]*\)\. Resolution note:.*$/, "")
      .trim();
    switch (err.code) {
      case grpc.status.CANCELLED:
        if (signal?.aborted) return new HpcsServerError("aborted", `${op}: call to ${where} aborted`);
        break;
      case grpc.status.DEADLINE_EXCEEDED:
        return new HpcsServerError("timeout", `${op}: ${where} did not answer in time`);
      case grpc.status.UNAVAILABLE:
        if (rid === undefined) {
          // No request id: the call never reached the service (no connection, or the handshake failed).
          return new HpcsServerError(
            "unreachable",
            `${op}: no mTLS connection to ${where}: ${details}; check [hpcs-server] grpc-mtls and grpc-mtls-server-id`,
          );
        }
        break;
      default:
        break;
    }
    const code = CODE_OF.get(err.code) ?? "internal";
    return new HpcsServerError(code, `${op}: ${where} refused: ${details}`, undefined, rid);
  }
}

function checkSecret(name: string): string {
  try {
    return validateName("secret", name);
  } catch (err) {
    if (err instanceof InvalidNameError)
      throw new HpcsServerError("invalid_argument", `secret: ${err.message}`);
    throw err;
  }
}

function str(v: unknown): string {
  return typeof v === "string" ? v : "";
}
