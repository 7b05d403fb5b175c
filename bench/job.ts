/**
 * `npm run bench -- job [--mib N] [--repeat R] [--json]`: the job runtime on the real bench, in one run:
 *   1. decryption throughput into gocryptfs beside `gpg -d > /dev/null` and a plain copy into
 *      gocryptfs (bench/job-decrypt.ts).
 */

import { parseArgs } from "node:util";
import { decryptBench } from "./job-decrypt.js";

export const JOB_USAGE =
  "job [--mib N] [--repeat R] [--json]   job start → app (attestation, keys, mounts); decrypt into gocryptfs vs gpg -d vs cp";

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
  const rows = await decryptBench({ mib, repeat, user: "alice", log });
  if (values.json) {
    process.stdout.write(`${JSON.stringify({ mib, repeat, decrypt: rows })}\n`);
    return 0;
  }
  const w = Math.max(...rows.map((r) => r.method.length));
  const lines = [`decryption of a ${mib} MiB artifact as alice (median of ${repeat}):`];
  lines.push(`  ${"method".padEnd(w)}   seconds     MB/s`);
  for (const r of rows) {
    lines.push(
      `  ${r.method.padEnd(w)} ${r.seconds.toFixed(2).padStart(9)} ${r.mbPerSec.toFixed(1).padStart(8)}`,
    );
  }
  process.stdout.write(`${lines.join("\n")}\n`);
  return 0;
}
