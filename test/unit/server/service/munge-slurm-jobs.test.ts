import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SlurmJobs, SlurmJobsError } from "../../../../server/service/slurm-jobs.js";

describe("SlurmJobs (with a stand-in squeue)", () => {
  let dir: string;
  let n = 0;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "hpcs-squeue-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** A fake squeue that records argv and SLURM_CONF, prints `out`/`err` and exits `code`. */
  function fake(out: string, err = "", code = 0): string {
    const p = join(dir, `squeue-${++n}`);
    writeFileSync(
      p,
      `#!${process.execPath}
require("node:fs").writeFileSync(${JSON.stringify(join(dir, "seen.json"))}, JSON.stringify({ argv: process.argv.slice(2), conf: process.env.SLURM_CONF ?? null }));
process.stdout.write(${JSON.stringify(out)});
process.stderr.write(${JSON.stringify(err)});
process.exit(${code});
`,
    );
    chmodSync(p, 0o755);
    return p;
  }
  const seen = () =>
    JSON.parse(readFileSync(join(dir, "seen.json"), "utf8")) as { argv: string[]; conf: string };

  it("asks for the uid's RUNNING jobs on the node, as argv", async () => {
    const jobs = new SlurmJobs({ squeueBin: fake("42\n43_7\n44+0\n"), slurmConf: "/etc/slurm/x.conf" });
    assert.deepEqual(await jobs.runningJobs("nid001", 1001), ["42", "43_7", "44+0"]);
    assert.deepEqual(seen(), {
      argv: ["-h", "-w", "nid001", "-u", "1001", "-t", "RUNNING", "-o", "%i"],
      conf: "/etc/slurm/x.conf",
    });
  });

  it("answers [] when there is no running job", async () => {
    assert.deepEqual(await new SlurmJobs({ squeueBin: fake("") }).runningJobs("n1", 1001), []);
    assert.equal(seen().conf, null);
  });

  it("tells an unknown node from a squeue that cannot answer", async () => {
    const unknown = new SlurmJobs({ squeueBin: fake("", "squeue: error: Invalid node name n9\n", 1) });
    await assert.rejects(unknown.runningJobs("n9", 1), (e: unknown) => {
      return (
        e instanceof SlurmJobsError &&
        e.kind === "unknown-node" &&
        e.message === "node n9 is not a Slurm node"
      );
    });
    const down = new SlurmJobs({
      squeueBin: fake("", "squeue: error: Unable to contact slurm controller (connect failure)\n", 1),
    });
    await assert.rejects(down.runningJobs("n1", 1), (e: unknown) => {
      return e instanceof SlurmJobsError && e.kind === "unavailable" && /Unable to contact/.test(e.message);
    });
    await assert.rejects(
      new SlurmJobs({ squeueBin: join(dir, "missing") }).runningJobs("n1", 1),
      (e: unknown) => {
        return e instanceof SlurmJobsError && e.kind === "unavailable" && /squeue-bin/.test(e.message);
      },
    );
  });

  it("refuses output that is not job ids, and bad arguments", async () => {
    await assert.rejects(
      new SlurmJobs({ squeueBin: fake("JOBID\n42\n") }).runningJobs("n1", 1),
      SlurmJobsError,
    );
    assert.throws(() => new SlurmJobs({ squeueBin: fake("") }).runningJobs("-x", 1));
    assert.throws(() => new SlurmJobs({ squeueBin: fake("") }).runningJobs("n1", -1), SlurmJobsError);
  });
});
