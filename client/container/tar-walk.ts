/**
 * Walks a tar byte stream entry by entry, in archive order, with synchronous handlers.
 *
 * Why synchronous: the order of entries is the meaning of an image layer (a whiteout removes what
 * lower layers made, a later entry replaces an earlier one), and node-tar's parser moves on to the
 * next header as soon as an entry without a body ends. Handlers that do their filesystem work
 * synchronously (inside the `entry` event and each `data` event) can never be overtaken by the next
 * entry, need no queue, and consume each chunk as it arrives: nothing is buffered beyond the chunk
 * being parsed, whatever the size of the archive.
 *
 * The input must already be decompressed (callers gunzip it themselves so that they can hash what
 * they extract); the parser's own sniffing for brotli/zstd is switched off, and `strict` turns every
 * malformed header or truncated body into an error instead of a warning.
 */

import { Parser, type ReadEntry } from "tar";

/** What a handler returns for an entry whose body it wants; entries without a sink are skipped. */
export interface TarEntrySink {
  data(chunk: Buffer): void;
  end(): void;
}

export type TarEntryHandler = (entry: ReadEntry) => TarEntrySink | undefined;

/**
 * Feeds `source` through a tar parser, calling `onEntry` for each entry. Rejects with the first error
 * of the parser, of a handler, of the source, or with the abort reason; handlers are not called again
 * after an error.
 */
export async function walkTar(
  source: AsyncIterable<Buffer | Uint8Array>,
  onEntry: TarEntryHandler,
  signal?: AbortSignal,
): Promise<void> {
  const parser = new Parser({ strict: true, brotli: false, zstd: false });
  let failure: unknown;
  let ended = false;
  const fail = (err: unknown): void => {
    failure ??= err;
  };
  parser.on("error", fail);
  parser.on("end", () => {
    ended = true;
  });
  parser.on("entry", (entry: ReadEntry) => {
    if (failure !== undefined) {
      entry.resume();
      return;
    }
    let sink: TarEntrySink | undefined;
    try {
      sink = onEntry(entry);
    } catch (err) {
      fail(err);
    }
    if (!sink) {
      entry.resume();
      return;
    }
    const s = sink;
    entry.on("data", (chunk: Buffer) => {
      if (failure !== undefined) return;
      try {
        s.data(chunk);
      } catch (err) {
        fail(err);
      }
    });
    entry.on("end", () => {
      if (failure !== undefined) return;
      try {
        s.end();
      } catch (err) {
        fail(err);
      }
    });
  });

  // An archive of nothing but zero blocks is a valid empty tar (`RUN true` makes such a layer), which
  // node-tar reports as "unrecognized": remember whether any non-zero byte went by.
  let onlyZeros = true;
  for await (const chunk of source) {
    signal?.throwIfAborted();
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
    if (onlyZeros && buf.some((b) => b !== 0)) onlyZeros = false;
    parser.write(buf);
    if (failure !== undefined) throw failure;
  }
  signal?.throwIfAborted();
  parser.end();
  if (!ended && failure === undefined) {
    await new Promise<void>((resolve) => {
      parser.once("end", resolve);
      parser.once("error", () => resolve());
    });
  }
  if (failure !== undefined) {
    if (onlyZeros && (failure as { tarCode?: string }).tarCode === "TAR_BAD_ARCHIVE") return;
    throw failure;
  }
}
