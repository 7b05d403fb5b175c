/**
 * The decryption half of `npm run bench -- job`: how fast a job turns an artifact into plaintext inside
 * a gocryptfs volume, beside its two bounds, on one N MiB artifact, all as the job's user (alice):
 *
 *   gpg → /dev/null        decryption alone (the ceiling: no volume)
 *   gpg → gocryptfs        gpg writing into the volume itself: its small writes are one FUSE
 *                          request each, ~4× slower than…
 *   gpg | cat → gocryptfs  …what the job does (client/job-prep/job-runtime.sh, file payload): cat
 *                          writes up to a pipe's worth (64 KiB+) per call
 *   cp plain → gocryptfs   the volume alone (no decryption), from node-local tmp
 *
 * The artifact is made by our own encryptStream, as data-prep ships it. The plaintext copy lives in a
 * 0700 directory under /var/tmp that is removed at the end; it is the benchmark's, not a job's.
 */

import { spawn } from "node:child_process";
import { createCipheriv, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { chown, mkdir, mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { encryptStream } from "../client/artifact/encrypt-stream.js";
import { ArtifactSecret } from "../client/artifact/secret.js";

const MIB = 1024 * 1024;

export interface DecryptRow {
  method: string;
  seconds: number;
  mbPerSec: number;
  runs: number[];
}

/** Incompressible bytes on the fly (AES-256-CTR of zeros), none held. */
function randomSource(mib: number): Readable {
  const ctr = createCipheriv("aes-256-ctr", randomBytes(32), Buffer.alloc(16));
  const zeros = Buffer.alloc(MIB);
  let left = mib;
  return new Readable({
    highWaterMark: MIB,
    read() {
      this.push(left-- > 0 ? ctr.update(zeros) : null);
    },
  });
}

/** Runs `bash -c script` as `user` with `input` on stdin; rejects with its stderr's first line. */
function asUser(user: string, script: string, args: string[], input: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn("runuser", ["-u", user, "--", "bash", "-c", script, "bench", ...args], {
      stdio: ["pipe", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    child.on("error", reject);
    child.on("close", (code) =>
      code === 0 ? resolve() : reject(new Error(`as ${user}: exit ${code}: ${stderr.trim().split("\n")[0]}`)),
    );
    child.stdin.end(input);
  });
}

async function timed(fn: () => Promise<void>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}

// Passphrase on fd 0, ciphertext by path: the way the job runtime calls gpg.
const GPG = 'gpg --homedir "$G" --batch --no-tty --quiet --pinentry-mode loopback --passphrase-fd 0 -d "$1"';

export async function decryptBench(opts: {
  mib: number;
  repeat: number;
  user: string;
  log: (s: string) => void;
}): Promise<DecryptRow[]> {
  const { mib, repeat, user, log } = opts;
  const base = await mkdtemp("/var/tmp/hpcs-bench-job-");
  const volumePass = randomBytes(24).toString("base64url");
  const mount = join(base, "mnt");
  try {
    await chown(base, 0, 0);
    const plain = join(base, "plain");
    const artifact = join(base, "artifact.gpg");
    const secret = ArtifactSecret.generate();
    log(`writing ${mib} MiB and its artifact...`);
    await pipeline(randomSource(mib), createWriteStream(plain));
    // The artifact is made from the same bytes: encryptStream reads the plaintext file back.
    await pipeline(await encryptStream(createReadStream(plain), secret), createWriteStream(artifact));
    for (const d of ["cipher", "mnt", "gnupg"]) await mkdir(join(base, d), { mode: 0o700 });
    const { uid, gid } = await userIds(user);
    for (const p of [base, plain, artifact, join(base, "cipher"), mount, join(base, "gnupg")]) {
      await chown(p, uid, gid);
    }
    await asUser(
      user,
      'IFS= read -r pw; printf "%s\\n" "$pw" | gocryptfs -q -init "$1" >/dev/null && printf "%s\\n" "$pw" | gocryptfs -q "$1" "$2"',
      [join(base, "cipher"), mount],
      `${volumePass}\n`,
    );

    const pass = `${secret.passphrase()}\n`;
    const env = `G=${join(base, "gnupg")}; `;
    const methods: { method: string; run: () => Promise<void> }[] = [
      { method: "gpg -d → /dev/null", run: () => asUser(user, `${env}${GPG} >/dev/null`, [artifact], pass) },
      {
        method: "gpg -d → gocryptfs (direct)",
        run: () => asUser(user, `${env}${GPG} >"$2/out" && rm -f "$2/out"`, [artifact, mount], pass),
      },
      {
        method: "gpg -d | cat → gocryptfs (the job)",
        run: () => asUser(user, `${env}${GPG} | cat >"$2/out" && rm -f "$2/out"`, [artifact, mount], pass),
      },
      {
        method: "cp plain → gocryptfs",
        run: () => asUser(user, 'cp "$1" "$2/out" && rm -f "$2/out"', [plain, mount], ""),
      },
    ];
    const rows: DecryptRow[] = [];
    for (const m of methods) {
      const runs: number[] = [];
      for (let i = 1; i <= repeat; i++) {
        log(`${m.method} (run ${i}/${repeat})...`);
        runs.push(await timed(m.run));
      }
      const seconds = median(runs);
      rows.push({ method: m.method, seconds, mbPerSec: (mib * MIB) / 1e6 / seconds, runs });
    }
    return rows;
  } finally {
    await asUser(user, 'fusermount3 -u "$1" 2>/dev/null || true', [mount], "").catch(() => undefined);
    await rm(base, { recursive: true, force: true });
  }
}

async function userIds(user: string): Promise<{ uid: number; gid: number }> {
  const out = await new Promise<string>((resolve, reject) => {
    const c = spawn("id", [user]);
    let s = "";
    c.stdout.on("data", (b: Buffer) => (s += b.toString()));
    c.on("error", reject);
    c.on("close", (code) => (code === 0 ? resolve(s) : reject(new Error(`no user ${user}`))));
  });
  const uid = /uid=(\d+)/.exec(out)?.[1];
  const gid = /gid=(\d+)/.exec(out)?.[1];
  if (uid === undefined || gid === undefined) throw new Error(`cannot parse id ${user}`);
  return { uid: Number(uid), gid: Number(gid) };
}
