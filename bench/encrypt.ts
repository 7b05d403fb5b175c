/**
 * `npm run bench -- encrypt [--mib N] [--json]`: N MiB (default 1024) of incompressible data through
 * client/artifact's encrypt + digest to /dev/null, beside `gpg --symmetric --cipher-algo AES256` of the
 * same bytes through a pipe. Prints MB/s and peak RSS for both; run it at two sizes to see RSS stay
 * flat. Needs only `gpg` (no stack).
 */

import { spawn } from "node:child_process";
import { createCipheriv, randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { DigestStream } from "../client/artifact/digest.js";
import { encryptStream } from "../client/artifact/encrypt-stream.js";
import { ArtifactSecret } from "../client/artifact/secret.js";

export const ENCRYPT_USAGE = "encrypt [--mib N] [--json]   OpenPGP streaming encrypt vs gpg --symmetric";

const CHUNK = 1024 * 1024;
const MIB = 1024 * 1024;

/**
 * The same pseudo-random bytes on every call for a given seed, generated on the fly (AES-256-CTR of
 * zeros: several GB/s, incompressible), so both contenders get identical input and none of it is held.
 */
function randomSource(seed: Buffer, mib: number): Readable {
  const ctr = createCipheriv("aes-256-ctr", seed, Buffer.alloc(16));
  const zeros = Buffer.alloc(CHUNK);
  let left = mib;
  return new Readable({
    highWaterMark: CHUNK,
    read() {
      if (left-- > 0) this.push(ctr.update(zeros));
      else this.push(null);
    },
  });
}

/** VmHWM (peak RSS) of a process in bytes, from /proc. */
async function vmHwm(pid: number | "self"): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const m = /^VmHWM:\s+(\d+) kB$/m.exec(status);
  return m ? Number(m[1]) * 1024 : NaN;
}

interface Result {
  seconds: number;
  mbPerS: number;
  peakRssMiB: number;
  ciphertextBytes?: number;
}

async function runOurs(seed: Buffer, mib: number): Promise<Result> {
  const secret = ArtifactSecret.generate();
  const digest = new DigestStream();
  const start = process.hrtime.bigint();
  await pipeline(
    await encryptStream(randomSource(seed, mib), secret),
    digest,
    createWriteStream("/dev/null"),
  );
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  return {
    seconds,
    mbPerS: (mib * MIB) / 1e6 / seconds,
    peakRssMiB: (await vmHwm("self")) / MIB,
    ciphertextBytes: digest.result().size,
  };
}

async function runGpg(seed: Buffer, mib: number): Promise<Result> {
  const home = await mkdtemp(join(tmpdir(), "hpcs-bench-gnupg-"));
  try {
    const passFile = join(home, "passphrase");
    await writeFile(passFile, ArtifactSecret.generate().passphrase(), { mode: 0o600 });
    const args = ["--homedir", home, "--batch", "--no-tty", "--pinentry-mode", "loopback"];
    args.push("--passphrase-file", passFile, "--no-symkey-cache", "--symmetric", "--cipher-algo", "AES256");
    // Like for like: ours does not compress (random data would not shrink anyway).
    args.push("--compress-algo", "none", "--output", "-");
    const start = process.hrtime.bigint();
    const child = spawn("gpg", args, { stdio: ["pipe", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    // VmHWM only grows; sample it while the child runs (the last sample is within 50 ms of the end).
    let peak = 0;
    const sampler = setInterval(() => {
      vmHwm(child.pid ?? 0).then(
        (v) => (peak = Math.max(peak, v || 0)),
        () => undefined,
      );
    }, 50);
    const exited = new Promise<number | null>((resolve, reject) => {
      child.on("error", reject);
      child.on("close", resolve);
    });
    let bytesOut = 0;
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        bytesOut += chunk.length;
        cb();
      },
    });
    await Promise.all([pipeline(randomSource(seed, mib), child.stdin), pipeline(child.stdout, sink)]);
    const code = await exited;
    clearInterval(sampler);
    if (code !== 0) throw new Error(`gpg exited ${code}: ${stderr.split("\n", 1)[0]}`);
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    return {
      seconds,
      mbPerS: (mib * MIB) / 1e6 / seconds,
      peakRssMiB: peak / MIB,
      ciphertextBytes: bytesOut,
    };
  } finally {
    await new Promise<void>((resolve) => {
      const k = spawn("gpgconf", ["--homedir", home, "--kill", "gpg-agent"], { stdio: "ignore" });
      k.on("close", () => resolve());
      k.on("error", () => resolve());
    });
    await rm(home, { recursive: true, force: true });
  }
}

async function runSourceOnly(seed: Buffer, mib: number): Promise<number> {
  const start = process.hrtime.bigint();
  await pipeline(randomSource(seed, mib), createWriteStream("/dev/null"));
  return (mib * MIB) / 1e6 / (Number(process.hrtime.bigint() - start) / 1e9);
}

export async function encryptBench(argv: string[]): Promise<number> {
  let mib = 1024;
  let json = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--json") json = true;
    else if (a === "--mib") {
      mib = Number(argv[++i]);
      if (!Number.isInteger(mib) || mib <= 0) throw new Error("--mib wants a positive integer");
    } else throw new Error(`unknown option ${JSON.stringify(a)}\nusage: ${ENCRYPT_USAGE}`);
  }
  const seed = randomBytes(32);
  const startRssMiB = (await vmHwm("self")) / MIB;
  process.stderr.write(`encrypt: ${mib} MiB through hpcs (openpgp.js + sha256)...\n`);
  const ours = await runOurs(seed, mib);
  process.stderr.write(`encrypt: ${mib} MiB through gpg --symmetric...\n`);
  const gpg = await runGpg(seed, mib);
  const sourceMBps = await runSourceOnly(seed, Math.min(mib, 256));
  const result = { mib, startRssMiB, ours, gpg, sourceMBps, node: process.version };
  if (json) {
    process.stdout.write(JSON.stringify(result) + "\n");
    return 0;
  }
  const f = (n: number, d = 1) => n.toFixed(d);
  process.stdout.write(
    [
      `input: ${mib} MiB pseudo-random (generator alone: ${f(sourceMBps, 0)} MB/s), Node ${process.version}`,
      `                          seconds      MB/s   peak RSS (MiB)`,
      `hpcs (openpgp.js+sha256) ${f(ours.seconds, 2).padStart(8)} ${f(ours.mbPerS).padStart(9)} ${f(ours.peakRssMiB).padStart(16)}   (process peak; ${f(startRssMiB)} before)`,
      `gpg --symmetric AES256   ${f(gpg.seconds, 2).padStart(8)} ${f(gpg.mbPerS).padStart(9)} ${f(gpg.peakRssMiB).padStart(16)}`,
      `ciphertext bytes: hpcs ${ours.ciphertextBytes}, gpg ${gpg.ciphertextBytes}`,
    ].join("\n") + "\n",
  );
  return 0;
}
