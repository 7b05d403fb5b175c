/**
 * SpireRegistration through the `spire-server` CLI, for sites where the admin socket is not
 * local to the hpcs server: the CLI runs behind a pre-command such as
 * `kubectl exec -i -n spire spire-server-0 --` (the `-i` matters: batches travel on stdin).
 *
 * Every call is one argv array handed to spawn without a shell. Because a pre-command may
 * still add one on the far side (`ssh host --` joins its arguments for the remote shell),
 * every argument after the pre-command must also be shell-inert: only SPIFFE IDs, entry IDs,
 * numbers, flags and configured paths reach argv, and free-form values (selector values,
 * hints) travel inside the JSON document on stdin.
 */

import { spawn } from "node:child_process";
import type { SpiffeId } from "../spiffe-id.js";
import {
  Code,
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
  sameSelectors,
  type WireBundle,
  type WireCreateResult,
  type WireDeleteResult,
  type WireEntry,
} from "./wire.js";

export interface CliRunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `file` with `args` (no shell), feeding `input` on stdin. Never rejects on a non-zero exit. */
export type CliRunner = (
  file: string,
  args: readonly string[],
  opts: { input: string; timeoutMs: number },
) => Promise<CliRunResult>;

export const spawnRunner: CliRunner = (file, args, opts) =>
  new Promise((resolve, reject) => {
    const child = spawn(file, [...args], {
      shell: false,
      stdio: ["pipe", "pipe", "pipe"],
      timeout: opts.timeoutMs,
      killSignal: "SIGKILL",
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (b: Buffer) => out.push(b));
    child.stderr.on("data", (b: Buffer) => err.push(b));
    // A command that exits without reading stdin must not crash us with EPIPE; its exit status tells.
    child.stdin.on("error", () => undefined);
    child.on("error", reject);
    child.on("close", (code, signal) =>
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: Buffer.concat(err).toString("utf8"),
      }),
    );
    child.stdin.end(opts.input);
  });

export interface SpireServerCliOptions {
  /** argv prefix, e.g. ["kubectl","exec","-i","-n","spire","spire-server-0","--"]; [] runs locally. */
  preCommand?: string[];
  /** The spire-server binary as the pre-command's target sees it. */
  serverBin: string;
  /** The admin socket on the target; absent uses the CLI's default. */
  socketPath?: string;
  /** Per-process deadline. */
  timeoutMs?: number;
  /** Replaceable for tests. */
  runner?: CliRunner;
}

// What no shell would expand, split or redirect.
const SHELL_INERT = /^[A-Za-z0-9._/:=@%+,-]+$/;
// eslint-disable-next-line no-control-regex -- refusing control characters is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/** The full argv for one CLI call; element 0 is the program. Pure, so it can be tested alone. */
export function buildCliArgv(
  cfg: { preCommand: readonly string[]; serverBin: string; socketPath?: string | undefined },
  command: readonly string[],
  flags: readonly string[],
): string[] {
  const tail = [...command, ...flags];
  if (cfg.socketPath !== undefined) tail.push("-socketPath", cfg.socketPath);
  tail.push("-output", "json");
  return [...cfg.preCommand, cfg.serverBin, ...tail];
}

const GRPC_CODES: Record<string, number> = {
  Canceled: 1,
  Unknown: 2,
  InvalidArgument: 3,
  DeadlineExceeded: 4,
  NotFound: 5,
  AlreadyExists: 6,
  PermissionDenied: 7,
  ResourceExhausted: 8,
  FailedPrecondition: 9,
  Aborted: 10,
  OutOfRange: 11,
  Unimplemented: 12,
  Internal: 13,
  Unavailable: 14,
  DataLoss: 15,
  Unauthenticated: 16,
};

/** The gRPC code in the CLI's "rpc error: code = NotFound desc = …" message, or -1. */
export function grpcCodeFromStderr(stderr: string): number {
  const m = /code = ([A-Za-z]+)/.exec(stderr);
  return (m?.[1] ? GRPC_CODES[m[1]] : undefined) ?? -1;
}

export class SpireServerCli implements SpireRegistration {
  private readonly preCommand: readonly string[];
  private readonly serverBin: string;
  private readonly socketPath: string | undefined;
  private readonly timeoutMs: number;
  private readonly runner: CliRunner;

  constructor(opts: SpireServerCliOptions) {
    const pre = opts.preCommand ?? [];
    for (const a of pre) {
      if (typeof a !== "string" || a === "" || CONTROL.test(a)) {
        throw new InvalidRegistrationError(
          "pre-command argument",
          a,
          "use non-empty words without control characters",
        );
      }
    }
    if (!SHELL_INERT.test(opts.serverBin ?? "")) {
      throw new InvalidRegistrationError(
        "spire-server binary",
        opts.serverBin,
        "use a path of letters, digits and . _ / - only",
      );
    }
    if (
      opts.socketPath !== undefined &&
      !(opts.socketPath.startsWith("/") && SHELL_INERT.test(opts.socketPath))
    ) {
      throw new InvalidRegistrationError(
        "SPIRE admin socket path",
        opts.socketPath,
        "use an absolute path of letters, digits and . _ / - only",
      );
    }
    this.preCommand = [...pre];
    this.serverBin = opts.serverBin;
    this.socketPath = opts.socketPath;
    this.timeoutMs = opts.timeoutMs ?? 60_000;
    this.runner = opts.runner ?? spawnRunner;
  }

  async createJoinToken(opts: { ttlSeconds: number; agentId?: SpiffeId }): Promise<JoinToken> {
    const flags = ["-ttl", String(validateTtl(opts.ttlSeconds))];
    if (opts.agentId) flags.push("-spiffeID", validateSpiffeId("agent ID", opts.agentId).toString());
    const res = (await this.run("token generate", ["token", "generate"], flags)) as {
      value?: string;
      expires_at?: string;
    };
    const expiresAt = fromEpochSeconds(res.expires_at);
    if (!res.value || !expiresAt)
      throw new SpireError("token generate", -1, "output without token or expiry");
    return { token: res.value, expiresAt };
  }

  async batchCreateEntries(entries: EntrySpec[]): Promise<CreateEntryResult[]> {
    for (const e of entries) validateEntrySpec(e);
    if (entries.length === 0) return [];
    // `-data -` reads the whole batch from stdin: one process and one BatchCreateEntry call, and
    // no file has to exist where the pre-command runs. The document is the CLI's own
    // RegistrationEntries JSON (encoding/json field names, not protojson).
    const doc = {
      entries: entries.map((e) => ({
        spiffe_id: e.spiffeId.toString(),
        parent_id: e.parentId.toString(),
        selectors: e.selectors.map((s) => ({ type: s.type, value: s.value })),
        ...(e.x509SvidTtl ? { x509_svid_ttl: e.x509SvidTtl } : {}),
        ...(e.jwtSvidTtl ? { jwt_svid_ttl: e.jwtSvidTtl } : {}),
        ...(e.expiresAt ? { entryExpiry: Math.floor(e.expiresAt.getTime() / 1000) } : {}),
        ...(e.hint ? { hint: e.hint } : {}),
      })),
    };
    const res = (await this.run(
      "entry create",
      ["entry", "create"],
      ["-data", "-"],
      JSON.stringify(doc),
    )) as {
      results?: WireCreateResult[];
    };
    const wire = res.results ?? [];
    if (wire.length !== entries.length) {
      throw new SpireError("entry create", -1, `${wire.length} results for ${entries.length} entries`);
    }
    const results = wire.map(fromWireCreateResult);
    // The CLI overwrites the entry of a failed result with the requested one, dropping the id SPIRE
    // returned for ALREADY_EXISTS, so look the existing entry up.
    const byTarget = new Map<string, Entry[]>();
    for (const [i, r] of results.entries()) {
      const spec = entries[i];
      if (r.status !== "error" || r.code !== Code.ALREADY_EXISTS || !spec) continue;
      const key = `${spec.spiffeId} ${spec.parentId}`;
      let candidates = byTarget.get(key);
      if (!candidates) {
        candidates = await this.listEntries({ bySpiffeId: spec.spiffeId, byParentId: spec.parentId });
        byTarget.set(key, candidates);
      }
      const existing = candidates.find((c) => sameSelectors(c.selectors, spec.selectors));
      if (existing) results[i] = { status: "exists", id: existing.id, entry: existing };
    }
    return results;
  }

  async listEntries(filter: EntryFilter): Promise<Entry[]> {
    const flags: string[] = [];
    if (filter.bySpiffeId)
      flags.push("-spiffeID", validateSpiffeId("bySpiffeId", filter.bySpiffeId).toString());
    if (filter.byParentId)
      flags.push("-parentID", validateSpiffeId("byParentId", filter.byParentId).toString());
    if (flags.length === 0) {
      throw new InvalidRegistrationError("entry filter", filter, "give bySpiffeId or byParentId");
    }
    // The CLI follows next_page_token itself and prints one merged list.
    const res = (await this.run("entry show", ["entry", "show"], flags)) as { entries?: WireEntry[] };
    return (res.entries ?? []).map(fromWireEntry);
  }

  async batchDeleteEntries(ids: string[]): Promise<DeleteEntryResult[]> {
    for (const id of ids) validateEntryId(id);
    if (ids.length === 0) return [];
    // `-file -` takes a BatchDeleteEntryRequest on stdin: one process for the whole batch.
    const res = (await this.run(
      "entry delete",
      ["entry", "delete"],
      ["-file", "-"],
      JSON.stringify({ ids }),
    )) as {
      results?: WireDeleteResult[];
    };
    return ids.map((id, i) => fromWireDeleteResult(res.results?.[i] ?? {}, id));
  }

  async evictAgent(id: SpiffeId): Promise<void> {
    await this.run(
      "agent evict",
      ["agent", "evict"],
      ["-spiffeID", validateSpiffeId("agent ID", id).toString()],
    );
  }

  async getBundle(): Promise<TrustBundle> {
    // With -output json the CLI prints the Bundle message itself (its -format flag applies only to
    // pretty output), which carries the DER authorities and JWT keys we want.
    return fromWireBundle((await this.run("bundle show", ["bundle", "show"], [])) as WireBundle);
  }

  close(): void {
    // Nothing is held between calls.
  }

  /** The argv a call would run; exposed for tests and for logging what the server would do. */
  argv(command: readonly string[], flags: readonly string[]): string[] {
    const argv = buildCliArgv(
      { preCommand: this.preCommand, serverBin: this.serverBin, socketPath: this.socketPath },
      command,
      flags,
    );
    for (const a of argv.slice(this.preCommand.length)) {
      if (!SHELL_INERT.test(a)) {
        throw new InvalidRegistrationError("spire-server argument", a, "internal error: unvalidated value");
      }
    }
    return argv;
  }

  private async run(operation: string, command: string[], flags: string[], input = ""): Promise<unknown> {
    const [file, ...args] = this.argv(command, flags);
    if (!file) throw new Error("empty argv");
    let r: CliRunResult;
    try {
      r = await this.runner(file, args, { input, timeoutMs: this.timeoutMs });
    } catch (err) {
      throw new SpireError(operation, -1, `cannot run ${file}: ${(err as Error).message}`);
    }
    if (r.signal) {
      throw new SpireError(
        operation,
        r.signal === "SIGKILL" ? Code.DEADLINE_EXCEEDED : -1,
        `${file} killed by ${r.signal} (deadline ${this.timeoutMs} ms)`,
      );
    }
    if (r.code !== 0) {
      const msg = r.stderr.trim().split("\n").filter(Boolean).pop() ?? `exit code ${r.code}`;
      throw new SpireError(operation, grpcCodeFromStderr(r.stderr), msg);
    }
    try {
      return r.stdout.trim() ? JSON.parse(r.stdout) : {};
    } catch {
      throw new SpireError(operation, -1, `output is not JSON: ${r.stdout.slice(0, 200)}`);
    }
  }
}
