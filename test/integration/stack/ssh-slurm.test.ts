import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { eventually, run, runOk } from "../../support/exec.js";
import { nonce } from "../../support/spire.js";
import { loadStackEnv, type StackEnv, sshUser } from "../../support/stack-env.js";

function ssh(env: StackEnv, user: string, keyOf: string, command: string[]) {
  return run("ssh", [
    "-i",
    sshUser(env, keyOf).key,
    "-p",
    String(env.ssh.port),
    "-o",
    `UserKnownHostsFile=${env.ssh.known_hosts}`,
    "-o",
    "StrictHostKeyChecking=yes",
    "-o",
    "BatchMode=yes",
    "-o",
    "IdentitiesOnly=yes",
    `${user}@${env.ssh.host}`,
    "--",
    ...command,
  ]);
}

describe("stack: sshd login node and Slurm", () => {
  let env: StackEnv;
  before(() => {
    env = loadStackEnv();
  });

  it("logs in as alice with her key and runs a command", async () => {
    const r = await ssh(env, "alice", "alice", ["id", "-un"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), "alice");
  });

  it("refuses bob's login with alice's key", async () => {
    const r = await ssh(env, "bob", "alice", ["id", "-un"]);
    assert.equal(r.code, 255);
    assert.match(r.stderr, /Permission denied/);
  });

  it("runs alice's sbatch job on the node and writes its output file as alice", async () => {
    const alice = sshUser(env, "alice");
    const out = join(alice.scratch, `smoke-${nonce()}.out`);
    const r = await ssh(env, "alice", "alice", [
      "sbatch",
      "--parsable",
      "-p",
      env.slurm.partition,
      "-o",
      out,
      "--wrap",
      "'echo user=$(id -un) node=$(hostname -s) job=$SLURM_JOB_ID'",
    ]);
    assert.equal(r.code, 0, r.stderr);
    const jobId = r.stdout.trim();
    assert.match(jobId, /^\d+$/);
    const text = await eventually("job output", 60_000, async () => {
      const state = await runOk("squeue", ["-h", "-j", jobId, "-o", "%T"]).catch(() => "");
      if (state.trim() !== "") throw new Error(`job ${jobId} still ${state.trim()}`);
      return readFile(out, "utf8");
    });
    assert.equal(text.trim(), `user=alice node=${env.slurm.node} job=${jobId}`);
  });
});
