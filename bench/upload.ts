/**
 * `npm run bench -- upload`: 512 MiB of generated data uploaded as alice to her scratch dir on the
 * bench's sshd four ways, printed side by side in MB/s:
 *   - ours: `uploadStream` (`.part` + atomic rename, sha256 on the fly), with the bytes going into
 *     `cat` on an exec channel (its default), then as pipelined SFTP WRITEs (its fallback);
 *   - ssh2's plain `sftp.createWriteStream` (the baseline a straightforward port would use);
 *   - OpenSSH `scp` of a same-size local file (recent OpenSSH scp speaks SFTP underneath).
 * Everything it writes (remote files, the local temp file) is removed when it ends or fails.
 */

import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { parseArgs } from "node:util";
import { remove } from "../client/ssh/remote-files.js";
import { SshSession } from "../client/ssh/ssh-session.js";
import { uploadStream } from "../client/ssh/upload.js";
import { loadStackEnv, sshUser } from "../test/support/stack-env.js";

export const UPLOAD_USAGE =
  "upload [--mib N] [--chunk-kib K] [--in-flight N] [--json]   upload: ours (cat, SFTP pipelined) vs ssh2 createWriteStream vs scp";

interface Row {
  method: string;
  bytes: number;
  seconds: number;
  mbPerSec: number;
}

/** `size` bytes in 1 MiB chunks from one random block (generation must not be the bottleneck). */
function generated(size: number): Readable {
  const block = randomBytes(1024 * 1024);
  let sent = 0;
  return new Readable({
    read() {
      if (sent >= size) return void this.push(null);
      const n = Math.min(block.length, size - sent);
      sent += n;
      this.push(block.subarray(0, n));
    },
  });
}

async function timed(method: string, bytes: number, fn: () => Promise<void>): Promise<Row> {
  const t0 = performance.now();
  await fn();
  const seconds = (performance.now() - t0) / 1000;
  return { method, bytes, seconds, mbPerSec: bytes / 1e6 / seconds };
}

export async function uploadBench(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      mib: { type: "string", default: "512" },
      "chunk-kib": { type: "string", default: "32" },
      "in-flight": { type: "string", default: "64" },
      json: { type: "boolean", default: false },
    },
  });
  const size = Number(values.mib) * 1024 * 1024;
  const chunkSize = Number(values["chunk-kib"]) * 1024;
  const maxInFlight = Number(values["in-flight"]);
  if (!(size > 0) || !(chunkSize > 0) || !(maxInFlight > 0))
    throw new Error("--mib, --chunk-kib and --in-flight must be positive");

  const env = loadStackEnv();
  const alice = sshUser(env, "alice");
  const tag = randomBytes(4).toString("hex");
  const names = {
    cat: `bench-${tag}-cat`,
    ours: `bench-${tag}-ours`,
    plain: `bench-${tag}-plain`,
    scp: `bench-${tag}-scp`,
  };
  const session = await SshSession.connect({
    host: env.ssh.host,
    port: env.ssh.port,
    username: alice.name,
    privateKeyPath: alice.key,
    knownHostsPath: env.ssh.known_hosts,
  });
  const local = await mkdtemp(join(tmpdir(), "hpcs-bench-upload-"));
  const rows: Row[] = [];
  try {
    rows.push(
      await timed("ours: cat on an exec channel + rename (data-prep's default)", size, async () => {
        await uploadStream(session, generated(size), { dir: alice.scratch, name: names.cat });
      }),
    );
    rows.push(
      await timed(
        `ours: SFTP pipelined (${maxInFlight} × ${chunkSize / 1024} KiB) + rename (the fallback)`,
        size,
        async () => {
          await uploadStream(session, generated(size), {
            dir: alice.scratch,
            name: names.ours,
            chunkSize,
            maxInFlight,
            transport: "sftp",
          });
        },
      ),
    );
    rows.push(
      await timed("ssh2 sftp.createWriteStream", size, async () => {
        const sftp = await session.sftp();
        try {
          await pipeline(generated(size), sftp.createWriteStream(`${alice.scratch}/${names.plain}`));
        } finally {
          sftp.end();
        }
      }),
    );
    const file = join(local, names.scp);
    await pipeline(generated(size), createWriteStream(file));
    rows.push(
      await timed("OpenSSH scp (local file)", size, () =>
        run("scp", [
          "-q",
          "-P",
          String(env.ssh.port),
          "-i",
          alice.key,
          "-o",
          "BatchMode=yes",
          "-o",
          "StrictHostKeyChecking=yes",
          "-o",
          `UserKnownHostsFile=${env.ssh.known_hosts}`,
          file,
          `${alice.name}@${env.ssh.host}:${alice.scratch}/${names.scp}`,
        ]),
      ),
    );
  } finally {
    for (const n of Object.values(names))
      await remove(session, `${alice.scratch}/${n}`).catch(() => undefined);
    session.close();
    await rm(local, { recursive: true, force: true });
  }

  if (values.json) {
    process.stdout.write(JSON.stringify({ bench: "upload", bytes: size, results: rows }) + "\n");
  } else {
    process.stdout.write(
      `upload of ${size / 1024 / 1024} MiB to ${alice.name}@${env.ssh.host}:${env.ssh.port}\n`,
    );
    const w = Math.max(...rows.map((r) => r.method.length));
    for (const r of rows) {
      process.stdout.write(
        `  ${r.method.padEnd(w)}  ${r.seconds.toFixed(2).padStart(7)} s  ${r.mbPerSec.toFixed(1).padStart(7)} MB/s\n`,
      );
    }
    const [cat, pipelined, plain] = rows;
    if (cat && pipelined && plain)
      process.stdout.write(
        `  cat / createWriteStream: ${(cat.mbPerSec / plain.mbPerSec).toFixed(1)}×, pipelined SFTP / createWriteStream: ${(pipelined.mbPerSec / plain.mbPerSec).toFixed(1)}×\n`,
      );
  }
  return 0;
}

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) =>
    execFile(cmd, args, (err, _stdout, stderr) =>
      err ? reject(new Error(`${cmd} failed: ${stderr.trim() || err.message}`)) : resolve(),
    ),
  );
}
