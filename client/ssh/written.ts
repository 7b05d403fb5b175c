/** What both upload transports (cat-channel.ts, sftp-writer.ts) report, and how they read the source. */

import type { Readable } from "node:stream";
import { shortMessage } from "./sftp-errors.js";

export interface Written {
  bytes: number;
  /** Hex sha256 of the bytes sent, computed while streaming. */
  sha256: string;
}

/** The source (tar, encryption) failed, not the remote side: its message must not be read as a remote one. */
export class SourceError extends Error {}

/**
 * `source`'s chunks as Buffers; its own failure is thrown as SourceError. A consumer that stops early
 * (break or throw) ends the source too.
 */
export async function* sourceChunks(source: Readable): AsyncGenerator<Buffer> {
  const iterator = source[Symbol.asyncIterator]();
  try {
    for (;;) {
      let next: IteratorResult<unknown>;
      try {
        next = await iterator.next();
      } catch (err) {
        throw new SourceError(shortMessage(err), { cause: err });
      }
      if (next.done) return;
      yield typeof next.value === "string" ? Buffer.from(next.value) : (next.value as Buffer);
    }
  } finally {
    await iterator.return?.();
  }
}
