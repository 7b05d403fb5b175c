import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AuditLog, formatAuditLine, openAuditSink, outcomeOf } from "../../../../server/service/audit-log.js";
import { ServiceError } from "../../../../server/service/types.js";

const T = new Date("2030-01-31T12:00:00.000Z");

describe("server/service/audit-log", () => {
  it("formats one JSON line with the fixed fields, in order", () => {
    const line = formatAuditLine(
      {
        requestId: "req-1",
        action: "grant.create",
        result: "ok",
        caller: "spiffe://hpcs.test/c/lab-a/workload",
        callerVerified: true,
        peer: "10.0.0.7",
        target: { secret: "data-1", nodes: ["n1", "n2"], entriesCreated: 2, skipped: undefined },
      },
      T,
    );
    assert.ok(!line.includes("\n"));
    assert.deepEqual(JSON.parse(line), {
      type: "audit",
      time: "2030-01-31T12:00:00.000Z",
      requestId: "req-1",
      action: "grant.create",
      result: "ok",
      caller: "spiffe://hpcs.test/c/lab-a/workload",
      callerVerified: true,
      peer: "10.0.0.7",
      target: { secret: "data-1", nodes: ["n1", "n2"], entriesCreated: 2 },
    });
  });

  it("scrubs every given secret from every field, and keeps lines short and single", () => {
    const secret = "S3CRET-abcdef-0123456789";
    const line = formatAuditLine(
      {
        requestId: "r",
        action: "client.register",
        result: "refused",
        code: "unauthenticated",
        caller: `client:${secret}`,
        reason: `bad secret ${secret}\nsecond line`,
        target: { clientName: secret, nodes: Array.from({ length: 50 }, (_, i) => `n${i}-${secret}`) },
      },
      T,
      [secret, undefined, ""],
    );
    assert.ok(!line.includes(secret), line);
    const o = JSON.parse(line) as { reason: string; target: { nodes: string[] }; callerVerified: boolean };
    assert.equal(o.reason, "bad secret [redacted] second line");
    assert.equal(o.callerVerified, false);
    assert.equal(o.target.nodes.length, 21);
    assert.equal(o.target.nodes[20], "…(50 in all)");
    const long = formatAuditLine(
      { requestId: "r", action: "grant.create", result: "ok", target: { secret: "x".repeat(5000) } },
      T,
    );
    assert.ok(long.length < 400, String(long.length));
  });

  it("classifies refusals, errors and unexpected throws; an unexpected message never leaks", () => {
    assert.deepEqual(outcomeOf(new ServiceError("permission_denied", "not yours")), {
      result: "refused",
      code: "permission_denied",
      reason: "not yours",
    });
    assert.equal(outcomeOf(new ServiceError("resource_exhausted", "slow down")).result, "refused");
    assert.equal(outcomeOf(new ServiceError("unavailable", "vault down")).result, "error");
    const o = outcomeOf(new Error("vault token hvs.SECRET was refused"));
    assert.equal(o.result, "error");
    assert.equal(o.code, "internal");
    assert.ok(!o.reason.includes("hvs."));
  });

  it("AuditLog writes whole lines, remembers what it audited, and survives a failing sink", () => {
    const lines: string[] = [];
    const audit = new AuditLog(
      (l) => lines.push(l),
      () => T,
    );
    const err = new ServiceError("not_found", "no grant");
    audit.recordFailure({ requestId: "r", action: "grant.revoke", caller: "c" }, err);
    assert.equal(lines.length, 1);
    assert.ok(lines[0]?.endsWith("\n"));
    assert.equal((JSON.parse(lines[0] ?? "") as { result: string }).result, "refused");
    assert.equal(audit.wasRecorded(err), true);
    assert.equal(audit.wasRecorded(new ServiceError("not_found", "no grant")), false);

    const failures: string[] = [];
    const broken = new AuditLog(
      () => {
        throw new Error("disk full");
      },
      () => T,
      (e) => failures.push(e.message),
    );
    broken.record({ requestId: "r", action: "grant.list", result: "ok" });
    assert.deepEqual(failures, ["disk full"]);
  });

  it("a file destination is appended to and created 0600; stdout is the given writer; a bad path is one clear error", () => {
    const dir = mkdtempSync(join(tmpdir(), "hpcs-audit-"));
    try {
      const path = join(dir, "audit.log");
      for (const n of [1, 2]) {
        const out = openAuditSink({ to: "file", path }, () => assert.fail("not stdout"));
        out.sink(`line ${n}\n`);
        out.close();
        out.close();
      }
      assert.equal(readFileSync(path, "utf8"), "line 1\nline 2\n");
      assert.equal(statSync(path).mode & 0o777, 0o600);
      const seen: string[] = [];
      openAuditSink({ to: "stdout" }, (l) => seen.push(l)).sink("x\n");
      assert.deepEqual(seen, ["x\n"]);
      assert.throws(
        () => openAuditSink({ to: "file", path: join(dir, "no", "audit.log") }, () => undefined),
        /audit-log: cannot open .* \(ENOENT\); create its directory or fix the path/,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
