import { validateName } from "../../lib/names.js";
import type { VaultClient } from "../../lib/vault/vault-client.js";
import { isCasMismatch } from "./backend-error.js";

/**
 * Which secrets a client has granted, so listGrants can find them. SPIRE cannot list entries by an ID
 * prefix (only by exact SPIFFE ID or parent), the grant entries' parents are node IDs shared by all
 * clients, and VaultClient lists neither policies nor kv keys; so the server keeps a small per-client
 * index in kv at `<kv>/data/hpcs-server/grants/<client-id>`: `{ secrets: { <secret>: <ISO time> } }`.
 *
 * The index is a hint, never the authority: grant adds the name before creating anything and revoke
 * removes it after deleting everything, so the index is always a superset of the real grants, and
 * listGrants shows only names that still have SPIRE entries. Updates are read-modify-write with kv
 * check-and-set, retried, so two concurrent grants of one client do not lose each other's name.
 */

export type IndexVault = Pick<VaultClient, "kvRead" | "kvWrite">;

const RETRIES = 8;

export class GrantIndex {
  constructor(
    private readonly vault: IndexVault,
    private readonly prefix = "hpcs-server/grants",
  ) {}

  async secrets(clientId: string): Promise<string[]> {
    const cur = await this.vault.kvRead(this.path(clientId));
    return Object.keys(secretsOf(cur?.data)).sort();
  }

  /** Adds secret; returns false when it was already listed (so a rollback must not remove it). */
  add(clientId: string, secret: string, at: Date): Promise<boolean> {
    return this.update(clientId, (s) => {
      if (secret in s) return false;
      s[secret] = at.toISOString();
      return true;
    });
  }

  /** Removes secret; returns false when it was not listed. */
  remove(clientId: string, secret: string): Promise<boolean> {
    return this.update(clientId, (s) => {
      if (!(secret in s)) return false;
      delete s[secret];
      return true;
    });
  }

  private async update(clientId: string, change: (s: Record<string, string>) => boolean): Promise<boolean> {
    const path = this.path(clientId);
    for (let attempt = 0; ; attempt++) {
      const cur = await this.vault.kvRead(path);
      const secrets = { ...secretsOf(cur?.data) };
      if (!change(secrets)) return false;
      try {
        await this.vault.kvWrite(path, { secrets }, { cas: cur?.version ?? 0 });
        return true;
      } catch (err) {
        if (!isCasMismatch(err) || attempt >= RETRIES) throw err;
      }
    }
  }

  private path(clientId: string): string {
    return `${this.prefix}/${validateName("client", clientId)}`;
  }
}

function secretsOf(data: Record<string, unknown> | undefined): Record<string, string> {
  const s = data?.secrets;
  if (!s || typeof s !== "object" || Array.isArray(s)) return {};
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(s as Record<string, unknown>)) out[k] = String(v);
  return out;
}
