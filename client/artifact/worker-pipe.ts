/**
 * Bytes produced in a worker_threads Worker and streamed back to the calling thread; both ends of one
 * small protocol: `pipeThroughWorker` on the calling thread, `serveWorkerPipe` inside the worker. The
 * worker's input is either sent by the calling thread (a Readable there) or read by the worker itself
 * (e.g. tar of a directory), in which case the plaintext never touches the calling thread.
 *
 * Why a worker: encryption is the costliest stage of data-prep, and on the calling thread it competes
 * with the SSH cipher and hashing for one core. In a worker it runs on another.
 *
 * Memory stays flat whatever the size: each direction is credit-based. A side sends only as many
 * chunks as the receiver granted (`window`), and the receiver grants one back only when a chunk has
 * left its hands (the worker's transform consumed it; the caller's consumer read it). So at most
 * `window` chunks travel each way, plus what the transform holds.
 *
 * Chunks cross by transfer, not copy: both sides regroup bytes into fresh `chunkSize` buffers that
 * nothing else references (rechunk.ts), which costs one copy at memory speed and makes chunks whole and
 * aligned for the SFTP upload. On request the worker also hashes what it sends (sha256 + size, for the
 * info file), so that work is off the calling thread too.
 */

import { createHash, type Hash } from "node:crypto";
import { addAbortSignal, pipeline, Readable } from "node:stream";
import type { MessagePort, Worker } from "node:worker_threads";
import type { DigestResult } from "./digest.js";
import { GcPacer, type GcPacing } from "./gc-pacer.js";
import { ChunkPacker, Rechunk } from "./rechunk.js";

/** Calling thread → worker. */
type ToWorker =
  { kind: "data"; buffer: ArrayBuffer; length: number } | { kind: "end" } | { kind: "credit"; n: number };

/** Worker → calling thread. */
type FromWorker =
  | { kind: "data"; buffer: ArrayBuffer; length: number }
  | { kind: "end"; digest?: DigestResult }
  | { kind: "error"; message: string }
  | { kind: "credit"; n: number };

export interface WorkerPipeOptions {
  /** Destroys the output (and with it the worker) when aborted. */
  signal?: AbortSignal;
  /** Names the worker in error messages, e.g. "encryption worker". */
  label?: string;
}

export interface WorkerPipe {
  /** What the worker produces. */
  stream: Readable;
  /**
   * Resolves once the worker's job has started (its input opened, its transform set up), rejects with
   * the job's own one-line error if it could not: lets a caller refuse bad input before going on.
   */
  ready: Promise<void>;
  /**
   * sha256 + size of `stream`'s bytes once it ended (undefined if the job did not ask for them);
   * rejects if it fails. Already handled.
   */
  digest: Promise<DigestResult | undefined>;
}

/**
 * Bytes per chunk each way; the worker's output chunks are exactly this size. 255 KiB: the largest
 * SFTP write OpenSSH's sftp-server accepts (its limits@openssh.com), so an upload with the same
 * chunkSize sends each chunk as one WRITE with no re-gluing, in the fewest SSH packets. Smaller than
 * 1 MiB also keeps RSS down: ours' data-prep pipeline on the 1 GiB bench dataset peaked at ~160 MiB
 * with these chunks, ~205 MiB with 1 MiB ones.
 */
export const WORKER_CHUNK_BYTES = 255 * 1024;
/** Chunks in flight per direction: enough to keep both threads busy, few enough to stay small. */
const WINDOW = 4;
/**
 * Garbage collection pacing (see gc-pacer.ts): a scavenge on each side every 8 MiB; a full GC too on
 * the calling thread, whose heap is small, every 64 MiB. A full GC in the worker as well would save
 * another ~30 MiB of peak RSS at 4 GiB but cost ~2 s of CPU per GiB (its heap holds tar's caches).
 */
const CALLER_GC: GcPacing = { minorEveryBytes: 8 * 1024 * 1024, fullEveryBytes: 64 * 1024 * 1024 };
const WORKER_GC: GcPacing = { minorEveryBytes: 8 * 1024 * 1024 };

/**
 * Streams what `worker` produces, feeding it `input` if given (else the worker reads its own input).
 * Owns both from now on: the worker is terminated when the output ends, fails, is destroyed or
 * aborted, and `input` is destroyed on failure. Errors (of `input`, of the worker's work, the worker
 * crashing or exiting early) surface as one 'error' on the stream, emitted once the thread is gone.
 */
export function pipeThroughWorker(
  worker: Worker,
  input: Readable | undefined,
  opts: WorkerPipeOptions = {},
): WorkerPipe {
  const label = opts.label ?? "worker";
  let inputCredit = 0; // the worker grants its window once it is listening
  const stalled: Buffer[] = []; // chunks waiting for credit; `chunks` is paused meanwhile
  let inputDone = false;
  let owedToWorker = 0; // output chunks pushed since the last read(): credit to return
  let finished = false;
  let settle: { resolve: (d: DigestResult | undefined) => void; reject: (e: Error) => void } | undefined;
  const digest = new Promise<DigestResult | undefined>((resolve, reject) => (settle = { resolve, reject }));
  let started: { resolve: () => void; reject: (e: Error) => void } | undefined;
  const ready = new Promise<void>((resolve, reject) => (started = { resolve, reject }));
  // Handled here so that a caller who never awaits them does not crash the process on a failure.
  digest.catch(() => undefined);
  ready.catch(() => undefined);

  const post = (m: ToWorker, transfer?: ArrayBuffer[]): void => {
    if (!finished) worker.postMessage(m, transfer);
  };
  const chunks = input ? new Rechunk(WORKER_CHUNK_BYTES) : undefined;
  const pacer = new GcPacer(CALLER_GC);

  const stream = new Readable({
    // Object mode, one chunk per read(): in byte mode a paused consumer's read() (async iteration,
    // as the SFTP upload does) concatenates everything buffered, a copy that also breaks alignment.
    objectMode: true,
    highWaterMark: 1,
    read() {
      if (owedToWorker > 0) {
        post({ kind: "credit", n: owedToWorker });
        owedToWorker = 0;
      }
    },
    destroy(err, cb) {
      finished = true;
      worker.removeAllListeners("message");
      const why = err ?? new Error(`${label}: stream destroyed before its end`);
      started?.reject(why);
      settle?.reject(why);
      chunks?.destroy();
      input?.destroy();
      // Report only once the thread is gone, so a caller that sees the error can rely on it.
      worker.terminate().then(
        () => cb(err),
        () => cb(err),
      );
    },
  });
  const fail = (err: Error): void => {
    if (!finished) stream.destroy(err);
  };

  const send = (chunk: Buffer): void => {
    inputCredit--;
    // Rechunk's buffers are this chunk's alone (see rechunk.ts): transferring detaches nothing in use.
    post({ kind: "data", buffer: chunk.buffer as ArrayBuffer, length: chunk.length }, [
      chunk.buffer as ArrayBuffer,
    ]);
  };
  const pump = (): void => {
    while (stalled.length > 0 && inputCredit > 0) send(stalled.shift() as Buffer);
    if (stalled.length > 0) return;
    if (inputDone) {
      inputDone = false;
      post({ kind: "end" });
    } else chunks?.resume();
  };
  if (input && chunks) {
    chunks.on("data", (chunk: Buffer) => {
      if (inputCredit > 0 && stalled.length === 0) send(chunk);
      else {
        stalled.push(chunk);
        chunks.pause();
      }
    });
    chunks.on("end", () => {
      inputDone = true;
      pump();
    });
    // pipeline() forwards an error of `input` (tar failing on a file) to `chunks`, hence here.
    pipeline(input, chunks, (err) => {
      if (err) fail(err);
    });
  }

  worker.on("message", (m: FromWorker) => {
    switch (m.kind) {
      case "credit":
        started?.resolve();
        inputCredit += m.n;
        pump();
        break;
      case "data":
        owedToWorker++;
        pacer.count(m.length);
        stream.push(Buffer.from(m.buffer, 0, m.length));
        break;
      case "end":
        finished = true;
        settle?.resolve(m.digest);
        stream.push(null);
        void worker.terminate();
        break;
      case "error":
        // Already one line (the worker sends only the first), and specific: passed on as is.
        fail(new Error(m.message));
        break;
    }
  });
  worker.on("error", (err) => fail(new Error(`${label} crashed: ${firstLine(err.message)}`)));
  worker.on("exit", (code) => fail(new Error(`${label} exited (code ${code}) before the end of the stream`)));
  post({ kind: "credit", n: WINDOW });

  // Destroys `stream` with an AbortError on abort (and so terminates the worker); detaches when done.
  if (opts.signal) addAbortSignal(opts.signal, stream);
  return { stream, ready, digest };
}

/** What a worker runs over the bytes: synchronous steps, so the protocol below stays simple. */
export interface ChunkTransform {
  /** Takes input; returns the output it completed (may be none). */
  update(chunk: Uint8Array): Uint8Array[];
  /** End of input; returns the rest of the output. */
  final(): Uint8Array[];
}

export interface WorkerJob {
  transform: ChunkTransform;
  /** Hash what is sent (sha256 + size, reported at the end); costs ~1 s of CPU per GiB. */
  digest?: boolean;
  /** The input, when the worker reads it itself; otherwise what the calling thread sends. */
  source?: AsyncIterable<Uint8Array>;
}

/**
 * The worker's end: runs the job made by `start` and sends back what it produces, with its digest at
 * the end. Any error (of `start`, the source, the transform) goes back as one line; nothing else, and
 * no data, is ever logged.
 */
export function serveWorkerPipe(port: MessagePort, start: () => Promise<WorkerJob>): void {
  const received: Uint8Array[] = [];
  let inputEnded = false;
  let outputCredit = 0;
  let wake: (() => void) | undefined;
  const post = (m: FromWorker, transfer?: ArrayBuffer[]): void => port.postMessage(m, transfer);

  port.on("message", (m: ToWorker) => {
    if (m.kind === "data") received.push(new Uint8Array(m.buffer, 0, m.length));
    else if (m.kind === "end") inputEnded = true;
    else outputCredit += m.n;
    const w = wake;
    wake = undefined;
    w?.();
  });
  // One waiter at a time: the job below is a single sequential loop.
  const until = async (ready: () => boolean): Promise<void> => {
    while (!ready()) await new Promise<void>((r) => (wake = r));
  };

  async function* fromCallingThread(): AsyncIterable<Uint8Array> {
    for (;;) {
      await until(() => received.length > 0 || inputEnded);
      const chunk = received.shift();
      if (!chunk) return;
      yield chunk;
      // Consumed: the calling thread may send one more.
      post({ kind: "credit", n: 1 });
    }
  }

  const packer = new ChunkPacker(WORKER_CHUNK_BYTES);
  const pacer = new GcPacer(WORKER_GC);
  let hash: Hash | undefined;
  let size = 0;
  const send = async (pieces: Uint8Array[], last: boolean): Promise<void> => {
    const ready = pieces.flatMap((p) => packer.add(p));
    const tail = last ? packer.flush() : undefined;
    if (tail) ready.push(tail);
    for (const chunk of ready) {
      await until(() => outputCredit > 0);
      outputCredit--;
      hash?.update(chunk);
      size += chunk.length;
      pacer.count(chunk.length);
      post({ kind: "data", buffer: chunk.buffer as ArrayBuffer, length: chunk.length }, [
        chunk.buffer as ArrayBuffer,
      ]);
    }
  };

  const run = async (): Promise<void> => {
    const job = await start();
    if (job.digest) hash = createHash("sha256");
    // The first grant also tells the calling thread that the job started (see WorkerPipe.ready).
    post({ kind: "credit", n: WINDOW });
    for await (const chunk of job.source ?? fromCallingThread()) {
      // Big source chunks (tar reads up to 16 MiB at once) in chunk-sized views: what waits for
      // credit is then one chunk's output, not sixty.
      for (let at = 0; at < chunk.length; at += WORKER_CHUNK_BYTES) {
        await send(job.transform.update(chunk.subarray(at, at + WORKER_CHUNK_BYTES)), false);
      }
    }
    await send(job.transform.final(), true);
    post({ kind: "end", digest: hash ? { sha256: hash.digest("hex"), size } : undefined });
  };
  run().catch((err: unknown) => {
    post({ kind: "error", message: firstLine(err instanceof Error ? err.message : String(err)) });
  });
}

function firstLine(s: string): string {
  return s.split("\n", 1)[0] ?? "";
}
