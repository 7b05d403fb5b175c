/**
 * The per-artifact secret: 256 fresh random bits, stored in Vault, used as the OpenPGP symmetric
 * passphrase. One artifact, one secret, never reused (DESIGN.md "Formats": Encryption).
 */

import { randomBytes, timingSafeEqual } from "node:crypto";
import { inspect } from "node:util";

const SECRET_BYTES = 32;
const REDACTED = "ArtifactSecret(<redacted>)";

/**
 * Text form: base64url without padding (43 ASCII characters). Chosen because the same string is
 * (a) the OpenPGP passphrase, which openpgp.js UTF-8-encodes and GnuPG reads as the first line of a
 * passphrase file, so it must be plain ASCII with no newline or whitespace; (b) stored as a Vault
 * KV value and possibly passed through shells/URLs, where `+`, `/` and `=` of plain base64 are a
 * nuisance. Hex would work as well; base64url is shorter for the same 256 bits.
 */
const TEXT_FORM = /^[A-Za-z0-9_-]{43}$/;

export class ArtifactSecret {
  // Kept private (a real #field) so that structured-clone, spread and JSON never see it.
  readonly #bytes: Buffer;

  private constructor(bytes: Buffer) {
    this.#bytes = bytes;
  }

  /** A fresh secret from the OS CSPRNG. */
  static generate(): ArtifactSecret {
    return new ArtifactSecret(randomBytes(SECRET_BYTES));
  }

  /** The secret as read back from Vault (its text form). Throws a one-line error naming no value. */
  static fromPassphrase(text: string): ArtifactSecret {
    if (!TEXT_FORM.test(text)) {
      throw new Error("artifact secret: expected 43 base64url characters (256 bits)");
    }
    return new ArtifactSecret(Buffer.from(text, "base64url"));
  }

  /** The OpenPGP passphrase; call it only where the value is handed to openpgp.js, Vault or a 0600 file. */
  passphrase(): string {
    return this.#bytes.toString("base64url");
  }

  /** Constant-time comparison, for tests and for checking a value read back from Vault. */
  equals(other: ArtifactSecret): boolean {
    return this.#bytes.length === other.#bytes.length && timingSafeEqual(this.#bytes, other.#bytes);
  }

  // Redaction: whatever path an accidental log takes (template string, JSON, console.log/pino's
  // util.inspect), the value never appears.
  toString(): string {
    return REDACTED;
  }

  toJSON(): string {
    return REDACTED;
  }

  [inspect.custom](): string {
    return REDACTED;
  }
}
