import assert from "node:assert/strict";
import { Readable } from "node:stream";
import { Worker } from "node:worker_threads";
import { pipeThroughWorker } from "../../../../client/artifact/worker-pipe.js";
import { collect } from "./helpers.js";

type Mode = "throw" | "exit" | "crash" | "start";

function failingWorker(mode: Mode, afterBytes = 1024 * 1024): Worker {
  return new Worker(new URL("./fixtures/failing-worker.js", import.meta.url), {
    workerData: { mode, afterBytes },
  });
}

/** 4 MiB in 64 KiB chunks. */
function source(): Readable {
  return Readable.from(Array.from({ length: 64 }, () => Buffer.alloc(64 * 1024, 7)));
}

/** Runs the pipe to its end or error; resolves with the error and whether the worker had exited. */
async function failure(worker: Worker, input?: Readable): Promise<{ err: Error; exited: boolean }> {
  let exited = false;
  worker.once("exit", () => (exited = true));
  const { stream } = pipeThroughWorker(worker, input, { label: "test worker" });
  try {
    await collect(stream);
  } catch (err) {
    return { err: err as Error, exited };
  }
  throw new Error("the pipe did not fail");
}

describe("client/artifact/worker-pipe", () => {
  it("a transform that throws: one-line error on the stream, emitted after the worker stopped", async () => {
    const { err, exited } = await failure(failingWorker("throw"), source());
    assert.equal(err.message, "simulated transform failure");
    assert.ok(exited, "the worker had exited when the error was emitted");
  });

  it("a worker that exits early: the stream fails, naming the exit code", async () => {
    const { err } = await failure(failingWorker("exit"), source());
    assert.match(err.message, /^test worker exited \(code 3\) before the end of the stream$/);
  });

  it("an uncaught exception in the worker: the stream fails", async () => {
    const { err } = await failure(failingWorker("crash"), source());
    assert.match(err.message, /^test worker crashed: simulated crash$/);
  });

  it("a job that cannot start rejects `ready` with its error", async () => {
    const pipe = pipeThroughWorker(failingWorker("start"), source());
    pipe.stream.on("error", () => undefined);
    await assert.rejects(pipe.ready, /^Error: cannot start: simulated$/);
  });

  it("passes bytes through unchanged, in order, in whole chunks", async () => {
    const data = Buffer.from(Array.from({ length: 3_000_000 }, (_, i) => (i * 7) % 251));
    const parts = [];
    for (let i = 0; i < data.length; i += 65_537) parts.push(data.subarray(i, i + 65_537));
    const { stream } = pipeThroughWorker(failingWorker("throw", Infinity), Readable.from(parts));
    const chunks: Buffer[] = [];
    for await (const c of stream) chunks.push(c as Buffer);
    assert.ok(Buffer.concat(chunks).equals(data));
    assert.ok(
      chunks.slice(0, -1).every((c) => c.length === chunks[0]?.length),
      "whole chunks but the last",
    );
  });
});
