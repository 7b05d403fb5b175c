/**
 * `npm run bench -- job [--mib N] [--repeat R] [--json]`: the job runtime on the real bench, in one run:
 *   1. start-up: job start → the app's first instruction without decryption (attestation, keys,
 *      checksums, volumes, container), from real Slurm jobs (bench/job-startup.ts);
 *   2. decryption throughput into gocryptfs beside `gpg -d > /dev/null` and a plain copy into
 *      gocryptfs (bench/job-decrypt.ts).
 */

import { parseArgs } from "node:util";
import { decryptBench } from "./job-decrypt.js";
import { STEPS, startupBench } from "./job-startup.js";

export const JOB_USAGE =
  "job [--mib N] [--repeat R] [--json]   job start → app (attestation, keys, mounts); decrypt into gocryptfs vs gpg -d vs cp";

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}

export async function jobBench(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      mib: { type: "string", default: "1024" },
      repeat: { type: "string", default: "3" },
      json: { type: "boolean", default: false },
    },
  });
  const mib = Number(values.mib);
  const repeat = Number(values.repeat);
  if (!Number.isInteger(mib) || mib < 1 || !Number.isInteger(repeat) || repeat < 1) {
    process.stderr.write("bench job: --mib and --repeat take positive integers\n");
    return 2;
  }
  const log = (s: string): void => void process.stderr.write(`[bench job] ${s}\n`);
  const startup = await startupBench({ repeat, log });
  const decrypt = await decryptBench({ mib, repeat, user: "alice", log });
  if (values.json) {
    process.stdout.write(`${JSON.stringify({ mib, repeat, startup, decrypt })}\n`);
    return 0;
  }
  const f = (x: number): string => x.toFixed(2).padStart(8);
  const col = (k: "keysSec" | "decryptSec" | "containerSec" | "startupSec"): number =>
    median(startup.map((r) => r[k]));
  const lines = [
    `job start → app's first instruction, real Slurm jobs as alice (median of ${repeat}; seconds):`,
    ...STEPS.map(([e, what]) => `    ${what.padEnd(56)}${f(median(startup.map((r) => r.steps[e] ?? NaN)))}`),
    `  attestation + agent + SVIDs + Vault + checksums + volumes ${f(col("keysSec"))}`,
    `  container (bundle, runc start)                            ${f(col("containerSec"))}`,
    `  = start-up without decryption                             ${f(col("startupSec"))}`,
    `  (decryption of the small test dataset + image, excluded)  ${f(col("decryptSec"))}`,
    `  runs: ${startup.map((r) => r.startupSec.toFixed(2)).join(", ")} s`,
    "",
    `decryption of a ${mib} MiB artifact as alice (median of ${repeat}):`,
  ];
  const w = Math.max(...decrypt.map((r) => r.method.length));
  lines.push(`  ${"method".padEnd(w)}   seconds     MB/s`);
  for (const r of decrypt) {
    lines.push(
      `  ${r.method.padEnd(w)} ${r.seconds.toFixed(2).padStart(9)} ${r.mbPerSec.toFixed(1).padStart(8)}`,
    );
  }
  process.stdout.write(`${lines.join("\n")}\n`);
  return 0;
}
