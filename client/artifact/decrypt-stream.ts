/**
 * OpenPGP ciphertext Readable (as written by encrypt-stream.ts, or by `gpg --symmetric`) → plaintext
 * Readable, for the results path and the tests.
 *
 * Integrity: SEIPD v1 is authenticated only by the MDC at the very end. openpgp.js therefore, by
 * default, holds the whole plaintext back until the MDC has checked out — safe but memory grows with
 * size. `streamUnauthenticated: true` releases plaintext as it is decrypted and reports a bad MDC as an
 * 'error' at the end instead; the caller must then treat what it wrote as untrusted until the stream
 * ended cleanly (e.g. extract into a temporary directory and rename it only on success).
 */

import { Readable } from "node:stream";
import type { ReadableStream as NodeWebReadableStream } from "node:stream/web";
import * as openpgp from "openpgp";
import type { ArtifactSecret } from "./secret.js";

export interface DecryptOptions {
  /** Release plaintext before the MDC is verified (see the module comment). Default false. */
  streamUnauthenticated?: boolean;
}

/** Rejects with a one-line error (wrong passphrase, not OpenPGP) before any plaintext is produced. */
export async function decryptStream(
  ciphertext: Readable,
  secret: ArtifactSecret,
  options: DecryptOptions = {},
): Promise<Readable> {
  const config: openpgp.PartialConfig = {
    allowUnauthenticatedStream: options.streamUnauthenticated ?? false,
  };
  const web = Readable.toWeb(ciphertext) as NodeWebReadableStream<Uint8Array>;
  try {
    const message = await openpgp.readMessage({ binaryMessage: web, config });
    const { data } = await openpgp.decrypt({
      message,
      passwords: [secret.passphrase()],
      format: "binary",
      config,
    });
    return Readable.fromWeb(data as NodeWebReadableStream<Uint8Array>);
  } catch (err) {
    ciphertext.destroy();
    // openpgp.js messages are one line and carry no key material ("Error decrypting message: ...").
    throw new Error(`decrypt artifact: ${firstLine((err as Error).message)}`);
  }
}

function firstLine(s: string): string {
  return s.split("\n", 1)[0] ?? "";
}
