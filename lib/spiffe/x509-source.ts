/**
 * The process's current X509-SVID, kept up to date from the Workload API's FetchX509SVID stream
 * (modelled on go-spiffe's workloadapi.X509Source): every rotation replaces it, and a broken stream is
 * reopened with bounded exponential backoff, the last good SVID staying in use meanwhile.
 */

import { status } from "@grpc/grpc-js";
import { type Watch, WorkloadApiError, type WorkloadClient, type X509Context } from "./workload-client.js";
import type { X509Svid } from "./x509-svid.js";

export interface X509SourceOptions {
  /** Chooses among several SVIDs; default: the first, as go-spiffe does. */
  pick?: (svids: X509Svid[]) => X509Svid | undefined;
  /** First reconnect delay; doubles up to maxBackoffMs. Defaults 1 s and 30 s. */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** Called with every new SVID (e.g. to reload a TLS context). */
  onUpdate?: (svid: X509Svid) => void;
  /** Called on every stream failure, for logging; the source retries by itself. */
  onError?: (err: WorkloadApiError) => void;
}

export class X509Source {
  private svid: X509Svid | undefined;
  private federated: Map<string, X509Svid["bundle"]> = new Map();
  private lastError: WorkloadApiError | undefined;
  /** A failure retrying cannot fix (the agent called the request malformed); ends the source. */
  private fatal: WorkloadApiError | undefined;
  private watch: Watch | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private backoffMs: number;
  private closed = false;
  private readonly waiters = new Set<() => void>();
  private readonly initialBackoffMs: number;
  private readonly maxBackoffMs: number;

  /** Starts watching at once; the client stays the caller's to close, after this source. */
  constructor(
    private readonly client: WorkloadClient,
    private readonly opts: X509SourceOptions = {},
  ) {
    this.initialBackoffMs = opts.initialBackoffMs ?? 1000;
    this.maxBackoffMs = opts.maxBackoffMs ?? 30_000;
    this.backoffMs = this.initialBackoffMs;
    this.connect();
  }

  /** The latest SVID; throws, with the reason, when there is none (yet). */
  current(): X509Svid {
    if (this.closed) throw new Error("X509Source is closed");
    if (this.svid) return this.svid;
    throw new Error(`X509Source: no X509-SVID yet${this.reason()}`);
  }

  /** CA certificates of foreign trust domains from the latest message, keyed by trust domain name. */
  federatedBundles(): Map<string, X509Svid["bundle"]> {
    return new Map(this.federated);
  }

  /** Resolves with the first SVID; rejects after timeoutMs, on close, or on a fatal error. */
  waitReady(timeoutMs: number): Promise<X509Svid> {
    return new Promise((ok, fail) => {
      // eslint-disable-next-line prefer-const -- check() may run (and clear it) before it is set
      let timer: NodeJS.Timeout | undefined;
      const check = (): boolean => {
        let err: Error | undefined;
        if (this.closed) err = new Error("X509Source closed before an X509-SVID arrived");
        else if (this.fatal) err = this.fatal;
        else if (!this.svid) return false;
        clearTimeout(timer);
        this.waiters.delete(check);
        if (err) fail(err);
        else ok(this.svid as X509Svid);
        return true;
      };
      if (check()) return;
      this.waiters.add(check);
      timer = setTimeout(() => {
        this.waiters.delete(check);
        fail(
          new Error(
            `X509Source: no X509-SVID from the workload API at ${this.client.socketPath} within ${timeoutMs} ms${this.reason()}`,
          ),
        );
      }, timeoutMs);
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.watch?.close();
    this.wake();
  }

  private connect(): void {
    try {
      this.watch = this.client.watchX509Svids(
        (ctx) => this.update(ctx),
        (err) => this.broken(err),
      );
    } catch (err) {
      // Only a closed client throws here; nothing to retry.
      this.fatal = err instanceof WorkloadApiError ? err : new WorkloadApiError((err as Error).message);
      this.wake();
    }
  }

  private update(ctx: X509Context): void {
    const svid = (this.opts.pick ?? ((s: X509Svid[]) => s[0]))(ctx.svids);
    if (!svid) {
      this.lastError = new WorkloadApiError(
        `workload API at ${this.client.socketPath}: none of the ${ctx.svids.length} X509-SVIDs suits this source's pick()`,
      );
      return;
    }
    this.svid = svid;
    this.federated = ctx.federatedBundles;
    this.lastError = undefined;
    this.backoffMs = this.initialBackoffMs;
    this.opts.onUpdate?.(svid);
    this.wake();
  }

  private broken(err: WorkloadApiError): void {
    this.watch = undefined;
    if (this.closed) return;
    this.lastError = err;
    this.opts.onError?.(err);
    if (err.code === status.INVALID_ARGUMENT) {
      this.fatal = err;
      this.wake();
      return;
    }
    const delay = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, this.maxBackoffMs);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (!this.closed) this.connect();
    }, delay);
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }

  private reason(): string {
    const err = this.fatal ?? this.lastError;
    return err ? `: ${err.message}` : "";
  }
}
