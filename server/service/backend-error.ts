import { InvalidNameError } from "../../lib/names.js";
import { InvalidSpiffeIdError } from "../../lib/spiffe-id.js";
import { Code, InvalidRegistrationError, SpireError } from "../../lib/spire/registration.js";
import { InvalidVaultPathError } from "../../lib/vault/vault-paths.js";
import { VaultError } from "../../lib/vault/vault-error.js";
import { ServiceError } from "./types.js";

/**
 * Maps what the libraries throw to the service's error codes, so that every transport reports the
 * same code for the same failure. The libraries' messages are already one line and carry no token or
 * secret value (VaultError and SpireError are built from operation, path, status and the backend's
 * message only), so they are kept as the detail; anything unknown is reduced to its first line.
 */
export function toServiceError(err: unknown, doing: string): ServiceError {
  if (err instanceof ServiceError) return err;
  if (
    err instanceof InvalidNameError ||
    err instanceof InvalidRegistrationError ||
    err instanceof InvalidSpiffeIdError ||
    err instanceof InvalidVaultPathError
  ) {
    return new ServiceError("invalid_argument", err.message);
  }
  if (err instanceof VaultError) {
    // No status: Vault did not answer at all; anything else is a refusal or a bug on our side.
    const code = err.status === undefined || err.status >= 500 ? "unavailable" : "internal";
    return new ServiceError(code, `${doing}: ${err.message}`);
  }
  if (err instanceof SpireError) {
    const unreachable =
      err.code === Code.UNAVAILABLE || err.code === Code.DEADLINE_EXCEEDED || err.code === -1;
    return new ServiceError(unreachable ? "unavailable" : "internal", `${doing}: ${err.message}`);
  }
  const first = String((err as Error)?.message ?? err).split("\n")[0] ?? "";
  return new ServiceError("internal", `${doing}: ${first}`);
}

/** Vault's answer when a kv write's check-and-set version does not match the current one. */
export function isCasMismatch(err: unknown): boolean {
  return err instanceof VaultError && err.status === 400 && /check-and-set/i.test(err.detail);
}
