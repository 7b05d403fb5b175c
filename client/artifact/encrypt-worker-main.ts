/**
 * Entry of the worker started by encrypt-worker.ts: encrypts with PgpMessageWriter (the one definition
 * of the artifact format) either what the calling thread sends or the input it opens itself, and
 * streams the ciphertext back (worker-pipe.ts).
 */

import { parentPort, workerData } from "node:worker_threads";
import type { EncryptWorkerData } from "./encrypt-worker.js";
import { PgpMessageWriter } from "./pgp-message-writer.js";
import { openPlaintext } from "./plaintext-source.js";
import { ArtifactSecret } from "./secret.js";
import { serveWorkerPipe } from "./worker-pipe.js";

if (!parentPort) throw new Error("encrypt-worker-main: must run as a worker thread (see encrypt-worker.ts)");
const data = workerData as EncryptWorkerData;
serveWorkerPipe(parentPort, async () => {
  const source = data.input === undefined ? undefined : await openPlaintext(data.input, data.tar);
  const transform = PgpMessageWriter.create(ArtifactSecret.fromPassphrase(data.passphrase));
  return { transform, source, digest: data.digest };
});
