/**
 * One method of the data-prep benchmark, run by bench/data-prep.ts in a process of its own so that
 * the peak RSS it reports is that method's alone (an entry point, not via run.js, which would load
 * every benchmark's modules). Prints one JSON line (ChildReport) on stdout.
 *
 *   node dist/bench/data-prep-child.js <ours|original> <input dir> <remote name> <chunk bytes> <in flight> [auto|sftp]
 *
 * Only what the method needs is loaded, and only when it needs it: "ours" must not carry openpgp.js
 * or node-tar on the calling thread, since data-prep does not either.
 */

import { createReadStream } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ArtifactSecret } from "../client/artifact/secret.js";
import { SshSession } from "../client/ssh/ssh-session.js";
import { uploadStream, type UploadOptions } from "../client/ssh/upload.js";
import { loadStackEnv, sshUser } from "../test/support/stack-env.js";
import { sampler, vmHwm } from "./peak-rss.js";

/** What the child prints. */
export interface ChildReport {
  /** From before the SSH connection to the artifact renamed into place. */
  seconds: number;
  ciphertextBytes: number;
  /**
   * Peak RSS of this process image, all threads (VmHWM). Not getrusage's maxrss: Linux starts that
   * from the forking parent's RSS, so a child of a big parent would report the parent's size.
   */
  maxRssBytes: number;
  /** The largest peak RSS among this process's own children (GNU tar), sampled while they ran. */
  childMaxRssBytes: number;
}

async function main(argv: string[]): Promise<void> {
  const [method, input, name, chunk, inFlight, transport = "auto"] = argv;
  if (!method || !input || !name || !chunk || !inFlight) {
    throw new Error(
      "usage: data-prep-child <ours|original> <input> <name> <chunk bytes> <in flight> [auto|sftp]",
    );
  }
  if (transport !== "auto" && transport !== "sftp")
    throw new Error(`unknown transport ${JSON.stringify(transport)}`);
  const env = loadStackEnv();
  const alice = sshUser(env, "alice");
  const secret = ArtifactSecret.generate();
  const target: UploadOptions = {
    dir: alice.scratch,
    name,
    chunkSize: Number(chunk),
    maxInFlight: Number(inFlight),
    transport,
  };
  const kids = sampler();
  const t0 = process.hrtime.bigint();
  const session = await SshSession.connect({
    host: env.ssh.host,
    port: env.ssh.port,
    username: alice.name,
    privateKeyPath: alice.key,
    knownHostsPath: env.ssh.known_hosts,
  });
  let ciphertextBytes: number;
  try {
    if (method === "ours") ciphertextBytes = await ours(input, secret, session, target);
    else if (method === "original") ciphertextBytes = await originalWay(input, secret, session, target);
    else throw new Error(`unknown method ${JSON.stringify(method)}`);
  } finally {
    session.close();
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const report: ChildReport = {
    seconds,
    ciphertextBytes,
    maxRssBytes: await vmHwm("self"),
    childMaxRssBytes: await kids.stop(),
  };
  process.stdout.write(JSON.stringify(report) + "\n");
}

/**
 * As data-prep ships it: tar + encryption in the worker, the upload here. uploadStream hashes what it
 * sends (that sha256 goes into the info file), so the artifact stream need not hash too.
 */
async function ours(
  input: string,
  secret: ArtifactSecret,
  session: SshSession,
  target: UploadOptions,
): Promise<number> {
  const { openArtifactStream } = await import("../client/artifact/artifact-stream.js");
  const artifact = await openArtifactStream(input, secret, { digest: false });
  return (await uploadStream(session, artifact.stream, target)).bytes;
}

/** (b): everything in memory at once, as the original did; then a local file, then the upload. */
async function originalWay(
  input: string,
  secret: ArtifactSecret,
  session: SshSession,
  target: UploadOptions,
): Promise<number> {
  const { tarDirectory } = await import("../client/artifact/tar-stream.js");
  const openpgp = await import("openpgp");
  const parts: Buffer[] = [];
  for await (const chunk of await tarDirectory(input)) parts.push(chunk as Buffer);
  const tarball = Buffer.concat(parts);
  parts.length = 0;
  const encrypted = await openpgp.encrypt({
    message: await openpgp.createMessage({ binary: tarball }),
    passwords: [secret.passphrase()],
    format: "binary",
    config: {
      preferredSymmetricAlgorithm: openpgp.enums.symmetric.aes256,
      aeadProtect: false,
      preferredCompressionAlgorithm: openpgp.enums.compression.uncompressed,
    },
  });
  const dir = await mkdtemp(join(tmpdir(), "hpcs-bench-original-"));
  try {
    const file = join(dir, "artifact.gpg");
    await writeFile(file, encrypted, { mode: 0o600 });
    return (await uploadStream(session, createReadStream(file), target)).bytes;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`data-prep-child: ${(err as Error).message.split("\n", 1)[0]}\n`);
  process.exitCode = 1;
});
