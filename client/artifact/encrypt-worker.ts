/**
 * encryptStream's encryption on another core: the work of pgp-message-writer.ts done in a
 * worker_threads Worker (encrypt-worker-main.ts), so that it overlaps the SSH cipher, hashing and
 * whatever else the calling thread does. Same format as encrypt-stream.ts (the same writer), so GnuPG
 * 2.2 decrypts it.
 */

import type { Readable } from "node:stream";
import { Worker } from "node:worker_threads";
import type { ArtifactSecret } from "./secret.js";
import type { TarTool } from "./tar-stream.js";
import { pipeThroughWorker, type WorkerPipe } from "./worker-pipe.js";

export interface EncryptInWorkerOptions {
  /** Aborting destroys the returned stream with an AbortError and terminates the worker. */
  signal?: AbortSignal;
}

export interface EncryptInputOptions extends EncryptInWorkerOptions {
  /** Also compute sha256 + size of the ciphertext (in the worker); default true. */
  digest?: boolean;
  /** Which tar archives a directory input; default "auto". */
  tar?: TarTool;
}

/** What encrypt-worker-main.ts expects in workerData. */
export interface EncryptWorkerData {
  passphrase: string;
  /** A directory or regular file the worker reads itself; absent: the calling thread sends plaintext. */
  input?: string;
  /** Hash the ciphertext too. */
  digest: boolean;
  tar?: TarTool;
}

/**
 * Ciphertext of `plaintext`, returned at once (the worker starts in the background). Memory is
 * bounded (about 1 MiB in flight each way, see worker-pipe.ts) whatever the size. Errors of `plaintext`
 * or of the encryption surface as one 'error' on the returned stream, after the worker has stopped;
 * destroying the returned stream terminates the worker and destroys `plaintext`.
 */
export function encryptInWorker(
  plaintext: Readable,
  secret: ArtifactSecret,
  opts: EncryptInWorkerOptions = {},
): Readable {
  return startWorker({ passphrase: secret.passphrase(), digest: false }, plaintext, opts).stream;
}

/**
 * Ciphertext of a directory (tarred) or regular file that the worker reads itself, so that the
 * plaintext never passes through the calling thread; with the ciphertext's sha256 + size (undefined
 * with `digest: false`), computed in the worker too. Rejects with the input's one-line error
 * (missing, unreadable, not a dir or file) before any ciphertext exists.
 */
export async function encryptInputInWorker(
  input: string,
  secret: ArtifactSecret,
  opts: EncryptInputOptions = {},
): Promise<Omit<WorkerPipe, "ready">> {
  const data = { passphrase: secret.passphrase(), input, digest: opts.digest ?? true, tar: opts.tar };
  const pipe = startWorker(data, undefined, opts);
  // Until `ready`, a failure is reported by its rejection; the stream's own 'error' (emitted once the
  // thread is gone) must then not go unhandled. On success the caller's listeners take over.
  const quiet = (): void => undefined;
  pipe.stream.on("error", quiet);
  await pipe.ready;
  pipe.stream.off("error", quiet);
  return { stream: pipe.stream, digest: pipe.digest };
}

function startWorker(
  data: EncryptWorkerData,
  plaintext: Readable | undefined,
  opts: EncryptInWorkerOptions,
): WorkerPipe {
  // The passphrase travels by workerData (a structured clone into the worker's heap), never argv or
  // env; ArtifactSecret itself cannot cross (its bytes are a private field), so the worker rebuilds it.
  const worker = new Worker(new URL("./encrypt-worker-main.js", import.meta.url), {
    workerData: data,
    resourceLimits: { maxYoungGenerationSizeMb: 8 },
  });
  return pipeThroughWorker(worker, plaintext, { signal: opts.signal, label: "encryption worker" });
}
