import { parseServerConfig, type ServerConfig } from "../../../../lib/config/server-config.js";
import type {
  CreateEntryResult,
  DeleteEntryResult,
  Entry,
  EntryFilter,
  EntrySpec,
  JoinToken,
  TrustBundle,
} from "../../../../lib/spire/registration.js";
import type { SpiffeId } from "../../../../lib/spiffe-id.js";
import type { JwtRoleSpec } from "../../../../lib/vault/jwt-role.js";
import type { KvMetadata, KvMetadataUpdate, KvSecret } from "../../../../lib/vault/vault-client.js";
import { VaultError } from "../../../../lib/vault/vault-error.js";

/** In-memory stand-ins for SpireRegistration and VaultClient: record every call, fail on demand. */

export function testConfig(agentModel: "site" | "per-job" = "per-job", extra = ""): ServerConfig {
  return parseServerConfig(
    `[spire-server]
address = spire.example.org
port = 8081
trust-domain = hpcs.test
[vault]
url = https://vault.example.org:8200
audience = vault
[hpcs-server]
agent-model = ${agentModel}
${extra}
`,
    "test.ini",
  );
}

class Recorder {
  calls: string[] = [];
  /** Method name → error to throw on its next call(s). */
  failOn = new Map<string, Error>();
  protected record(method: string): void {
    this.calls.push(method);
    const e = this.failOn.get(method);
    if (e) throw e;
  }
  /** Calls that change state. */
  writes(): string[] {
    return this.calls.filter(
      (c) => !/^(kvRead|kvReadMetadata|readPolicy|readJwtRole|listEntries|getBundle)$/.test(c),
    );
  }
}

export class FakeSpire extends Recorder {
  entries = new Map<string, Entry>();
  private seq = 0;
  /** Indexes (in the batch) of entries to refuse with a per-entry error. */
  refuseEntries = new Set<number>();
  bundle: TrustBundle = {
    trustDomain: "hpcs.test",
    x509Authorities: [],
    jwtAuthorities: [],
    refreshHintSeconds: 0,
    sequenceNumber: 1,
  };
  batches: EntrySpec[][] = [];

  async createJoinToken(opts: { ttlSeconds: number; agentId?: SpiffeId }): Promise<JoinToken> {
    this.record("createJoinToken");
    return {
      token: `tok-${opts.agentId?.toString() ?? ""}`,
      expiresAt: new Date(Date.now() + opts.ttlSeconds * 1000),
    };
  }

  async batchCreateEntries(specs: EntrySpec[]): Promise<CreateEntryResult[]> {
    this.record("batchCreateEntries");
    this.batches.push(specs);
    return specs.map((s, i) => {
      if (this.refuseEntries.has(i)) return { status: "error", code: 3, message: "refused by fake" };
      const key = entryKey(s);
      const existing = [...this.entries.values()].find((e) => entryKey(e) === key);
      if (existing) return { status: "exists", id: existing.id, entry: existing };
      const entry: Entry = { ...s, id: `e${++this.seq}` };
      this.entries.set(entry.id, entry);
      return { status: "created", id: entry.id, entry };
    });
  }

  async listEntries(f: EntryFilter): Promise<Entry[]> {
    this.record("listEntries");
    return [...this.entries.values()].filter(
      (e) =>
        (!f.bySpiffeId || e.spiffeId.equals(f.bySpiffeId)) &&
        (!f.byParentId || e.parentId.equals(f.byParentId)),
    );
  }

  async batchDeleteEntries(ids: string[]): Promise<DeleteEntryResult[]> {
    this.record("batchDeleteEntries");
    return ids.map((id) =>
      this.entries.delete(id) ? { id, status: "deleted" } : { id, status: "not-found" },
    );
  }

  async evictAgent(): Promise<void> {
    this.record("evictAgent");
  }

  async getBundle(): Promise<TrustBundle> {
    this.record("getBundle");
    return this.bundle;
  }

  close(): void {}
}

function entryKey(e: EntrySpec): string {
  const sel = e.selectors.map((s) => `${s.type}:${s.value}`).sort();
  return `${e.spiffeId.toString()}|${e.parentId.toString()}|${sel.join(",")}`;
}

interface KvItem {
  versions: Record<string, unknown>[];
  customMetadata: Record<string, string>;
}

export class FakeVault extends Recorder {
  kv = new Map<string, KvItem>();
  policies = new Map<string, string>();
  roles = new Map<string, JwtRoleSpec>();
  /** Runs inside kvWrite after the read of the current version and before the CAS check (races). */
  beforeCasCheck: (() => Promise<void>) | undefined;

  async kvRead(path: string): Promise<KvSecret | undefined> {
    this.record("kvRead");
    const item = this.kv.get(path);
    const data = item?.versions.at(-1);
    if (!item || !data) return undefined;
    return {
      data: structuredClone(data),
      version: item.versions.length,
      createdTime: "",
      customMetadata: item.customMetadata,
    };
  }

  async kvWrite(path: string, data: Record<string, unknown>, opts: { cas?: number } = {}): Promise<number> {
    this.record("kvWrite");
    const hook = this.beforeCasCheck;
    this.beforeCasCheck = undefined;
    if (hook) await hook();
    const item = this.kv.get(path) ?? { versions: [], customMetadata: {} };
    if (opts.cas !== undefined && opts.cas !== item.versions.length) {
      throw new VaultError(
        "kv write",
        `kv/data/${path}`,
        400,
        "check-and-set parameter did not match the current version",
      );
    }
    item.versions.push(structuredClone(data));
    this.kv.set(path, item);
    return item.versions.length;
  }

  async kvReadMetadata(path: string): Promise<KvMetadata | undefined> {
    this.record("kvReadMetadata");
    const item = this.kv.get(path);
    if (!item) return undefined;
    return {
      currentVersion: item.versions.length,
      customMetadata: { ...item.customMetadata },
      deleteVersionAfter: "0s",
    };
  }

  async kvWriteMetadata(path: string, u: KvMetadataUpdate): Promise<void> {
    this.record("kvWriteMetadata");
    const item = this.kv.get(path) ?? { versions: [], customMetadata: {} };
    item.customMetadata = { ...u.customMetadata };
    this.kv.set(path, item);
  }

  async kvDestroyAll(path: string): Promise<void> {
    this.record("kvDestroyAll");
    this.kv.delete(path);
  }

  async readPolicy(name: string): Promise<string | undefined> {
    this.record("readPolicy");
    return this.policies.get(name);
  }
  async writePolicy(name: string, hcl: string): Promise<void> {
    this.record("writePolicy");
    this.policies.set(name, hcl);
  }
  async deletePolicy(name: string): Promise<void> {
    this.record("deletePolicy");
    this.policies.delete(name);
  }
  async readJwtRole(name: string): Promise<JwtRoleSpec | undefined> {
    this.record("readJwtRole");
    return this.roles.get(name);
  }
  async writeJwtRole(name: string, spec: JwtRoleSpec): Promise<void> {
    this.record("writeJwtRole");
    this.roles.set(name, spec);
  }
  async deleteJwtRole(name: string): Promise<void> {
    this.record("deleteJwtRole");
    this.roles.delete(name);
  }
}

export class FakeLogger {
  warnings: { obj: Record<string, unknown>; msg: string }[] = [];
  warn(obj: Record<string, unknown>, msg: string): void {
    this.warnings.push({ obj, msg });
  }
}

export function boom(what: string): Error {
  return new VaultError(what, "x", 500, "injected failure");
}
