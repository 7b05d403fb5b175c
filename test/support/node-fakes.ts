/**
 * In-memory fakes of SPIRE registration and Vault kv v2 for the node-token unit tests; they
 * implement only what nodes.ts and node-attestation.ts call, with the real semantics that matter
 * (kv check-and-set, one result per batch entry, NOT_FOUND on evicting an unknown agent).
 */

import type { SpiffeId } from "../../lib/spiffe-id.js";
import {
  Code,
  type CreateEntryResult,
  type DeleteEntryResult,
  type Entry,
  type EntryFilter,
  type EntrySpec,
  type JoinToken,
  SpireError,
  type SpireRegistration,
  type TrustBundle,
  validateEntrySpec,
} from "../../lib/spire/registration.js";
import type { KvSecret, VaultClient } from "../../lib/vault/vault-client.js";
import { VaultError } from "../../lib/vault/vault-error.js";

export class FakeSpire implements SpireRegistration {
  entries: Entry[] = [];
  agents = new Set<string>();
  tokens: { token: string; ttlSeconds: number; agentId?: string }[] = [];
  calls: string[] = [];
  /** SPIFFE IDs batchCreateEntries refuses, to test roll-back. */
  refuse = new Set<string>();
  private n = 0;

  async createJoinToken(opts: { ttlSeconds: number; agentId?: SpiffeId }): Promise<JoinToken> {
    this.calls.push("createJoinToken");
    const token = `00000000-0000-0000-0000-${String(++this.n).padStart(12, "0")}`;
    this.tokens.push({ token, ttlSeconds: opts.ttlSeconds, agentId: opts.agentId?.toString() });
    return { token, expiresAt: new Date(Date.now() + opts.ttlSeconds * 1000) };
  }

  async batchCreateEntries(specs: EntrySpec[]): Promise<CreateEntryResult[]> {
    this.calls.push("batchCreateEntries");
    specs.forEach(validateEntrySpec);
    return specs.map((s) => {
      if (this.refuse.has(s.spiffeId.toString())) return { status: "error", code: 3, message: "refused" };
      const entry: Entry = { ...s, id: `e${++this.n}` };
      this.entries.push(entry);
      return { status: "created", id: entry.id, entry };
    });
  }

  async listEntries(f: EntryFilter): Promise<Entry[]> {
    this.calls.push("listEntries");
    return this.entries.filter(
      (e) =>
        (!f.byParentId || e.parentId.equals(f.byParentId)) &&
        (!f.bySpiffeId || e.spiffeId.equals(f.bySpiffeId)),
    );
  }

  async batchDeleteEntries(ids: string[]): Promise<DeleteEntryResult[]> {
    this.calls.push("batchDeleteEntries");
    return ids.map((id) => {
      const before = this.entries.length;
      this.entries = this.entries.filter((e) => e.id !== id);
      return before === this.entries.length ? { id, status: "not-found" } : { id, status: "deleted" };
    });
  }

  async evictAgent(id: SpiffeId): Promise<void> {
    this.calls.push("evictAgent");
    if (!this.agents.delete(id.toString())) throw new SpireError("DeleteAgent", Code.NOT_FOUND, "not found");
  }

  async getBundle(): Promise<TrustBundle> {
    throw new Error("not used");
  }

  close(): void {}
}

/** kv v2 with check-and-set, as VaultClient exposes it. */
export class FakeKv {
  store = new Map<string, { data: Record<string, unknown>; version: number }>();
  writes = 0;

  async kvWrite(path: string, data: Record<string, unknown>, opts: { cas?: number } = {}): Promise<number> {
    const cur = this.store.get(path);
    const version = cur?.version ?? 0;
    if (opts.cas !== undefined && opts.cas !== version) {
      throw new VaultError("kv write", `kv/data/${path}`, 400, "check-and-set parameter did not match");
    }
    this.writes++;
    this.store.set(path, { data: structuredClone(data), version: version + 1 });
    return version + 1;
  }

  async kvRead(path: string): Promise<KvSecret | undefined> {
    const cur = this.store.get(path);
    if (!cur) return undefined;
    return { data: structuredClone(cur.data), version: cur.version, createdTime: "", customMetadata: {} };
  }

  async kvDestroyAll(path: string): Promise<void> {
    this.store.delete(path);
  }

  asVault(): VaultClient {
    return this as unknown as VaultClient;
  }
}
