/**
 * SpireRegistration over the SPIRE server's admin API socket (gRPC on a unix socket).
 * Callers on that socket are "local" and so authorised for the admin RPCs without an SVID:
 * whoever can open the socket is the registrar, which is why it stays on the utility node.
 */

import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import type { SpiffeId } from "../spiffe-id.js";
import {
  type CreateEntryResult,
  type DeleteEntryResult,
  type Entry,
  type EntryFilter,
  type EntrySpec,
  fromEpochSeconds,
  InvalidRegistrationError,
  type JoinToken,
  SpireError,
  type SpireRegistration,
  type TrustBundle,
  validateEntryId,
  validateEntrySpec,
  validateSpiffeId,
  validateTtl,
} from "./registration.js";
import {
  fromWireBundle,
  fromWireCreateResult,
  fromWireDeleteResult,
  fromWireEntry,
  toWireEntry,
  toWireSpiffeId,
  type WireBundle,
  type WireCreateResult,
  type WireDeleteResult,
  type WireEntry,
} from "./wire.js";

const PROTO_FILES = [
  "spire/api/server/entry/v1/entry.proto",
  "spire/api/server/agent/v1/agent.proto",
  "spire/api/server/bundle/v1/bundle.proto",
];

/**
 * Where proto/ lies relative to this module: three levels up once compiled (dist/lib/spire/),
 * two when run from source by a TypeScript loader (lib/spire/).
 */
export function defaultProtoDir(): string {
  const candidates = ["../../../proto/", "../../proto/"].map((rel) =>
    fileURLToPath(new URL(rel, import.meta.url)),
  );
  const found = candidates.find((dir) => existsSync(`${dir}${PROTO_FILES[0]}`));
  if (!found) {
    throw new Error(`SPIRE protos not found (looked in ${candidates.join(", ")}): pass protoDir`);
  }
  return found;
}

// SPIRE accepts far more per call; this only bounds one message well below gRPC's 4 MiB default.
const CREATE_CHUNK = 500;
const CREATE_CONCURRENCY = 4;
const DELETE_CHUNK = 500;
const LIST_PAGE = 500;

export interface SpireServerClientOptions {
  /** Absolute path of the admin socket, or a full "unix:///…" target. */
  socketPath: string;
  /** Per-call deadline. */
  timeoutMs?: number;
  /** Directory holding spire/api/…; defaults to the repository's proto/. */
  protoDir?: string;
}

type Callback<Res> = (err: grpc.ServiceError | null, res?: Res) => void;
type UnaryMethod = (req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: Callback<unknown>) => void;
type GrpcClient = grpc.Client & Record<string, UnaryMethod>;

export class SpireServerClient implements SpireRegistration {
  private readonly entry: GrpcClient;
  private readonly agent: GrpcClient;
  private readonly bundle: GrpcClient;
  private readonly timeoutMs: number;

  constructor(opts: SpireServerClientOptions) {
    const target = toTarget(opts.socketPath);
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    const definition = protoLoader.loadSync(PROTO_FILES, {
      includeDirs: [opts.protoDir ?? defaultProtoDir()],
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
    });
    const pkg = grpc.loadPackageDefinition(definition) as unknown as SpirePackage;
    const server = pkg.spire.api.server;
    this.entry = new server.entry.v1.Entry(target, grpc.credentials.createInsecure()) as GrpcClient;
    // One connection for all three services.
    const shared = { channelOverride: this.entry.getChannel() };
    this.agent = new server.agent.v1.Agent(target, grpc.credentials.createInsecure(), shared) as GrpcClient;
    this.bundle = new server.bundle.v1.Bundle(
      target,
      grpc.credentials.createInsecure(),
      shared,
    ) as GrpcClient;
  }

  async createJoinToken(opts: { ttlSeconds: number; agentId?: SpiffeId }): Promise<JoinToken> {
    const ttl = validateTtl(opts.ttlSeconds);
    const agentId = opts.agentId ? toWireSpiffeId(validateSpiffeId("agent ID", opts.agentId)) : null;
    const res = await this.call<{ value: string; expires_at: string }>(
      this.agent,
      "CreateJoinToken",
      "CreateJoinToken",
      { ttl, agent_id: agentId },
    );
    const expiresAt = fromEpochSeconds(res.expires_at);
    if (!res.value || !expiresAt)
      throw new SpireError("CreateJoinToken", -1, "response without token or expiry");
    return { token: res.value, expiresAt };
  }

  async batchCreateEntries(entries: EntrySpec[]): Promise<CreateEntryResult[]> {
    // Validate all before sending any, so a bad entry leaves no partial batch behind.
    const wire = entries.map((e) => toWireEntry(validateEntrySpec(e)));
    const chunks: (typeof wire)[] = [];
    for (let i = 0; i < wire.length; i += CREATE_CHUNK) chunks.push(wire.slice(i, i + CREATE_CHUNK));
    // A few chunks in flight: SPIRE spends most of each entry in its datastore's similar-entry lookup,
    // and concurrent batches overlap that with the RPC and the other chunks' inserts.
    const results: CreateEntryResult[][] = new Array<CreateEntryResult[]>(chunks.length);
    let next = 0;
    const worker = async (): Promise<void> => {
      for (let i = next++; i < chunks.length; i = next++) {
        const chunk = chunks[i] as typeof wire;
        try {
          const res = await this.call<{ results: WireCreateResult[] }>(
            this.entry,
            "BatchCreateEntry",
            "BatchCreateEntry",
            { entries: chunk },
          );
          if (res.results.length !== chunk.length) {
            throw new SpireError(
              "BatchCreateEntry",
              -1,
              `${res.results.length} results for ${chunk.length} entries`,
            );
          }
          results[i] = res.results.map(fromWireCreateResult);
        } catch (err) {
          // Per entry, not thrown: the other chunks' created entries must reach the caller, who undoes them.
          failures.push(err);
          const message = err instanceof Error ? err.message : String(err);
          const code = err instanceof SpireError ? err.code : -1;
          results[i] = chunk.map(() => ({ status: "error" as const, code, message }));
        }
      }
    };
    const failures: unknown[] = [];
    await Promise.all(Array.from({ length: Math.min(CREATE_CONCURRENCY, chunks.length) }, worker));
    // Nothing created at all (e.g. SPIRE unreachable): the caller gets the error itself, as before.
    if (failures.length > 0 && failures.length === chunks.length) throw failures[0];
    return results.flat();
  }

  async listEntries(filter: EntryFilter): Promise<Entry[]> {
    const wireFilter = {
      by_spiffe_id: filter.bySpiffeId
        ? toWireSpiffeId(validateSpiffeId("bySpiffeId", filter.bySpiffeId))
        : null,
      by_parent_id: filter.byParentId
        ? toWireSpiffeId(validateSpiffeId("byParentId", filter.byParentId))
        : null,
    };
    if (!wireFilter.by_spiffe_id && !wireFilter.by_parent_id) {
      // Listing every entry of the trust domain is never what a grant operation wants.
      throw new InvalidRegistrationError("entry filter", filter, "give bySpiffeId or byParentId");
    }
    const out: Entry[] = [];
    let pageToken = "";
    do {
      const res = await this.call<{ entries: WireEntry[]; next_page_token: string }>(
        this.entry,
        "ListEntries",
        "ListEntries",
        { filter: wireFilter, page_size: LIST_PAGE, page_token: pageToken },
      );
      out.push(...res.entries.map(fromWireEntry));
      pageToken = res.next_page_token;
    } while (pageToken);
    return out;
  }

  async batchDeleteEntries(ids: string[]): Promise<DeleteEntryResult[]> {
    for (const id of ids) validateEntryId(id);
    const results: DeleteEntryResult[] = [];
    for (let i = 0; i < ids.length; i += DELETE_CHUNK) {
      const chunk = ids.slice(i, i + DELETE_CHUNK);
      const res = await this.call<{ results: WireDeleteResult[] }>(
        this.entry,
        "BatchDeleteEntry",
        "BatchDeleteEntry",
        {
          ids: chunk,
        },
      );
      results.push(...chunk.map((id, j) => fromWireDeleteResult(res.results[j] ?? {}, id)));
    }
    return results;
  }

  async evictAgent(id: SpiffeId): Promise<void> {
    await this.call(this.agent, "DeleteAgent", "DeleteAgent", {
      id: toWireSpiffeId(validateSpiffeId("agent ID", id)),
    });
  }

  async getBundle(): Promise<TrustBundle> {
    return fromWireBundle(await this.call<WireBundle>(this.bundle, "GetBundle", "GetBundle", {}));
  }

  close(): void {
    // The agent and bundle clients ride on this channel.
    this.entry.close();
  }

  private call<Res>(client: GrpcClient, method: string, operation: string, req: unknown): Promise<Res> {
    const fn = client[method];
    if (typeof fn !== "function") return Promise.reject(new Error(`no RPC ${method} in the loaded protos`));
    return new Promise((resolve, reject) => {
      fn.call(client, req, new grpc.Metadata(), { deadline: Date.now() + this.timeoutMs }, (err, res) => {
        if (err) reject(new SpireError(operation, err.code, err.details || err.message));
        else resolve(res as Res);
      });
    });
  }
}

function toTarget(socketPath: string): string {
  if (socketPath.startsWith("unix:")) return socketPath;
  if (!socketPath.startsWith("/")) {
    throw new InvalidRegistrationError(
      "SPIRE admin socket path",
      socketPath,
      "use an absolute path, e.g. /run/spire/server/api.sock",
    );
  }
  return `unix://${socketPath}`;
}

type ServiceCtor = new (
  address: string,
  credentials: grpc.ChannelCredentials,
  options?: grpc.ClientOptions,
) => grpc.Client;

interface SpirePackage {
  spire: {
    api: {
      server: {
        entry: { v1: { Entry: ServiceCtor } };
        agent: { v1: { Agent: ServiceCtor } };
        bundle: { v1: { Bundle: ServiceCtor } };
      };
    };
  };
}
