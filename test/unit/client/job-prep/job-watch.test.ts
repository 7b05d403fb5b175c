import assert from "node:assert/strict";
import { parseSacct, parseSbatchOutput, parseScontrol } from "../../../../client/job-prep/job-watch.js";

describe("client/job-prep/job-watch parsing", () => {
  it("reads sbatch --parsable's job id, with or without a cluster", () => {
    assert.deepEqual(parseSbatchOutput("1234\n"), { jobId: "1234" });
    assert.deepEqual(parseSbatchOutput("1234;lumi\n"), { jobId: "1234", cluster: "lumi" });
    // A site's submit filter may print a line first; the id is the last line.
    assert.deepEqual(parseSbatchOutput("note: using default account\n77\n"), { jobId: "77" });
    assert.throws(() => parseSbatchOutput("Submitted batch job 12\n"), /sbatch printed no job id/);
    assert.throws(() => parseSbatchOutput(""), /sbatch printed no job id/);
  });

  it("reads JobState and ExitCode from scontrol show job", () => {
    const one =
      "JobId=42 JobName=hpcs-job UserId=alice(1001) GroupId=alice(1001) Priority=1 JobState=COMPLETED Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:05";
    assert.deepEqual(parseScontrol(one), { state: "COMPLETED", exitCode: 0 });
    const multi =
      "JobId=43 JobName=x\n   JobState=FAILED Reason=NonZeroExitCode Dependency=(null)\n   Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=204:0\n   DerivedExitCode=0:0";
    assert.deepEqual(parseScontrol(multi), { state: "FAILED", exitCode: 204 });
    assert.deepEqual(parseScontrol("JobState=CANCELLED Reason=None ExitCode=0:15"), {
      state: "CANCELLED",
      exitCode: 0,
      exitSignal: 15,
    });
    assert.equal(parseScontrol("slurm_load_jobs error: Invalid job id specified"), undefined);
  });

  it("reads sacct's parsable State|ExitCode as a fallback", () => {
    assert.deepEqual(parseSacct("COMPLETED|0:0\n"), { state: "COMPLETED", exitCode: 0 });
    assert.deepEqual(parseSacct("CANCELLED by 1001|0:15\n"), {
      state: "CANCELLED",
      exitCode: 0,
      exitSignal: 15,
    });
    assert.equal(parseSacct(""), undefined);
  });
});
