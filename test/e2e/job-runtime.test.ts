/**
 * The job runtime end to end on the real bench: scripts rendered by renderJobScript, submitted with
 * `sbatch` as alice (or bob) on node vm, MUNGE node attestation through the real hpcs server, per-job
 * spire-agents, Vault, gocryptfs, runc (the bench has no apptainer), GnuPG. Artifacts are shipped by
 * the real `hpcs data-prep` / `hpcs container-prep`; results are decrypted here with the job's
 * output private key. One fixture for all tests; jobs that do not interfere run concurrently.
 */

import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { runOk } from "../support/exec.js";
import { expectedSummary, type JobEnd, JobFixture, type JobRun } from "../support/job-fixture.js";
import { sshUser } from "../support/stack-env.js";

const SLURM_SPOOL = "/var/lib/hpcs-stack/slurm";

describe("job runtime (rendered job script, real Slurm/SPIRE/Vault/gocryptfs/runc)", function () {
  this.timeout(600_000);
  let f: JobFixture;
  let aliceUid: number;

  before(async () => {
    f = await JobFixture.create();
    aliceUid = Number((await runOk("id", ["-u", "alice"])).trim());
  });

  after(async () => {
    await f?.dispose();
  });

  function summaryOfData(): Promise<string> {
    return expectedSummary([{ name: f.artifact(f.data).name, path: f.datasetDir }]);
  }

  function resultText(files: Map<string, Buffer>): string {
    return files.get("result")?.toString("utf8") ?? "";
  }

  describe("alice's job, with bob's job beside it", () => {
    let alice: JobRun;
    let aliceEnd: JobEnd;
    let bob: JobRun;
    let bobEnd: JobEnd;
    let aliceStateWhenBobEnded = "";
    let hitsWhileRunning: string[] = [];
    let releaseDir: string;

    before(async () => {
      const workdir = await f.workdir("alice", "main");
      releaseDir = join(workdir, "input-scripts");
      await mkdir(releaseDir, { recursive: true });
      await runOk("chown", ["-R", "alice:", releaseDir]);
      await writeFile(join(releaseDir, "01-check.sh"), "#!/bin/sh\necho 'input logic ran' >&2\n");
      alice = await f.submit({
        user: "alice",
        workdir,
        jobName: "main",
        app: f.artifact(f.app),
        data: [f.artifact(f.data)],
        args: ["wait-release"],
        inputScripts: releaseDir,
      });
      // The app runs (data decrypted in its volume) and waits for .release.
      await f.waitForLog(alice, /hpcs-job: app started/);
      hitsWhileRunning = await f.filesContaining(f.marker, [
        workdir,
        sshUser(f.env, "alice").scratch,
        SLURM_SPOOL,
      ]);
      // bob, with alice's info files, on the same node while alice's job runs.
      bob = await f.submit({
        user: "bob",
        workdir: await f.workdir("bob", "steal"),
        jobName: "steal",
        app: f.artifact(f.app),
        data: [f.artifact(f.data)],
      });
      bobEnd = await f.end(bob);
      aliceStateWhenBobEnded = (await f.state(alice)).state;
      await writeFile(join(releaseDir, ".release"), "");
      aliceEnd = await f.end(alice);
    });

    it("runs the app on the decrypted data and stores only an encrypted result (1)", async () => {
      assert.equal(aliceEnd.state, "COMPLETED", aliceEnd.log);
      assert.equal(aliceEnd.exitCode, 0, aliceEnd.log);
      const lines = aliceEnd.log.trim().split("\n");
      assert.equal(lines.at(-1), `hpcs-job: result ${alice.resultPath}`, aliceEnd.log);
      const files = await f.decryptResult(alice.resultPath);
      const expected = `arg=[wait-release]\n${await summaryOfData()}`;
      assert.equal(resultText(files), expected);
      assert.equal(files.get("exit_code")?.toString().trim(), "0");
      assert.ok(!existsSync(`${alice.resultPath}.part`));
      // The job's request id is in the server's audit lines for its token and its end.
      const requestId = /request id (\S+)$/m.exec(aliceEnd.log)?.[1];
      assert.ok(requestId, aliceEnd.log);
      const audited = f.srv.log
        .split("\n")
        .filter((l) => l.includes(`"requestId":"${requestId}"`) && l.includes('"type":"audit"'))
        .map(
          (l) =>
            (JSON.parse(l) as { action: string; result: string }).action +
            ":" +
            (JSON.parse(l) as { result: string }).result,
        );
      assert.deepEqual(audited, ["node.token:ok", "node.end-job:ok"]);
      assert.match(aliceEnd.log, /input logic ran/);
    });

    it("leaves no plaintext marker on shared storage or in the Slurm spool, during or after (2)", async () => {
      assert.deepEqual(hitsWhileRunning, [], "while the app ran");
      const after = await f.filesContaining(f.marker, [
        alice.workdir,
        sshUser(f.env, "alice").scratch,
        sshUser(f.env, "bob").scratch,
        SLURM_SPOOL,
      ]);
      assert.deepEqual(after, [], "after the job");
    });

    it("bob's job with alice's info files gets no SVID of alice's from his own agent, even beside her job (3, 4)", async () => {
      assert.equal(aliceStateWhenBobEnded, "RUNNING", "alice's job ran the whole time");
      assert.equal(bobEnd.state, "FAILED", bobEnd.log);
      assert.equal(bobEnd.exitCode, 202, bobEnd.log);
      assert.match(bobEnd.log, /hpcs-job: node attested by MUNGE/);
      assert.match(bobEnd.log, /hpcs-job: failed: no JWT-SVID for spiffe:\/\/[^ ]+ within 30 s/);
      assert.doesNotMatch(bobEnd.log, /key for .* obtained|app started/);
      assert.ok(!existsSync(join(bob.workdir, "output")), "bob got no result");
      assert.ok(!existsSync(join(bob.jobDir, `volumes-${bob.id}`)), "no volumes left");
    });
  });

  describe("failures and awkward values (jobs run concurrently)", () => {
    const ends = new Map<string, Promise<{ run: JobRun; end: JobEnd }>>();
    // Job ID 1 has long ended on the bench: a leftover of it is removed by the next job of alice's.
    const staleDir = "/dev/shm/hpcs-job-1.stale0test";

    after(async () => {
      await runOk("rm", ["-rf", "--", staleDir]);
    });

    before(async () => {
      const submitAndWait = async (key: string, submit: () => Promise<JobRun>) => {
        const run = await submit();
        const ended = f.end(run).then((end) => ({ run, end }));
        ended.catch(() => undefined); // awaited by the test; not an unhandled rejection meanwhile
        ends.set(key, ended);
      };
      // 5: data granted to another node only.
      const wOther = await f.workdir("alice", "othernode");
      await submitAndWait("othernode", () =>
        f.submit({
          user: "alice",
          workdir: wOther,
          jobName: "othernode",
          app: f.artifact(f.app),
          data: [f.artifact(f.dataOtherNode)],
        }),
      );
      // 3b: an info file whose role is not the one bound to its identity (edited, or another grant's).
      const wRole = await f.workdir("alice", "role");
      await submitAndWait("role", () =>
        f.submit({
          user: "alice",
          workdir: wRole,
          jobName: "role",
          app: f.artifact(f.app),
          data: [{ ...f.artifact(f.data), role: f.app.access_role }],
        }),
      );
      // A dataset granted to the group proj-a (alice's per-job agent holds the group alias).
      const wGroup = await f.workdir("alice", "group");
      await submitAndWait("group", () =>
        f.submit({
          user: "alice",
          workdir: wGroup,
          jobName: "group",
          app: f.artifact(f.app),
          data: [f.artifact(f.dataGroup)],
        }),
      );
      // 6: one byte flipped in a copy of the data artifact.
      const wTamper = await f.workdir("alice", "tamper");
      const tampered = join(wTamper, "tampered.tar.gpg");
      const bytes = await readFile(f.data.path_at_rest);
      const at = Math.floor(bytes.length / 2);
      bytes[at] = (bytes[at] ?? 0) ^ 0x01;
      await f.writeAs("alice", tampered, bytes);
      await submitAndWait("tamper", () =>
        f.submit({
          user: "alice",
          workdir: wTamper,
          jobName: "tamper",
          app: f.artifact(f.app),
          data: [f.artifact(f.data, tampered)],
        }),
      );
      // 7: the app exits 3. Before it, a private dir as a SIGKILLed earlier job of alice's leaves it.
      await runOk("runuser", ["-u", "alice", "--", "mkdir", "-m", "700", "--", staleDir]);
      await f.writeAs("alice", join(staleDir, "plain.txt"), "left behind");
      const wFail = await f.workdir("alice", "appfail");
      await submitAndWait("appfail", () =>
        f.submit({
          user: "alice",
          workdir: wFail,
          jobName: "appfail",
          app: f.artifact(f.app),
          data: [f.artifact(f.data)],
          args: ["exit", "3"],
        }),
      );
      // 9: scancel while the app runs (it waits for a .release that never comes).
      const wCancel = await f.workdir("alice", "cancel");
      const cancelled = (async () => {
        const run = await f.submit({
          user: "alice",
          workdir: wCancel,
          jobName: "cancel",
          app: f.artifact(f.app),
          data: [f.artifact(f.data)],
          args: ["wait-release"],
        });
        await f.waitForLog(run, /hpcs-job: app started/);
        await runOk("scancel", [run.id]);
        return { run, end: await f.end(run) };
      })();
      cancelled.catch(() => undefined);
      ends.set("cancel", cancelled);
      // 8: spaces, quotes, $() and ; in the workdir, job name and arguments; no jq on the "node".
      const wWeird = await f.workdir("alice", `we ird 'q' "dq" $(id); x`);
      await submitAndWait("weird", () =>
        f.submit({
          user: "alice",
          workdir: wWeird,
          jobName: `job 'n' "m" $(touch pwned); ls`,
          app: f.artifact(f.app),
          data: [f.artifact(f.data), f.artifact(f.dataFile)],
          args: ["a b", "'single'", '"double"', "$(touch pwned)", "; ls", "`id`", "#", "*"],
          singularityFlags: ["--env", "HPCS_TEST_ENV=x $(y) 'z';", "--nv"],
          env: { HPCS_NO_JQ: "1" },
        }),
      );
    });

    async function ended(key: string): Promise<{ run: JobRun; end: JobEnd }> {
      const p = ends.get(key);
      assert.ok(p, `job ${key} was submitted`);
      return p;
    }

    it("fails before decrypting on a node the data was not granted to (5)", async () => {
      const { run, end } = await ended("othernode");
      assert.equal(end.exitCode, 202, end.log);
      assert.match(end.log, /hpcs-job: failed: no JWT-SVID for /);
      assert.match(end.log, /key for .*-app\.sif\.gpg obtained/, "the app image itself is granted on vm");
      assert.doesNotMatch(end.log, /volumes mounted|app started/);
      assert.ok(!existsSync(join(run.workdir, "output")));
    });

    it("fails at Vault login when the role is not bound to the SVID's identity (3b)", async () => {
      const { run, end } = await ended("role");
      assert.equal(end.exitCode, 203, end.log);
      assert.match(end.log, /hpcs-job: failed: Vault refused the login with role \S+ \(HTTP [45]\d\d: /);
      assert.doesNotMatch(end.log, /volumes mounted|app started/);
      assert.ok(!existsSync(join(run.workdir, "output")));
    });

    it("decrypts a dataset granted to a group of the job's user (per-job group alias)", async () => {
      const { run, end } = await ended("group");
      assert.equal(end.exitCode, 0, end.log);
      const files = await f.decryptResult(run.resultPath);
      assert.equal(
        resultText(files),
        await expectedSummary([{ name: f.artifact(f.dataGroup).name, path: f.datasetDir }]),
      );
    });

    it("refuses a tampered artifact by its checksum: nothing is decrypted or run (6)", async () => {
      const { run, end } = await ended("tamper");
      assert.equal(end.exitCode, 204, end.log);
      assert.match(end.log, /hpcs-job: failed: checksum mismatch for .*tampered\.tar\.gpg/);
      assert.doesNotMatch(end.log, /volumes mounted|app started/);
      assert.ok(!existsSync(join(run.workdir, "output")));
    });

    it("a failing app: exit code passed on, encrypted output with exit_code 3, nothing left behind (7)", async () => {
      const { run, end } = await ended("appfail");
      assert.equal(end.state, "FAILED", end.log);
      assert.equal(end.exitCode, 3, end.log);
      assert.match(
        end.log.trim().split("\n").at(-1) ?? "",
        /^hpcs-job: failed: the app exited 3; .* result /,
      );
      const files = await f.decryptResult(run.resultPath);
      assert.equal(files.get("exit_code")?.toString().trim(), "3");
      assert.match(resultText(files), /^arg=\[exit\]\narg=\[3\]\n/);
      const priv = /private dir (\/\S+)/.exec(end.log)?.[1];
      assert.ok(priv, end.log);
      assert.ok(!existsSync(priv), "private dir wiped");
      assert.deepEqual(
        (await f.fuseMountsOf(aliceUid)).filter((m) => m.includes(priv) || m.includes(run.jobDir)),
        [],
      );
      assert.deepEqual(await f.processesMentioning(priv), [], "no spire-agent (or anything) of the job left");
      assert.ok(!existsSync(join(run.jobDir, `volumes-${run.id}`)), "cipher dirs removed");
      assert.ok(!existsSync(staleDir), "an ended job's leftover private dir was swept");
    });

    it("scancel: the app is stopped, volumes unmounted, agent stopped, private dir wiped (TERM trap)", async () => {
      const { run, end } = await ended("cancel");
      assert.equal(end.state, "CANCELLED", end.log);
      assert.equal(
        end.log.trim().split("\n").at(-1),
        "hpcs-job: failed: interrupted by SIGTERM (scancel or the time limit)",
      );
      const priv = /private dir (\/\S+)/.exec(end.log)?.[1];
      assert.ok(priv, end.log);
      assert.ok(!existsSync(priv), "private dir wiped");
      assert.deepEqual(
        (await f.fuseMountsOf(aliceUid)).filter((m) => m.includes(priv) || m.includes(run.jobDir)),
        [],
      );
      assert.deepEqual(await f.processesMentioning(priv), []);
      // The app had run: what it wrote is kept, encrypted.
      const files = await f.decryptResult(run.resultPath);
      assert.match(resultText(files), /^arg=\[wait-release\]\n/);
    });

    it("takes workdir, job name and arguments with spaces, quotes, $() and ; literally; a file payload (8)", async () => {
      const { run, end } = await ended("weird");
      assert.equal(end.exitCode, 0, end.log);
      assert.equal(end.log.trim().split("\n").at(-1), `hpcs-job: result ${run.resultPath}`);
      const name = (await runOk("scontrol", ["show", "job", "-o", run.id])).match(
        /\bJobName=(.*?) UserId=/,
      )?.[1];
      assert.equal(name, `job 'n' "m" $(touch pwned); ls`);
      const files = await f.decryptResult(run.resultPath);
      const args = ["a b", "'single'", '"double"', "$(touch pwned)", "; ls", "`id`", "#", "*"];
      assert.equal(
        resultText(files),
        args.map((a) => `arg=[${a}]\n`).join("") +
          "env=[x $(y) 'z';]\n" +
          (await expectedSummary([
            { name: f.artifact(f.data).name, path: f.datasetDir },
            { name: f.artifact(f.dataFile).name, path: f.dataFilePath },
          ])),
      );
      assert.ok(!existsSync(join(run.jobDir, "pwned")) && !existsSync(join(run.workdir, "pwned")));
      assert.match(end.log, /hpcs-job: runc: ignoring singularity flag '--nv' \(only --env\/-e apply\)/);
    });
  });
});
