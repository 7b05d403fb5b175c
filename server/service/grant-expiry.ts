import { isValidName } from "../../lib/names.js";
import type { VaultClient } from "../../lib/vault/vault-client.js";
import { isCasMismatch } from "./backend-error.js";

/**
 * The deadlines of expiring grants, so the sweeper can find them: one kv record at
 * `<kv>/data/hpcs-server/grant-expiries`, `{ grants: { "<client-id>/<secret>": "<ISO time>" } }`.
 * SPIRE cannot list entries by expiry and the server's Vault policy lists nothing, so the deadline is
 * kept where the sweeper can read it in one call; the entries, the role's token TTL and the secret's
 * metadata carry it too (grants.ts). The latest grant of a secret sets its deadline (or clears it);
 * revoke clears it. Updates are read-modify-write with kv check-and-set, retried, like grant-index.ts.
 */

export type ExpiryVault = Pick<VaultClient, "kvRead" | "kvWrite">;

export interface GrantDeadline {
  clientId: string;
  secret: string;
  expiresAt: Date;
}

const RETRIES = 8;

export class GrantExpiries {
  constructor(
    private readonly vault: ExpiryVault,
    private readonly path = "hpcs-server/grant-expiries",
  ) {}

  /** Every recorded deadline; malformed keys or times (a hand-edited record) are skipped. */
  async all(): Promise<GrantDeadline[]> {
    const out: GrantDeadline[] = [];
    for (const [key, iso] of Object.entries(grantsOf((await this.vault.kvRead(this.path))?.data))) {
      const [clientId = "", secret = "", ...rest] = key.split("/");
      const expiresAt = new Date(iso);
      if (rest.length > 0 || !isValidName("client", clientId) || !isValidName("secret", secret)) continue;
      if (Number.isNaN(expiresAt.getTime())) continue;
      out.push({ clientId, secret, expiresAt });
    }
    return out;
  }

  async get(clientId: string, secret: string): Promise<Date | undefined> {
    const iso = grantsOf((await this.vault.kvRead(this.path))?.data)[`${clientId}/${secret}`];
    return iso === undefined ? undefined : new Date(iso);
  }

  /** Sets the deadline, or clears it when `expiresAt` is undefined; returns the previous one. */
  async set(clientId: string, secret: string, expiresAt: Date | undefined): Promise<Date | undefined> {
    const key = `${clientId}/${secret}`;
    for (let attempt = 0; ; attempt++) {
      const cur = await this.vault.kvRead(this.path);
      const grants = { ...grantsOf(cur?.data) };
      const before = grants[key];
      const previous = before === undefined ? undefined : new Date(before);
      const next = expiresAt?.toISOString();
      if (before === next) return previous;
      if (next === undefined) delete grants[key];
      else grants[key] = next;
      try {
        await this.vault.kvWrite(this.path, { grants }, { cas: cur?.version ?? 0 });
        return previous;
      } catch (err) {
        if (!isCasMismatch(err) || attempt >= RETRIES) throw err;
      }
    }
  }
}

function grantsOf(data: Record<string, unknown> | undefined): Record<string, string> {
  const g = data?.grants;
  if (!g || typeof g !== "object" || Array.isArray(g)) return {};
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(g as Record<string, unknown>)) out[k] = String(v);
  return out;
}
