/**
 * Starts both transports around one HpcsService: JSON/HTTP (with the original's routes) on
 * `[hpcs-server] listen` — the port the original served and old clients' `[hpcs-server] url` points at —
 * and gRPC on `[hpcs-server] grpc-listen` (default: the next port up). TLS from `[hpcs-server] tls-cert` / `tls-key`;
 * without them both refuse to start unless `insecure` is passed explicitly. Both share one rate limiter
 * (`[hpcs-server] rate-limit-*`), so a caller cannot double its budget by switching transport.
 * With `[hpcs-server] grpc-mtls-listen` a third listener serves gRPC over SPIFFE mTLS (grpc-mtls.ts);
 * it always uses the server's X509-SVID, whatever tls-cert and insecure say.
 */

import type { ServerConfig } from "../../lib/config/server-config.js";
import type { Logger } from "../../lib/log.js";
import type { AuditLog } from "../service/audit-log.js";
import type { HpcsService } from "../service/types.js";
import { startGrpcMtlsServer } from "./grpc-mtls.js";
import { type GrpcServerHandle, startGrpcServer } from "./grpc-server.js";
import { startHttpServer } from "./http-server.js";
import { RateLimiter } from "./rate-limit.js";

export interface Listen {
  host: string;
  port: number;
}

export interface StartOptions {
  /** Default: config listen. */
  http?: Listen;
  /** Default: config grpc-listen (listen host, port + 1 unless set). */
  grpc?: Listen;
  /** Plaintext on both transports; only for test benches, never the default. */
  insecure?: boolean;
  /** Where the transports audit refusals the service never saw (rate limits, malformed requests). */
  audit?: AuditLog;
}

export interface ServerHandle {
  httpPort: number;
  grpcPort: number;
  /** The SPIFFE mTLS listener's port, when grpc-mtls-listen is set. */
  grpcMtlsPort?: number;
  tls: boolean;
  close(): Promise<void>;
}

export class InsecureNotAllowedError extends Error {
  constructor() {
    super(
      "[hpcs-server] tls-cert and tls-key are not set; set them (PEM files) or pass --insecure for a plaintext test bench",
    );
    this.name = "InsecureNotAllowedError";
  }
}

export async function startServer(
  config: ServerConfig,
  service: HpcsService,
  logger: Logger,
  opts: StartOptions = {},
): Promise<ServerHandle> {
  const tls = config.hpcsServer.tls;
  if (!tls && opts.insecure !== true) throw new InsecureNotAllowedError();
  const httpListen = opts.http ?? config.hpcsServer.listen;
  const grpcListen = opts.grpc ?? config.hpcsServer.grpcListen;
  const secure = tls ? { tls } : { insecure: true };
  const limits = config.hpcsServer.rateLimits;
  const guards = {
    limiter: new RateLimiter({
      ...(limits.register ? { register: limits.register } : {}),
      ...(limits.nodeToken ? { "node-token": limits.nodeToken } : {}),
    }),
    ...(opts.audit ? { audit: opts.audit } : {}),
  };
  const mtlsListen = config.hpcsServer.grpcMtlsListen;
  const started: GrpcServerHandle[] = [];
  let httpServer;
  let mtlsServer: GrpcServerHandle | undefined;
  try {
    const grpcServer = await startGrpcServer(service, logger, { ...grpcListen, ...secure, ...guards });
    started.push(grpcServer);
    if (mtlsListen) {
      mtlsServer = await startGrpcMtlsServer(service, logger, {
        ...mtlsListen,
        workloadSocket: config.spireAgent.socketPath,
        trustDomain: config.spireServer.trustDomain,
        ...guards,
      });
      started.push(mtlsServer);
    }
    httpServer = await startHttpServer(service, logger, { ...httpListen, ...secure, ...guards });
  } catch (err) {
    await Promise.all(started.map((s) => s.close()));
    throw err;
  }
  const grpcServer = started[0] as GrpcServerHandle;
  logger.info(
    {
      http: `${httpListen.host}:${httpServer.port}`,
      grpc: `${grpcListen.host}:${grpcServer.port}`,
      ...(mtlsListen && mtlsServer ? { grpcMtls: `${mtlsListen.host}:${mtlsServer.port}` } : {}),
      tls: tls !== undefined,
    },
    tls ? "hpcs server listening" : "hpcs server listening WITHOUT TLS (--insecure)",
  );
  return {
    httpPort: httpServer.port,
    grpcPort: grpcServer.port,
    ...(mtlsServer ? { grpcMtlsPort: mtlsServer.port } : {}),
    tls: tls !== undefined,
    close: async () => {
      await Promise.all([httpServer.close(), ...started.map((s) => s.close())]);
    },
  };
}
