/**
 * A passthrough that hashes (sha256) and counts what flows through it: placed right before the
 * upload, it yields the ciphertext's `sha256` and `size` for the info file without a second read.
 */

import { createHash, type Hash } from "node:crypto";
import { Transform, type TransformCallback } from "node:stream";

export interface DigestResult {
  /** Lower-case hex. */
  sha256: string;
  /** Bytes. */
  size: number;
}

export class DigestStream extends Transform {
  readonly #hash: Hash = createHash("sha256");
  #size = 0;
  #result: DigestResult | undefined;

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.#hash.update(chunk);
    this.#size += chunk.length;
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    this.#result = { sha256: this.#hash.digest("hex"), size: this.#size };
    cb();
  }

  /**
   * The digest of everything that passed through. Throws before the input ended: a digest of a prefix
   * must never end up in an info file.
   */
  result(): DigestResult {
    if (!this.#result) throw new Error("digest: stream has not finished");
    return this.#result;
  }
}
