import assert from "node:assert/strict";
import { AuditLog } from "../../../../server/service/audit-log.js";
import { auditedService } from "../../../../server/service/audited-service.js";
import {
  BEARER,
  ENROLLMENT_SECRET,
  FakeService,
  NODE_JOIN_TOKEN,
  OPERATOR_TOKEN,
  SECRET_VALUES,
} from "../transport/fixtures.js";

interface Line {
  requestId: string;
  action: string;
  result: string;
  caller?: string;
  callerVerified?: boolean;
  peer?: string;
  code?: string;
  reason?: string;
  target?: Record<string, unknown>;
}

describe("server/service/audited-service", () => {
  let inner: FakeService;
  let raw: string[];
  const lines = () => raw.map((l) => JSON.parse(l) as Line);
  const service = () => auditedService(inner, new AuditLog((l) => raw.push(l)));
  const ctx = { requestId: "req-7", peerAddress: "10.0.0.7", bearerJwt: BEARER };
  const MUNGE = "MUNGE:AwQFAAD-munge-credential-bytes:";

  beforeEach(() => {
    inner = new FakeService();
    raw = [];
  });

  it("audits every call but health, with the vouched-for caller, and never a secret", async () => {
    const s = service();
    await s.registerClient(ctx, { clientName: "alice", enrollmentSecret: ENROLLMENT_SECRET });
    await s.grant(ctx, {
      secret: "data1",
      nodes: ["nid001"],
      users: ["alice"],
      groups: [],
      expiresAt: new Date("2030-01-31T12:00:00Z"),
    });
    await s.listGrants(ctx);
    await s.revoke(ctx, { secret: "data1", deleteSecret: true });
    await s.nodeJoinToken(ctx, { node: "nid001", user: "alice", operatorToken: OPERATOR_TOKEN });
    await s.nodeJoinToken(ctx, { node: "nid001", user: "alice", mungeCredential: MUNGE });
    await s.endJob(ctx, { node: "nid001", user: "alice", joinToken: NODE_JOIN_TOKEN });
    await s.health(ctx);

    const all = raw.join("");
    for (const secret of [...SECRET_VALUES, MUNGE]) assert.ok(!all.includes(secret), `leaked ${secret}`);
    assert.deepEqual(
      lines().map((l) => [l.action, l.result, l.caller, l.callerVerified, l.requestId, l.peer]),
      [
        ["client.register", "ok", "spiffe://hpcs.test/c/alice", true, "req-7", "10.0.0.7"],
        ["grant.create", "ok", "spiffe://hpcs.test/c/alice/workload", true, "req-7", "10.0.0.7"],
        ["grant.list", "ok", "spiffe://hpcs.test/c/alice/workload", true, "req-7", "10.0.0.7"],
        ["grant.revoke", "ok", "spiffe://hpcs.test/c/alice/workload", true, "req-7", "10.0.0.7"],
        ["node.token", "ok", "spiffe://hpcs.test/h/nid001/u/alice", true, "req-7", "10.0.0.7"],
        ["node.token", "ok", "spiffe://hpcs.test/h/nid001/u/alice", true, "req-7", "10.0.0.7"],
        ["node.end-job", "ok", "node:nid001/user:alice", true, "req-7", "10.0.0.7"],
      ],
    );
    assert.deepEqual(lines()[1]?.target, {
      secret: "data1",
      nodes: ["nid001"],
      users: ["alice"],
      groups: [],
      expiresAt: "2030-01-31T12:00:00.000Z",
      spiffeId: "spiffe://hpcs.test/c/alice/s/data1",
      vaultRole: "hpcs-alice-data1",
      entriesCreated: 1,
      entriesExisting: 0,
    });
    assert.deepEqual(lines()[0]?.target, {
      clientName: "alice",
      method: "enrollment",
      clientId: "alice",
      rotated: true,
    });
  });

  it("audits a refusal with the claimed caller, the code and the reason, and rethrows the same error", async () => {
    inner.failWith = "permission_denied";
    const audit = new AuditLog((l) => raw.push(l));
    const s = auditedService(inner, audit);
    let thrown: unknown;
    await s.nodeJoinToken(ctx, { node: "nid001", user: "bob", operatorToken: OPERATOR_TOKEN }).catch((e) => {
      thrown = e;
    });
    assert.ok(audit.wasRecorded(thrown));
    assert.deepEqual(lines(), [
      {
        type: "audit",
        time: (lines()[0] as unknown as { time: string }).time,
        requestId: "req-7",
        action: "node.token",
        result: "refused",
        caller: "node:nid001/user:bob",
        callerVerified: false,
        peer: "10.0.0.7",
        code: "permission_denied",
        reason: "fake permission_denied from nodeJoinToken",
        target: { node: "nid001", user: "bob" },
      },
    ]);
  });

  it("an unexpected error is audited as error with a generic reason (its text may hold secrets)", async () => {
    inner.failWith = "plain";
    await assert.rejects(service().grant(ctx, { secret: "d", nodes: ["n"], users: ["u"], groups: [] }));
    const [l] = lines();
    assert.equal(l?.result, "error");
    assert.equal(l?.code, "internal");
    assert.ok(!raw.join("").includes(BEARER));
    assert.match(l?.reason ?? "", /see the server log for this request id/);
  });
});
