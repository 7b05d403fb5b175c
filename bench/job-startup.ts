/**
 * The start-up half of `npm run bench -- job`: from the job's first line to the app's first
 * instruction, without decryption — node attestation (MUNGE → join token → per-job spire-agent),
 * JWT-SVIDs, Vault logins and key reads, checksums, the gocryptfs volumes, and the container start.
 *
 * Real jobs as alice on the bench's Slurm, submitted through test/support/job-fixture.ts (the same
 * rendered job script `hpcs job-prep` submits) with HPCS_TIMING=1: the runtime logs
 * "hpcs-job: mark <event> <uptime>" and the app's first instruction copies /proc/uptime into its
 * output, one clock for both. Measured: start → decrypt-begin (attestation, keys, checksums, the two
 * volumes made and mounted), decrypt-end → app-start (the container), and their sum.
 */

import { JobFixture } from "../test/support/job-fixture.js";

/** The runtime's marks between start and decrypt-begin, in order, and what each step covers. */
export const STEPS: [string, string][] = [
  ["attested", "node checks + MUNGE → join token"],
  ["agent-ready", "per-job spire-agent started, healthy"],
  ["keys", "JWT-SVIDs + Vault logins + key reads"],
  ["decrypt-begin", "checksums + gocryptfs volumes"],
];

export interface StartupRun {
  /** Seconds per step of STEPS (start → attested, attested → agent-ready, …). */
  steps: Record<string, number>;
  /** start → decrypt-begin: attestation, agent, SVIDs, Vault, checksums, volumes mounted. */
  keysSec: number;
  /** decrypt-begin → decrypt-end: artifacts decrypted (excluded from startupSec). */
  decryptSec: number;
  /** decrypt-end → the app's first instruction: container bundle and start. */
  containerSec: number;
  /** keysSec + containerSec: job start → app, without decryption. */
  startupSec: number;
}

function markOf(log: string, event: string): number {
  const m = new RegExp(`^hpcs-job: mark ${event} (\\d+(?:\\.\\d+)?)$`, "m").exec(log);
  if (!m?.[1]) throw new Error(`the job logged no "${event}" mark:\n${log}`);
  return Number(m[1]);
}

export async function startupBench(opts: {
  repeat: number;
  log: (s: string) => void;
}): Promise<StartupRun[]> {
  opts.log("preparing: server (MUNGE), client, app image, data-prep + container-prep...");
  const f = await JobFixture.create();
  try {
    const runs: StartupRun[] = [];
    for (let i = 1; i <= opts.repeat; i++) {
      opts.log(`job ${i}/${opts.repeat}...`);
      const job = await f.submit({
        user: "alice",
        workdir: await f.workdir("alice", `bench-startup-${i}`),
        jobName: `bench-startup-${i}`,
        app: f.artifact(f.app),
        data: [f.artifact(f.data)],
        args: ["mark"],
        env: { HPCS_TIMING: "1" },
      });
      const end = await f.end(job);
      if (end.state !== "COMPLETED" || end.exitCode !== 0) {
        throw new Error(`job ${job.id} ${end.state} exit ${end.exitCode}:\n${end.log}`);
      }
      const files = await f.decryptResult(job.resultPath);
      const appStart = Number((files.get("app-start")?.toString() ?? "").split(" ")[0]);
      if (!Number.isFinite(appStart) || appStart <= 0) throw new Error(`job ${job.id}: no app-start mark`);
      const start = markOf(end.log, "start");
      const decBegin = markOf(end.log, "decrypt-begin");
      const decEnd = markOf(end.log, "decrypt-end");
      const steps: Record<string, number> = {};
      let prev = start;
      for (const [event] of STEPS) {
        const t = markOf(end.log, event);
        steps[event] = t - prev;
        prev = t;
      }
      const keysSec = decBegin - start;
      const containerSec = appStart - decEnd;
      runs.push({
        steps,
        keysSec,
        decryptSec: decEnd - decBegin,
        containerSec,
        startupSec: keysSec + containerSec,
      });
    }
    return runs;
  } finally {
    await f.dispose();
  }
}
