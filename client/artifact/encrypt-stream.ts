/**
 * Plaintext Readable → OpenPGP ciphertext Readable, streaming (memory flat whatever the size).
 *
 * Format (DESIGN.md "Formats": Encryption): a symmetric-key ESK packet (the per-artifact passphrase,
 * iterated+salted S2K) followed by a SEIPD **v1** packet (CFB + MDC) with AES-256, no compression,
 * binary (not armored). SEIPD v1 rather than v2/AEAD because GnuPG 2.2, the stock version on compute
 * nodes, cannot read RFC 9580 AEAD packets; the unit tests check this with the real `gpg`. The bytes
 * are written by pgp-message-writer.ts (see there why not by openpgp.js's streaming encrypt).
 *
 * Runs on the calling thread; encrypt-worker.ts does the same on another core.
 */

import { pipeline, Transform, type Readable, type TransformCallback } from "node:stream";
import { PgpMessageWriter } from "./pgp-message-writer.js";
import { Rechunk } from "./rechunk.js";
import type { ArtifactSecret } from "./secret.js";

/**
 * Plaintext is regrouped into chunks of this size first: tar's output is mostly small pieces
 * (512-byte headers, small files), and each piece would otherwise cost a cipher and a hash call and a
 * small output buffer. Bigger buys nothing more and costs memory.
 */
export const ENCRYPT_CHUNK_BYTES = 1024 * 1024;

/**
 * Returns the ciphertext as a Node Readable. Errors of `plaintext` (e.g. tar failing on an unreadable
 * file) surface as an 'error' on the returned stream, so a pipeline() over it rejects and the upload
 * is abandoned rather than completed with a truncated artifact.
 */
export async function encryptStream(plaintext: Readable, secret: ArtifactSecret): Promise<Readable> {
  const writer = PgpMessageWriter.create(secret);
  const encrypt = new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback) {
      for (const piece of writer.update(chunk)) this.push(piece);
      cb();
    },
    flush(cb: TransformCallback) {
      for (const piece of writer.final()) this.push(piece);
      cb();
    },
  });
  // pipeline() (not pipe()) so that an error of `plaintext` fails the stream the caller reads.
  pipeline(plaintext, new Rechunk(ENCRYPT_CHUNK_BYTES), encrypt, () => undefined);
  return encrypt;
}
