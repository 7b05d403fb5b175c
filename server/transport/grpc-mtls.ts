/**
 * The gRPC API over SPIFFE mutual TLS (`[hpcs-server] grpc-mtls-listen`): the same hpcs.v1 service and
 * handlers as grpc-server.ts, but
 *
 * - the server presents its own X509-SVID, from its spire-agent's Workload API, and trusts exactly its
 *   trust domain's bundle from the same stream;
 * - the TLS handshake requires a client certificate chaining to that bundle (no certificate, a
 *   self-signed one or one of another CA: the handshake fails, no call reaches the service);
 * - each call's identity is the peer's X509-SVID (an X509-SVID leaf of the server's trust domain, else
 *   UNAUTHENTICATED); the `authorization` metadata is ignored, so a JWT-SVID can neither add to nor
 *   replace the certificate's identity;
 * - rotation: a new SVID or bundle from the agent applies to every new connection (spiffe-tls.ts).
 */

import type { Logger } from "../../lib/log.js";
import { peerSpiffeId, SpiffeTls, SpiffeTlsError } from "../../lib/spiffe/spiffe-tls.js";
import { WorkloadClient } from "../../lib/spiffe/workload-client.js";
import type { AuditLog } from "../service/audit-log.js";
import { type HpcsService, ServiceError } from "../service/types.js";
import { type GrpcServerHandle, serveGrpc } from "./grpc-server.js";
import type { RateLimiter } from "./rate-limit.js";

export interface GrpcMtlsOptions {
  host: string;
  /** 0 = an ephemeral port. */
  port: number;
  /** Workload API socket of the server's own spire-agent (`[spire-agent] socket-path`). */
  workloadSocket: string;
  /** The only trust domain whose X509-SVIDs may call (`[spire-server] trust-domain`). */
  trustDomain: string;
  /** How long to wait for the server's first X509-SVID; default 60 s. */
  startupTimeoutMs?: number;
  audit?: AuditLog;
  limiter?: RateLimiter;
}

export interface GrpcMtlsHandle extends GrpcServerHandle {
  /** The SPIFFE ID the listener presents (its current X509-SVID's). */
  spiffeId(): string;
}

export async function startGrpcMtlsServer(
  service: HpcsService,
  log: Logger,
  opts: GrpcMtlsOptions,
): Promise<GrpcMtlsHandle> {
  const workload = new WorkloadClient(opts.workloadSocket);
  let tls: SpiffeTls | undefined;
  try {
    tls = await SpiffeTls.start(workload, {
      timeoutMs: opts.startupTimeoutMs ?? 60_000,
      onUpdate: (svid) =>
        log.info(
          {
            spiffeId: svid.spiffeId.toString(),
            serial: svid.chain[0]?.serialNumber,
            expiresAt: svid.expiresAt.toISOString(),
          },
          "gRPC mTLS: X509-SVID in use for new connections",
        ),
      onError: (err) =>
        log.warn({ error: err.message }, "gRPC mTLS: workload API stream failed; keeping the last SVID"),
    });
    const handle = await serveGrpc(service, log, {
      host: opts.host,
      port: opts.port,
      credentials: tls.serverCredentials(),
      guards: {
        audit: opts.audit,
        limiter: opts.limiter,
        peerIdentity: (call) => {
          try {
            return peerSpiffeId(call, opts.trustDomain).toString();
          } catch (err) {
            if (err instanceof SpiffeTlsError) throw new ServiceError("unauthenticated", err.message);
            throw err;
          }
        },
      },
    });
    const current = tls;
    return {
      port: handle.port,
      spiffeId: () => current.current().spiffeId.toString(),
      close: async () => {
        await handle.close();
        current.close();
        workload.close();
      },
    };
  } catch (err) {
    tls?.close();
    workload.close();
    throw err;
  }
}
