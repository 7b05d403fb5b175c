import assert from "node:assert/strict";
import {
  credentialDigest,
  type HostResolver,
  MungeAttestor,
  type MungeAttestorOptions,
  mungePayload,
  NssHostResolver,
} from "../../../../server/service/munge-attestor.js";
import { type ReplayGuard, ReplayStoreError } from "../../../../server/service/munge-replay.js";
import {
  type GroupResolver,
  NssUidResolver,
  type UidResolver,
} from "../../../../server/service/node-attestation.js";
import { NodeTokens } from "../../../../server/service/nodes.js";
import { type RunningJobs, SlurmJobsError } from "../../../../server/service/slurm-jobs.js";
import { ServiceError } from "../../../../server/service/types.js";
import {
  type CredentialDecoder,
  type MungeCredentialInfo,
  UnmungeError,
  type UnmungeResult,
} from "../../../../server/service/unmunge.js";
import { FakeSpire } from "../../../support/node-fakes.js";

const ctx = { requestId: "t" };
const NOW = new Date("2026-01-01T00:00:00Z");
const NOW_SEC = NOW.getTime() / 1000;
const CRED = `MUNGE:${Buffer.from("a credential's bytes").toString("base64")}:`;
const NONCE = "0123456789abcdef0123";

function code(c: string, re?: RegExp) {
  return (err: unknown) =>
    err instanceof ServiceError &&
    err.code === c &&
    !err.message.includes("\n") &&
    !err.message.includes(CRED) &&
    (re === undefined || re.test(err.message));
}

/** Everything the attestor asks, answered from fields a test changes; records what was asked. */
class World implements CredentialDecoder, ReplayGuard, RunningJobs, UidResolver, GroupResolver, HostResolver {
  result: UnmungeResult | Error = ok({});
  hosts = new Map<string, string[]>([["n1", ["10.0.0.1"]]]);
  users = new Map<number, string>([
    [1001, "alice"],
    [1002, "bob"],
  ]);
  jobs = new Map<string, string[] | Error>([["n1/1001", ["42"]]]);
  claimed = new Map<string, Date>();
  replayError: Error | undefined;
  calls: string[] = [];

  async decode(credential: string): Promise<UnmungeResult> {
    this.calls.push(`decode ${credential === CRED ? "CRED" : credential}`);
    if (this.result instanceof Error) throw this.result;
    return this.result;
  }
  async claim(digest: string, until: Date): Promise<boolean> {
    this.calls.push("claim");
    if (this.replayError) throw this.replayError;
    if (this.claimed.has(digest)) return false;
    this.claimed.set(digest, until);
    return true;
  }
  async runningJobs(node: string, uid: number): Promise<string[]> {
    this.calls.push(`squeue ${node} ${uid}`);
    const j = this.jobs.get(`${node}/${uid}`) ?? [];
    if (j instanceof Error) throw j;
    return j;
  }
  async userOf(uid: number): Promise<string | undefined> {
    return this.users.get(uid);
  }
  async groupsOf(user: string): Promise<string[]> {
    return user === "alice" ? ["alice", "shared", "proj-a"] : [user];
  }
  async addressesOf(node: string): Promise<string[]> {
    return this.hosts.get(node) ?? [];
  }
  attestor(extra: Partial<MungeAttestorOptions> = {}): MungeAttestor {
    return new MungeAttestor({
      decoder: this,
      replay: this,
      jobs: this,
      users: this,
      groups: this,
      hosts: this,
      maxAgeSec: 300,
      now: () => NOW,
      ...extra,
    });
  }
}

function ok(
  over: Partial<Omit<MungeCredentialInfo, "payload">> & { payload?: Buffer | string },
): UnmungeResult {
  const payload = over.payload ?? mungePayload("n1", "alice", NONCE);
  return {
    status: 0,
    info: {
      encodeHost: "10.0.0.1",
      encodeTime: NOW_SEC - 5,
      ttl: 300,
      uid: 1001,
      gid: 1004,
      ...over,
      payload: Buffer.isBuffer(payload) ? payload : Buffer.from(payload),
    },
  };
}

const req = (over: Record<string, unknown> = {}) => ({
  node: "n1",
  user: "alice",
  mungeCredential: CRED,
  ...over,
});

describe("MungeAttestor", () => {
  let w: World;
  beforeEach(() => {
    w = new World();
  });

  it("accepts a fresh credential from the user's uid on the node with a running job, and claims it once", async () => {
    const got = await w.attestor().attest(req(), ctx);
    assert.deepEqual(got, { node: "n1", user: "alice", uid: 1001, groups: ["alice", "shared", "proj-a"] });
    assert.deepEqual(w.calls, ["decode CRED", "squeue n1 1001", "claim"]);
    // Remembered until it could no longer pass the age check: ENCODE_TIME/now + max age + skew.
    assert.deepEqual([...w.claimed], [[credentialDigest(CRED), new Date((NOW_SEC + 300 + 60) * 1000)]]);
  });

  it("accepts the credential with munge's trailing newline and an IPv4-mapped node address", async () => {
    w.hosts.set("n1", ["::ffff:10.0.0.1"]);
    await w.attestor().attest(req({ mungeCredential: `${CRED}\n` }), ctx);
  });

  it("refuses a replayed credential (unauthenticated)", async () => {
    const att = w.attestor();
    await att.attest(req(), ctx);
    await assert.rejects(att.attest(req(), ctx), code("unauthenticated", /already used/));
  });

  it("refuses a missing, empty, non-string or malformed credential without running unmunge", async () => {
    const att = w.attestor();
    for (const c of [
      undefined,
      "",
      42,
      "MUNGE:abc",
      "munge:YWJj:",
      "MUNGE:YW Jj:",
      `MUNGE:${"A".repeat(5000)}:`,
    ]) {
      await assert.rejects(att.attest(req({ mungeCredential: c }), ctx), code("unauthenticated"), String(c));
    }
    assert.deepEqual(w.calls, []);
  });

  it("refuses what MUNGE refuses: forged, expired, replayed to this munged (unauthenticated)", async () => {
    const att = w.attestor();
    for (const [status, reason, re] of [
      [8, "Failed to match armor prefix", /Failed to match armor prefix.*munge -s/],
      [11, "Invalid MAC type", /Invalid MAC/],
      [14, "Invalid credential", /Invalid credential/],
      [15, "Expired credential", /Expired credential/],
      [17, "Replayed credential", /Replayed credential.*fresh credential/],
    ] as const) {
      w.result = { status, reason };
      await assert.rejects(att.attest(req(), ctx), code("unauthenticated", re));
    }
    assert.equal(w.claimed.size, 0);
  });

  it("reports a munged it cannot reach, or an unmunge that did not run, as unavailable", async () => {
    w.result = { status: 6, reason: 'Failed to access "/run/munge/x": No such file or directory' };
    await assert.rejects(w.attestor().attest(req(), ctx), code("unavailable", /munge-socket/));
    w.result = new UnmungeError('unmunge-bin "unmunge" not found: install munge');
    await assert.rejects(w.attestor().attest(req(), ctx), code("unavailable", /not found/));
  });

  it("refuses a credential older than munge-max-age, and one from the future beyond the skew", async () => {
    w.result = ok({ encodeTime: NOW_SEC - 301 });
    await assert.rejects(
      w.attestor().attest(req(), ctx),
      code("unauthenticated", /301s old.*munge-max-age \(300s\)/),
    );
    w.result = ok({ encodeTime: NOW_SEC - 10 });
    await assert.rejects(
      w.attestor({ maxAgeSec: 5 }).attest(req(), ctx),
      code("unauthenticated", /munge-max-age \(5s\)/),
    );
    w.result = ok({ encodeTime: NOW_SEC + 61 });
    await assert.rejects(w.attestor().attest(req(), ctx), code("unauthenticated", /future.*NTP/));
    // The edges themselves pass.
    w.result = ok({ encodeTime: NOW_SEC - 300, payload: mungePayload("n1", "alice", `${NONCE}a`) });
    await w.attestor().attest(req(), ctx);
    w.result = ok({ encodeTime: NOW_SEC + 60, payload: mungePayload("n1", "alice", `${NONCE}b`) });
    await w
      .attestor()
      .attest(req({ mungeCredential: `MUNGE:${Buffer.from("other").toString("base64")}:` }), ctx);
  });

  it("refuses a payload that is not an hpcs node-token payload (unauthenticated)", async () => {
    const bad = [
      "not json",
      "[1]",
      "null",
      JSON.stringify({ aud: "hpcs-node-token", node: "n1", user: "alice" }),
      JSON.stringify({ aud: "hpcs-node-token", node: "n1", user: "alice", nonce: NONCE, extra: 1 }),
      JSON.stringify({ aud: "slurm", node: "n1", user: "alice", nonce: NONCE }),
      mungePayload("n1", "alice", "short"),
      mungePayload("n1", "alice", "has space in it!!"),
      mungePayload("N1;rm", "alice", NONCE),
      mungePayload("n1", "../alice", NONCE),
      "x".repeat(2000),
      Buffer.from([0xff, 0xfe, 0x00]),
    ];
    for (const payload of bad) {
      w.result = ok({ payload });
      await assert.rejects(
        w.attestor().attest(req(), ctx),
        code("unauthenticated", /payload/),
        String(payload),
      );
    }
    assert.equal(w.claimed.size, 0);
  });

  it("refuses a payload naming another host or user (permission_denied), nothing claimed", async () => {
    w.hosts.set("n2", ["10.0.0.1"]);
    w.jobs.set("n2/1001", ["7"]);
    w.result = ok({ payload: mungePayload("n2", "alice", NONCE) });
    await assert.rejects(w.attestor().attest(req(), ctx), code("permission_denied", /names node n2, not n1/));
    w.result = ok({ payload: mungePayload("n1", "bob", NONCE) });
    await assert.rejects(
      w.attestor().attest(req(), ctx),
      code("permission_denied", /names user bob, not alice/),
    );
    assert.equal(w.claimed.size, 0);
  });

  it("refuses a credential encoded on another host, or for a node that does not resolve", async () => {
    w.result = ok({ encodeHost: "10.0.0.2" });
    await assert.rejects(
      w.attestor().attest(req(), ctx),
      code("permission_denied", /encoded on 10\.0\.0\.2, which is not an address of node n1/),
    );
    w.hosts.delete("n1");
    w.result = ok({});
    await assert.rejects(w.attestor().attest(req(), ctx), code("permission_denied", /does not resolve/));
    assert.equal(w.claimed.size, 0);
  });

  it("refuses bob's credential presented for alice, and a uid NSS does not know", async () => {
    // bob made it, asking for alice in the payload too: the uid decides.
    w.result = ok({ uid: 1002 });
    await assert.rejects(
      w.attestor().attest(req(), ctx),
      code("permission_denied", /uid 1002, not by alice/),
    );
    w.result = ok({ uid: 4242 });
    await assert.rejects(w.attestor().attest(req(), ctx), code("permission_denied", /uid 4242/));
    assert.equal(w.claimed.size, 0);
  });

  it("refuses a user without a running job on the node, without consuming the credential", async () => {
    w.jobs.delete("n1/1001");
    const att = w.attestor();
    await assert.rejects(
      att.attest(req(), ctx),
      code("permission_denied", /no running Slurm job on node n1/),
    );
    assert.equal(w.claimed.size, 0);
    // The job starts; the same credential now works (once).
    w.jobs.set("n1/1001", ["42"]);
    await att.attest(req(), ctx);
  });

  it("maps Slurm's answers: unknown node → permission_denied, squeue failure → unavailable", async () => {
    w.jobs.set("n1/1001", new SlurmJobsError("unknown-node", "node n1 is not a Slurm node"));
    await assert.rejects(w.attestor().attest(req(), ctx), code("permission_denied", /not a Slurm node/));
    w.jobs.set("n1/1001", new SlurmJobsError("unavailable", "squeue failed: timed out"));
    await assert.rejects(w.attestor().attest(req(), ctx), code("unavailable", /squeue failed/));
  });

  it("maps replay-store failures to unavailable/internal", async () => {
    w.replayError = new ReplayStoreError(true, "replay store: kv read: connection refused");
    await assert.rejects(w.attestor().attest(req(), ctx), code("unavailable", /replay store/));
    w.replayError = new ReplayStoreError(false, "replay store: kv write: 403 permission denied");
    await assert.rejects(w.attestor().attest(req(), ctx), code("internal", /replay store/));
  });

  it("refuses bad node and user names before anything runs (invalid_argument)", async () => {
    await assert.rejects(w.attestor().attest(req({ node: "-w" }), ctx), code("invalid_argument"));
    await assert.rejects(w.attestor().attest(req({ user: "alice;id" }), ctx), code("invalid_argument"));
    assert.deepEqual(w.calls, []);
  });

  it("gives the same digest to two spellings of one credential", () => {
    // Non-canonical last base64 digit: decodes to the same bytes.
    assert.equal(credentialDigest("MUNGE:YWI=:"), credentialDigest("MUNGE:YWJ=:"));
    assert.notEqual(credentialDigest("MUNGE:YWI=:"), credentialDigest("MUNGE:YWM=:"));
    assert.match(credentialDigest(CRED), /^[0-9a-f]{64}$/);
  });
});

describe("NodeTokens with MungeAttestor", () => {
  it("issues the per-job token for exactly the attested user and groups", async () => {
    const w = new World();
    const spire = new FakeSpire();
    const nodes = new NodeTokens({
      spire,
      attestor: w.attestor(),
      trustDomain: "hpcs.test",
      agentModel: "per-job",
    });
    const res = await nodes.nodeJoinToken(ctx, req());
    assert.equal(res.agentSpiffeId, "spiffe://hpcs.test/h/n1/u/alice");
    assert.deepEqual(
      res.aliases,
      ["alice", "shared", "proj-a"].map((g) => `spiffe://hpcs.test/h/n1/g/${g}`),
    );
  });

  it("creates nothing in SPIRE on any refusal", async () => {
    const w = new World();
    const spire = new FakeSpire();
    const nodes = new NodeTokens({
      spire,
      attestor: w.attestor(),
      trustDomain: "hpcs.test",
      agentModel: "per-job",
    });
    w.result = { status: 15, reason: "Expired credential" };
    await assert.rejects(nodes.nodeJoinToken(ctx, req()), code("unauthenticated"));
    w.result = ok({ uid: 1002 });
    await assert.rejects(nodes.nodeJoinToken(ctx, req()), code("permission_denied"));
    w.result = ok({});
    w.jobs.clear();
    await assert.rejects(nodes.nodeJoinToken(ctx, req()), code("permission_denied"));
    await assert.rejects(
      nodes.nodeJoinToken(ctx, req({ mungeCredential: undefined })),
      code("unauthenticated"),
    );
    assert.deepEqual(spire.calls, []);
    assert.deepEqual(spire.entries, []);
  });
});

describe("NssUidResolver and NssHostResolver (this host's NSS)", () => {
  it("names uid 0 and knows no uid that does not exist", async () => {
    const r = new NssUidResolver();
    assert.equal(await r.userOf(0), "root");
    assert.equal(await r.userOf(3_999_999_999), undefined);
    assert.equal(await r.userOf(-1), undefined);
    assert.equal(await r.userOf(1.5), undefined);
  });

  it("reports NSS failures as unavailable", async () => {
    const r = new NssUidResolver({ getentBin: "/nonexistent/getent" });
    await assert.rejects(r.userOf(0), code("unavailable", /getent passwd 0/));
  });

  it("resolves localhost and nothing for a name that does not exist", async () => {
    const h = new NssHostResolver();
    assert.ok((await h.addressesOf("localhost")).some((a) => a === "127.0.0.1" || a === "::1"));
    assert.deepEqual(await h.addressesOf("no-such-node.invalid"), []);
  });
});
