/**
 * Pipelined SFTP WRITEs, the upload's fallback transport (and its only one where the server runs no
 * commands). ssh2's `createWriteStream` waits for each WRITE's status before sending the next, so
 * throughput is bounded by round trips (~15 MB/s here). We keep up to `maxInFlight` WRITE requests
 * outstanding at increasing offsets, and pull from the source only when a slot is free, so memory
 * stays at about `maxInFlight × chunkSize` whatever the data size.
 */

import { createHash } from "node:crypto";
import type { Readable } from "node:stream";
import type { SFTPWrapper } from "ssh2";
import { sourceChunks, type Written } from "./written.js";

/**
 * Writes `source` to an open handle at increasing offsets with up to `maxInFlight` WRITEs outstanding,
 * hashing as it goes; a source failure is thrown as SourceError, a remote one as ssh2 reports it.
 */
export async function pipelinedWrite(
  sftp: SFTPWrapper,
  handle: Buffer,
  source: Readable,
  limits: { chunkSize: number; maxInFlight: number },
): Promise<Written> {
  const hash = createHash("sha256");
  let position = 0;
  let inFlight = 0;
  let failure: unknown;
  let wake: (() => void) | undefined;
  // Small source chunks (openpgp emits many) are gathered into full requests; big ones are sliced.
  let pending: Buffer[] = [];
  let pendingLen = 0;

  const settled = (): void => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const send = (buf: Buffer): void => {
    const at = position;
    position += buf.length;
    inFlight++;
    sftp.write(handle, buf, 0, buf.length, at, (err) => {
      inFlight--;
      if (err && failure === undefined) failure = err;
      settled();
    });
  };
  const waitBelow = async (n: number): Promise<void> => {
    while (inFlight > n && failure === undefined) await new Promise<void>((r) => (wake = r));
    if (failure !== undefined) throw failure;
  };
  const flushFull = async (): Promise<void> => {
    while (pendingLen >= limits.chunkSize) {
      await waitBelow(limits.maxInFlight - 1);
      const all = pending.length === 1 ? (pending[0] as Buffer) : Buffer.concat(pending, pendingLen);
      send(all.subarray(0, limits.chunkSize));
      const rest = all.subarray(limits.chunkSize);
      pending = rest.length ? [rest] : [];
      pendingLen = rest.length;
    }
  };

  try {
    for await (const chunk of sourceChunks(source)) {
      if (failure !== undefined) throw failure;
      hash.update(chunk);
      pending.push(chunk);
      pendingLen += chunk.length;
      await flushFull();
    }
    if (pendingLen > 0) {
      await waitBelow(limits.maxInFlight - 1);
      send(pending.length === 1 ? (pending[0] as Buffer) : Buffer.concat(pending, pendingLen));
    }
    await waitBelow(0);
  } catch (err) {
    // Let outstanding requests finish before the caller closes and unlinks the handle.
    while (inFlight > 0) await new Promise<void>((r) => (wake = r));
    throw err;
  }
  return { bytes: position, sha256: hash.digest("hex") };
}
