import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type JobRecord,
  LocalJobFiles,
  readJobRecord,
  RECORD_VERSION,
} from "../../../../client/job-prep/job-record.js";

describe("client/job-prep/job-record", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "job-record-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  function record(files: LocalJobFiles): JobRecord {
    return {
      version: RECORD_VERSION,
      jobId: "42",
      jobName: "hpcs-job",
      host: "login.example.org",
      port: 22,
      user: "alice",
      workdir: "/scratch/p1/alice",
      jobDir: "/scratch/p1/alice/.hpcs/hpcs-job-20261122T101500Z-0a1b2c3d",
      outputFile: "/scratch/p1/alice/output/hpcs-job-42.tar.gpg",
      logFile: "/scratch/p1/alice/.hpcs/hpcs-job-20261122T101500Z-0a1b2c3d/job.out",
      privateKeyFile: files.finalKeyPath("42"),
      submitted: "2026-11-22T10:15:00.000Z",
    };
  }

  it("keeps the key under a pending name until the job id is known, then renames both (0600)", async () => {
    const files = await LocalJobFiles.create(dir, "PRIVATE KEY");
    const pending = await readdir(dir);
    assert.equal(pending.length, 1);
    assert.match(pending[0] ?? "", /^hpcs-job-pending-[0-9a-f]{12}\.key\.asc$/);
    const r = record(files);
    const out = await files.commit(r);
    assert.deepEqual((await readdir(dir)).sort(), ["hpcs-job-42.json", "hpcs-job-42.key.asc"]);
    assert.equal(out.keyFile, join(dir, "hpcs-job-42.key.asc"));
    assert.equal(await readFile(out.keyFile, "utf8"), "PRIVATE KEY");
    for (const f of [out.keyFile, out.recordFile]) assert.equal((await stat(f)).mode & 0o777, 0o600, f);
    assert.deepEqual(await readJobRecord(out.recordFile), r);
  });

  it("discard removes the pending key", async () => {
    const files = await LocalJobFiles.create(dir, "PRIVATE KEY");
    await files.discard();
    assert.deepEqual(await readdir(dir), []);
  });

  it("refuses a key dir it cannot write, in one line", async () => {
    await assert.rejects(
      LocalJobFiles.create(join(dir, "missing"), "k"),
      /cannot write the job's private key in .*: make it writable or give --keys-dir/,
    );
  });

  it("reads records with one-line errors", async () => {
    await assert.rejects(
      readJobRecord(join(dir, "hpcs-job-9.json")),
      /no job record .*hpcs-job-9\.json: give the job id/,
    );
    await writeFile(join(dir, "bad.json"), "{");
    await assert.rejects(readJobRecord(join(dir, "bad.json")), /is not JSON/);
    await writeFile(join(dir, "partial.json"), JSON.stringify({ version: 1, jobId: "1" }));
    await assert.rejects(
      readJobRecord(join(dir, "partial.json")),
      /has no host: it was not written by hpcs job-prep/,
    );
  });
});
