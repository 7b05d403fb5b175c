/**
 * Plaintext Readable → OpenPGP ciphertext Readable, streaming (memory flat whatever the size).
 *
 * Format (DESIGN.md "Formats": Encryption): a symmetric-key ESK packet (the per-artifact passphrase,
 * iterated+salted S2K) followed by a SEIPD **v1** packet (CFB + MDC) with AES-256, no compression,
 * binary (not armored). SEIPD v1 rather than v2/AEAD because GnuPG 2.2, the stock version on compute
 * nodes, cannot read RFC 9580 AEAD packets; the unit tests check this with the real `gpg`.
 *
 * Runs on the calling thread: openpgp.js does its own chunking and the caller can put the whole
 * pipeline in a worker if the event loop must stay free.
 */

import { Readable } from "node:stream";
import type { ReadableStream as NodeWebReadableStream } from "node:stream/web";
import * as openpgp from "openpgp";
import type { ArtifactSecret } from "./secret.js";

/**
 * Explicit rather than relying on openpgp.js defaults, so a future default change (v6 already makes
 * v6 keys/AEAD opt-in) cannot silently produce something GnuPG 2.2 rejects.
 */
const ENCRYPT_CONFIG: openpgp.PartialConfig = {
  preferredSymmetricAlgorithm: openpgp.enums.symmetric.aes256,
  aeadProtect: false,
  preferredCompressionAlgorithm: openpgp.enums.compression.uncompressed,
};

/**
 * Returns the ciphertext as a Node Readable. Errors of `plaintext` (e.g. tar failing on an unreadable
 * file) surface as an 'error' on the returned stream, so a pipeline() over it rejects and the upload
 * is abandoned rather than completed with a truncated artifact.
 */
export async function encryptStream(plaintext: Readable, secret: ArtifactSecret): Promise<Readable> {
  // Readable.toWeb pulls from the Node stream only as the web side reads (backpressure preserved).
  const web = Readable.toWeb(plaintext) as NodeWebReadableStream<Uint8Array>;
  const message = await openpgp.createMessage({ binary: web });
  const encrypted = await openpgp.encrypt({
    message,
    passwords: [secret.passphrase()],
    format: "binary",
    config: ENCRYPT_CONFIG,
  });
  return Readable.fromWeb(encrypted);
}
