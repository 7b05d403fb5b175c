/**
 * Unit-test fixtures for the transports: a throw-away CA + server certificate for 127.0.0.1 (openssl
 * CLI), a fake HpcsService that records calls, and a logger whose lines are captured.
 */

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { createLogger, type Logger } from "../../../../lib/log.js";
import {
  type CallContext,
  type EndJobRequest,
  type GrantRequest,
  type GrantResponse,
  type GrantSummary,
  type HealthResponse,
  type HpcsService,
  type NodeTokenRequest,
  type NodeTokenResponse,
  type RegisterClientRequest,
  type RegisterClientResponse,
  type RevokeRequest,
  type RevokeResponse,
  ServiceError,
  type ServiceErrorCode,
} from "../../../../server/service/types.js";

export interface TlsFiles {
  dir: string;
  certFile: string;
  keyFile: string;
  ca: Buffer;
  cleanup(): void;
}

export function makeTlsFiles(): TlsFiles {
  const dir = mkdtempSync(join(tmpdir(), "hpcs-tr-pki-"));
  const run = (args: string[]) =>
    execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"];
  run([
    "req",
    "-x509",
    ...ec,
    "-keyout",
    "ca.key",
    "-out",
    "ca.crt",
    "-subj",
    "/CN=hpcs test CA",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign",
  ]);
  run([
    "req",
    "-x509",
    "-CA",
    "ca.crt",
    "-CAkey",
    "ca.key",
    ...ec,
    "-keyout",
    "server.key",
    "-out",
    "server.crt",
    "-subj",
    "/CN=localhost",
    "-addext",
    "subjectAltName=IP:127.0.0.1,DNS:localhost",
    "-addext",
    "basicConstraints=CA:FALSE",
    "-addext",
    "extendedKeyUsage=serverAuth",
  ]);
  return {
    dir,
    certFile: join(dir, "server.crt"),
    keyFile: join(dir, "server.key"),
    ca: readFileSync(join(dir, "ca.crt")),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** An unsigned JWT-shaped token whose sub is `sub` (the fake service does not verify it). */
export function makeJwt(sub: string): string {
  const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return `${b64({ alg: "ES256", typ: "JWT" })}.${b64({ sub, aud: ["hpcs"], exp: 4_000_000_000 })}.c2lnbmF0dXJlLW5vdC1jaGVja2Vk`;
}

export const BEARER = makeJwt("spiffe://hpcs.test/c/alice/workload");
export const ENROLLMENT_SECRET = "enroll-S3CRET-0123456789abcdef";
export const CLIENT_JOIN_TOKEN = "client-join-TOKEN-1111-2222-3333";
export const NODE_JOIN_TOKEN = "node-join-TOKEN-4444-5555-6666";
export const OPERATOR_TOKEN = "operator-TOKEN-7777-8888";
export const NEXT_ENROLLMENT_SECRET = "next-enroll-S3CRET-9876543210fedcba";
export const EXPIRES = new Date("2030-01-31T12:00:00Z");
export const NEXT_ENROLLMENT_EXPIRES = new Date("2030-03-01T12:00:00Z");

export interface RecordedCall {
  method: string;
  ctx: CallContext;
  req?: unknown;
}

/** Records each call; `failWith` makes the next calls throw a ServiceError (or a plain Error). */
export class FakeService implements HpcsService {
  calls: RecordedCall[] = [];
  failWith: ServiceErrorCode | "plain" | undefined;
  healthStatus: HealthResponse["status"] = "serving";

  private enter(method: string, ctx: CallContext, req?: unknown): void {
    this.calls.push({ method, ctx, ...(req !== undefined ? { req } : {}) });
    if (this.failWith === "plain") {
      throw new Error(`vault said no to token ${ctx.bearerJwt ?? ""} (backend detail)`);
    }
    if (this.failWith) throw new ServiceError(this.failWith, `fake ${this.failWith} from ${method}`);
  }

  last(): RecordedCall {
    const c = this.calls[this.calls.length - 1];
    if (!c) throw new Error("no call recorded");
    return c;
  }

  async registerClient(ctx: CallContext, req: RegisterClientRequest): Promise<RegisterClientResponse> {
    this.enter("registerClient", ctx, req);
    const id = req.clientName || "ip-client";
    return {
      clientId: id,
      agentSpiffeId: `spiffe://hpcs.test/c/${id}`,
      workloadSpiffeId: `spiffe://hpcs.test/c/${id}/workload`,
      joinToken: CLIENT_JOIN_TOKEN,
      joinTokenExpiresAt: EXPIRES,
      vaultRole: `hpcs-client-${id}`,
      secretPathPrefix: `hpcs/${id}/`,
      trustDomain: "hpcs.test",
      ...(req.enrollmentSecret
        ? { nextEnrollmentSecret: NEXT_ENROLLMENT_SECRET, nextEnrollmentExpiresAt: NEXT_ENROLLMENT_EXPIRES }
        : {}),
    };
  }

  async grant(ctx: CallContext, req: GrantRequest): Promise<GrantResponse> {
    this.enter("grant", ctx, req);
    return {
      clientId: "alice",
      secret: req.secret,
      spiffeId: `spiffe://hpcs.test/c/alice/s/${req.secret}`,
      vaultRole: `hpcs-alice-${req.secret}`,
      secretPath: `kv/data/hpcs/alice/${req.secret}`,
      entriesCreated: req.nodes.length * (req.users.length + req.groups.length),
      entriesExisting: 0,
      ...(req.expiresAt ? { expiresAt: req.expiresAt } : {}),
    };
  }

  async revoke(ctx: CallContext, req: RevokeRequest): Promise<RevokeResponse> {
    this.enter("revoke", ctx, req);
    return {
      entriesDeleted: 2,
      roleDeleted: true,
      policyDeleted: true,
      secretDeleted: req.deleteSecret === true,
    };
  }

  async listGrants(ctx: CallContext): Promise<GrantSummary[]> {
    this.enter("listGrants", ctx);
    return [
      {
        secret: "data1",
        spiffeId: "spiffe://hpcs.test/c/alice/s/data1",
        vaultRole: "hpcs-alice-data1",
        nodes: ["nid001"],
        users: ["alice"],
        groups: [],
        expiresAt: EXPIRES,
      },
      {
        secret: "data2",
        spiffeId: "spiffe://hpcs.test/c/alice/s/data2",
        vaultRole: "hpcs-alice-data2",
        nodes: ["nid002"],
        users: [],
        groups: ["proj"],
      },
    ];
  }

  async nodeJoinToken(ctx: CallContext, req: NodeTokenRequest): Promise<NodeTokenResponse> {
    this.enter("nodeJoinToken", ctx, req);
    return {
      joinToken: NODE_JOIN_TOKEN,
      expiresAt: EXPIRES,
      agentSpiffeId: `spiffe://hpcs.test/h/${req.node}/u/${req.user}`,
      aliases: [`spiffe://hpcs.test/h/${req.node}/g/proj`],
    };
  }

  async endJob(ctx: CallContext, req: EndJobRequest): Promise<void> {
    this.enter("endJob", ctx, req);
  }

  async health(ctx: CallContext): Promise<HealthResponse> {
    this.enter("health", ctx);
    return {
      status: this.healthStatus,
      spire: true,
      vault: this.healthStatus === "serving",
      version: "test",
    };
  }
}

export interface CapturedLog {
  logger: Logger;
  text(): string;
  lines(): Record<string, unknown>[];
}

export function captureLogger(): CapturedLog {
  const chunks: string[] = [];
  const dest = new Writable({
    write(chunk: Buffer | string, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  });
  const logger = createLogger({ level: "info", destination: dest });
  const text = () => chunks.join("");
  return {
    logger,
    text,
    lines: () =>
      text()
        .split("\n")
        .filter((l) => l.trim() !== "")
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

export const ALL_CODES: ServiceErrorCode[] = [
  "invalid_argument",
  "unauthenticated",
  "permission_denied",
  "not_found",
  "already_exists",
  "failed_precondition",
  "resource_exhausted",
  "unavailable",
  "internal",
];

export const SECRET_VALUES = [
  BEARER,
  ENROLLMENT_SECRET,
  NEXT_ENROLLMENT_SECRET,
  CLIENT_JOIN_TOKEN,
  NODE_JOIN_TOKEN,
  OPERATOR_TOKEN,
];
