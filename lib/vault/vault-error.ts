/**
 * One Vault failure as one line: which operation, which path, the HTTP status and Vault's own message.
 * Built only from those four strings, so a token, a JWT or a secret value sent with the request can
 * never end up in a log line or a stack trace (no `cause` holding the HTTP client's request config).
 */
export class VaultError extends Error {
  constructor(
    /** What we tried, e.g. "kv read", "jwt login". */
    readonly operation: string,
    /** The Vault API path, e.g. "kv/data/hpcs/lab-1/data" (never carries a secret value). */
    readonly path: string,
    /** HTTP status, or undefined when Vault did not answer at all. */
    readonly status: number | undefined,
    /** Vault's first error message, or the network failure. */
    readonly detail: string,
  ) {
    super(`vault ${operation} ${path}: ${status === undefined ? "" : `${status} `}${detail}`);
    this.name = "VaultError";
  }

  /** 403: the token's policies do not allow this operation on this path. */
  get isPermissionDenied(): boolean {
    return this.status === 403;
  }

  get isNotFound(): boolean {
    return this.status === 404;
  }
}
