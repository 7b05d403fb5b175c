/**
 * An in-process Workload API server on a temporary unix socket, for unit tests only (integration tests
 * use a real spire-agent). Like spire-agent, it refuses calls without the security header.
 * Unary answers come from replaceable handlers; FetchX509SVID streams are handed to the test to write
 * to and break at will.
 */

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import {
  loadWorkloadApi,
  type RawJwtBundlesResponse,
  type RawJwtSvidRequest,
  type RawJwtSvidResponse,
  type RawValidateJwtSvidRequest,
  type RawValidateJwtSvidResponse,
  type RawX509SvidResponse,
  SECURITY_HEADER,
} from "../../../../lib/spiffe/workload-proto.js";

/** Thrown by a handler to answer with a gRPC status. */
export class FakeStatus extends Error {
  constructor(
    readonly code: grpc.status,
    readonly details: string,
  ) {
    super(details);
  }
}

/** A handler that never answers (for deadline tests). */
export const NEVER = () => new Promise<never>(() => {});

type Handler<Req, Res> = (req: Req) => Res | Promise<Res>;

export interface FakeHandlers {
  fetchJwtSvid: Handler<RawJwtSvidRequest, RawJwtSvidResponse>;
  validateJwtSvid: Handler<RawValidateJwtSvidRequest, RawValidateJwtSvidResponse>;
  jwtBundles: Handler<Record<string, never>, RawJwtBundlesResponse>;
}

export type X509Stream = grpc.ServerWritableStream<unknown, RawX509SvidResponse>;

const noIdentity = () => {
  throw new FakeStatus(grpc.status.PERMISSION_DENIED, "no identity issued");
};

export class FakeWorkloadApi {
  readonly handlers: FakeHandlers = {
    fetchJwtSvid: noIdentity,
    validateJwtSvid: noIdentity,
    jwtBundles: noIdentity,
  };
  /** Calls refused for lacking the security header. */
  refused = 0;
  /** Every FetchX509SVID stream opened so far, in order. */
  readonly x509Streams: X509Stream[] = [];
  /** FetchJWTBundles streams the client has cancelled. */
  cancelledBundleStreams = 0;
  private readonly streamWaiters: (() => void)[] = [];

  private constructor(
    private readonly server: grpc.Server,
    private readonly dir: string,
    readonly socket: string,
  ) {}

  static async start(): Promise<FakeWorkloadApi> {
    const dir = await mkdtemp(join(tmpdir(), "hpcs-wl-"));
    const socket = join(dir, "agent.sock");
    const server = new grpc.Server();
    const fake = new FakeWorkloadApi(server, dir, socket);
    server.addService(loadWorkloadApi().service, fake.implementation());
    await new Promise<number>((ok, fail) =>
      server.bindAsync(`unix://${socket}`, grpc.ServerCredentials.createInsecure(), (err, port) =>
        err ? fail(err) : ok(port),
      ),
    );
    return fake;
  }

  /** Resolves with FetchX509SVID stream number `index` (0-based) once the client has opened it. */
  async x509Stream(index: number, timeoutMs = 5000): Promise<X509Stream> {
    const deadline = Date.now() + timeoutMs;
    while (!this.x509Streams[index]) {
      if (Date.now() > deadline)
        throw new Error(`FetchX509SVID stream #${index} not opened in ${timeoutMs} ms`);
      await new Promise<void>((ok) => {
        this.streamWaiters.push(ok);
        setTimeout(ok, 50);
      });
    }
    return this.x509Streams[index] as X509Stream;
  }

  async stop(): Promise<void> {
    this.server.forceShutdown();
    await rm(this.dir, { recursive: true, force: true });
  }

  private implementation(): grpc.UntypedServiceImplementation {
    const unary =
      <Req, Res>(handler: () => Handler<Req, Res>) =>
      async (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>) => {
        if (!this.headerOk(call.metadata)) return cb(refusal());
        try {
          cb(null, await handler()(call.request));
        } catch (err) {
          cb(asStatus(err));
        }
      };
    return {
      FetchJWTSVID: unary(() => this.handlers.fetchJwtSvid),
      ValidateJWTSVID: unary(() => this.handlers.validateJwtSvid),
      FetchJWTBundles: async (
        call: grpc.ServerWritableStream<Record<string, never>, RawJwtBundlesResponse>,
      ) => {
        if (!this.headerOk(call.metadata)) {
          call.emit("error", refusalError());
          return;
        }
        call.on("cancelled", () => this.cancelledBundleStreams++);
        try {
          call.write(await this.handlers.jwtBundles(call.request));
        } catch (err) {
          call.emit("error", statusError(asStatus(err)));
        }
        // Like the agent, the stream stays open for later changes until the client goes away.
      },
      FetchX509SVID: (call: X509Stream) => {
        if (!this.headerOk(call.metadata)) {
          call.emit("error", refusalError());
          return;
        }
        this.x509Streams.push(call);
        for (const w of this.streamWaiters.splice(0)) w();
      },
    };
  }

  private headerOk(md: grpc.Metadata): boolean {
    const v = md.get(SECURITY_HEADER);
    const ok = v.length === 1 && v[0] === "true";
    if (!ok) this.refused++;
    return ok;
  }
}

function refusal(): Partial<grpc.StatusObject> {
  return { code: grpc.status.INVALID_ARGUMENT, details: "security header missing from request" };
}

function refusalError(): Error {
  return statusError(refusal());
}

/** An Error carrying a gRPC status, which a server stream ends with when emitted as "error". */
export function statusError(s: Partial<grpc.StatusObject>): Error {
  return Object.assign(new Error(s.details), { code: s.code, details: s.details });
}

function asStatus(err: unknown): Partial<grpc.StatusObject> {
  if (err instanceof FakeStatus) return { code: err.code, details: err.details };
  return { code: grpc.status.INTERNAL, details: (err as Error).message };
}

/** An unsigned token with these claims: the client only decodes what the agent hands it. */
export function fakeJwt(claims: Record<string, unknown>): string {
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return `${b64({ alg: "ES256", kid: "k1", typ: "JWT" })}.${b64(claims)}.c2ln`;
}

/** Polls cond every 10 ms until it holds or timeoutMs passes. */
export async function until(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
