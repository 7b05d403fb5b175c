/**
 * Keeps dead stream buffers from piling up: a young-generation GC (scavenge, ~1 ms) every
 * `minorEveryBytes` of data passed through, and optionally a full GC every `fullEveryBytes`.
 *
 * Why: V8 frees an ArrayBuffer's memory only when a GC finds it dead, and large, short-lived buffers
 * (ciphertext chunks, tar reads, SSH packets) make it collect only once ~64 MiB of them have piled up
 * in an isolate; with two isolates (the encryption worker and the calling thread) that is up to
 * ~130 MiB of garbage on top of the working set. Measured: 1 MiB buffers streamed from a worker to
 * the calling thread peaked at ~160 MiB RSS unpaced, ~85 MiB with a scavenge every 16 MiB. Buffers
 * still in use at a scavenge are promoted and then wait for a full GC: cheap where the heap is small
 * (the calling thread: a few ms), costly where it is not (the worker holds tar's caches), hence the
 * full GC is optional.
 *
 * `gc` is not exposed by default; V8's `--expose-gc` set at run time makes it available in contexts
 * created afterwards, hence the fresh vm context. Only `{ type: "minor" }` is honoured as an option by
 * this V8 (Node 20); `gc()` without one is a full GC.
 */

import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

type Gc = (options?: { type: "minor" }) => void;

export interface GcPacing {
  minorEveryBytes: number;
  fullEveryBytes?: number;
}

export class GcPacer {
  readonly #gc: Gc;
  readonly #pacing: GcPacing;
  #sinceMinor = 0;
  #sinceFull = 0;

  constructor(pacing: GcPacing) {
    this.#pacing = pacing;
    this.#gc = exposedGc();
  }

  /** Counts `bytes` that went through; collects when a threshold is reached. */
  count(bytes: number): void {
    this.#sinceMinor += bytes;
    this.#sinceFull += bytes;
    const full = this.#pacing.fullEveryBytes;
    if (full !== undefined && this.#sinceFull >= full) {
      this.#sinceFull = this.#sinceMinor = 0;
      this.#gc();
    } else if (this.#sinceMinor >= this.#pacing.minorEveryBytes) {
      this.#sinceMinor = 0;
      this.#gc({ type: "minor" });
    }
  }
}

function exposedGc(): Gc {
  const existing = (globalThis as { gc?: Gc }).gc;
  if (typeof existing === "function") return existing;
  setFlagsFromString("--expose-gc");
  return runInNewContext("gc") as Gc;
}
