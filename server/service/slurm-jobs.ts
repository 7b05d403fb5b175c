/**
 * "Does this uid have a running job on this node?", asked of Slurm itself:
 * `squeue -h -w <node> -u <uid> -t RUNNING -o %i` (argv array, fixed environment, no shell). The
 * node is a lib/names host name (so it can never be read as an option), the uid a number.
 *
 * The Slurm node name must equal the host name the job reports (`hostname -s`), as on most sites;
 * where NodeName and NodeHostname differ, node attestation refuses with "not a Slurm node".
 */

import { execFile } from "node:child_process";
import { validateName } from "../../lib/names.js";

export interface RunningJobs {
  /** Ids of the uid's RUNNING jobs on the node; [] when there are none. Rejects with SlurmJobsError. */
  runningJobs(node: string, uid: number): Promise<string[]>;
}

export class SlurmJobsError extends Error {
  constructor(
    /** "unknown-node": Slurm has no such node; "unavailable": squeue could not answer. */
    readonly kind: "unknown-node" | "unavailable",
    message: string,
  ) {
    super(message);
    this.name = "SlurmJobsError";
  }
}

export interface SlurmJobsOptions {
  /** The squeue program (`[hpcs-server] squeue-bin`), default "squeue". */
  squeueBin?: string;
  /** SLURM_CONF for squeue, when the server's Slurm configuration is not at the compiled-in path. */
  slurmConf?: string;
  timeoutMs?: number;
}

// %i: a job id, an array task (123_4) or a heterogeneous component (123+0).
const JOB_ID = /^\d{1,12}(?:[_+]\d{1,12})?$/;

export class SlurmJobs implements RunningJobs {
  constructor(private readonly opts: SlurmJobsOptions = {}) {}

  runningJobs(node: string, uid: number): Promise<string[]> {
    validateName("node", node);
    if (!Number.isSafeInteger(uid) || uid < 0) throw new SlurmJobsError("unavailable", `invalid uid ${uid}`);
    const bin = this.opts.squeueBin ?? "squeue";
    const env: Record<string, string> = { PATH: "/usr/bin:/bin:/usr/sbin:/sbin", LC_ALL: "C" };
    if (this.opts.slurmConf !== undefined) env.SLURM_CONF = this.opts.slurmConf;
    const args = ["-h", "-w", node, "-u", String(uid), "-t", "RUNNING", "-o", "%i"];
    return new Promise((resolve, reject) => {
      execFile(
        bin,
        args,
        { env, timeout: this.opts.timeoutMs ?? 15_000, maxBuffer: 1024 * 1024 },
        (err, stdout, stderr) => {
          const said = firstLine(stderr);
          if (err) {
            const e = err as NodeJS.ErrnoException & { code?: unknown; killed?: boolean };
            if (e.code === "ENOENT") {
              reject(
                new SlurmJobsError(
                  "unavailable",
                  `squeue-bin ${JSON.stringify(bin)} not found: install Slurm's client commands on the hpcs server or set [hpcs-server] squeue-bin`,
                ),
              );
            } else if (/invalid node name/i.test(said)) {
              reject(new SlurmJobsError("unknown-node", `node ${node} is not a Slurm node`));
            } else {
              const why = e.killed ? "timed out" : said || `exited ${String(e.code)}`;
              reject(new SlurmJobsError("unavailable", `squeue failed: ${why}`));
            }
            return;
          }
          const ids = stdout
            .split("\n")
            .map((l) => l.trim())
            .filter(Boolean);
          const odd = ids.find((id) => !JOB_ID.test(id));
          if (odd !== undefined) {
            reject(new SlurmJobsError("unavailable", "squeue printed something other than job ids"));
            return;
          }
          resolve(ids);
        },
      );
    });
  }
}

function firstLine(text: string): string {
  const line = text.split("\n").find((l) => l.trim() !== "") ?? "";
  return line
    .replace(/^squeue:\s*(error:\s*)?/, "")
    .replace(/[^\x20-\x7e]/g, "?")
    .trim()
    .slice(0, 200);
}
