/**
 * Checks for every string that becomes part of a Vault API path: mounts, kv paths, and policy/role
 * names. Nothing is escaped: a value either is safe as-is or is refused with one line saying why.
 */

const MOUNT = /^[a-z0-9](?:[a-z0-9_-]{0,62})(?:\/[a-z0-9](?:[a-z0-9_-]{0,62}))*$/;
const KV_SEGMENT = /^[A-Za-z0-9._-]{1,128}$/;
/** Vault's framework.GenericNameRegex (jwt role names): starts and ends with a word character. */
const VAULT_NAME = /^\w(?:[\w.-]*\w)?$/;
/**
 * Policy and role names are file names in Vault's `file` storage backend (`_<name>`), so they must stay
 * well below the 255-byte file-name limit of common file systems.
 */
export const MAX_VAULT_NAME = 250;

export class InvalidVaultPathError extends Error {
  constructor(what: string, value: string, why: string) {
    super(`invalid ${what} ${JSON.stringify(value)}: ${why}`);
    this.name = "InvalidVaultPathError";
  }
}

/** A secrets-engine or auth mount such as "kv" or "jwt" (nested mounts like "team/kv" allowed). */
export function checkMount(what: string, mount: string): string {
  if (!MOUNT.test(mount)) {
    throw new InvalidVaultPathError(what, mount, "use lower-case letters, digits, '_' or '-', e.g. kv");
  }
  return mount;
}

/** A path inside a kv-v2 mount, e.g. "hpcs/lab-1/dataset"; no empty, "." or ".." segments. */
export function checkKvPath(path: string): string {
  const segments = path.split("/");
  for (const s of segments) {
    if (!KV_SEGMENT.test(s) || s === "." || s === "..") {
      throw new InvalidVaultPathError(
        "kv path",
        path,
        "segments of letters, digits, '.', '_' or '-' (not '.' or '..'), separated by single '/'",
      );
    }
  }
  return path;
}

/**
 * A policy or role name. Vault lower-cases policy names, so upper case is refused here rather than
 * letting two names silently map to one policy.
 */
export function checkVaultName(what: string, name: string): string {
  if (name.length > MAX_VAULT_NAME) {
    throw new InvalidVaultPathError(what, name, `longer than ${MAX_VAULT_NAME} characters`);
  }
  if (!VAULT_NAME.test(name) || name !== name.toLowerCase()) {
    throw new InvalidVaultPathError(
      what,
      name,
      "use lower-case letters, digits, '_', '.' or '-', starting and ending with a letter or digit",
    );
  }
  return name;
}
