/**
 * node-attestation = munge on the real bench: credentials made by the real `munge` as alice and bob
 * (runuser), verified with the real `unmunge` against the bench's munged (the site's key), a real
 * Slurm job of alice's (sbatch, squeue), the accepted token used by a real spire-agent, and the
 * replay records in the real Vault under the hpcs server's own policy (serverPolicy). The service
 * is built by createServerApp from an INI config that leaves node-attestation at its default.
 *
 * Two more munged daemons, started by this test as the munge user, play real parts:
 *   - "replica": the bench's key, origin 127.0.0.2 — a second server replica in the same realm
 *     (its munged has never seen the first replica's credentials) and, when alice encodes through
 *     it, a credential from another host;
 *   - "foreign": a key of its own — a credential from another realm (forged, as far as we know).
 */

import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { randomBytes } from "node:crypto";
import { chmodSync, chownSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { parseServerConfig } from "../../../lib/config/server-config.js";
import { SpiffeId } from "../../../lib/spiffe-id.js";
import { SpireServerClient } from "../../../lib/spire/server-client.js";
import { serverPolicy } from "../../../lib/vault/policies.js";
import { TokenKeeper } from "../../../lib/vault/token-keeper.js";
import { VaultClient } from "../../../lib/vault/vault-client.js";
import { createServerApp, type ServerApp } from "../../../server/app.js";
import { credentialDigest, mungePayload } from "../../../server/service/munge-attestor.js";
import { DEFAULT_REPLAY_PREFIX } from "../../../server/service/munge-replay.js";
import type { NodeTokenRequest, NodeTokenResponse } from "../../../server/service/types.js";
import { ServiceError } from "../../../server/service/types.js";
import { AgentWithToken } from "../../support/agent-with-token.js";
import { eventually, run, runOk } from "../../support/exec.js";
import { nonce } from "../../support/spire.js";
import { loadStackEnv, type StackEnv } from "../../support/stack-env.js";

const ctx = { requestId: "munge-it" };

function code(c: string, re: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof ServiceError, String(err));
    assert.equal(err.code, c, err.message);
    assert.match(err.message, re);
    assert.ok(!err.message.includes("\n") && !err.message.includes("MUNGE:"), err.message);
    return true;
  };
}

/** A munged of this test's own, run as the munge user (spawned with its uid/gid, killed by its pid). */
class Munged {
  private constructor(
    readonly dir: string,
    readonly socket: string,
    private readonly child: ChildProcess,
  ) {}

  /** key "bench": the bench's realm key; "own": a fresh random key (another realm). */
  static async start(opts: { key: "bench" | "own"; origin?: string }): Promise<Munged> {
    const uid = Number((await runOk("id", ["-u", "munge"])).trim());
    const gid = Number((await runOk("id", ["-g", "munge"])).trim());
    const dir = mkdtempSync(join(tmpdir(), "hpcs-munged-"));
    chownSync(dir, uid, gid);
    // munged insists that every client can reach its socket's directory.
    chmodSync(dir, 0o755);
    let keyFile = "/etc/munge/munge.key";
    if (opts.key === "own") {
      keyFile = join(dir, "munge.key");
      writeFileSync(keyFile, randomBytes(128), { mode: 0o600 });
      chownSync(keyFile, uid, gid);
    }
    const socket = join(dir, "munge.sock");
    const args = [
      "-F",
      `--socket=${socket}`,
      `--key-file=${keyFile}`,
      `--pid-file=${join(dir, "munged.pid")}`,
      `--seed-file=${join(dir, "munged.seed")}`,
      `--log-file=${join(dir, "munged.log")}`,
      ...(opts.origin ? [`--origin=${opts.origin}`] : []),
    ];
    const child = spawn("/usr/sbin/munged", args, { uid, gid, stdio: "ignore" });
    const m = new Munged(dir, socket, child);
    try {
      await eventually("munged socket", 15_000, async () => {
        if (child.exitCode !== null) return "exited";
        if (!existsSync(socket)) throw new Error("no socket yet");
        return "up";
      }).then((s) => {
        if (s === "exited") throw new Error(`munged exited ${child.exitCode}`);
      });
    } catch (err) {
      await m.stop();
      throw err;
    }
    return m;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const exited = once(this.child, "exit");
      this.child.kill("SIGTERM");
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

describe("node-attestation = munge (real munge, Slurm, SPIRE, Vault)", function () {
  this.timeout(180_000);
  const n = nonce();
  const policy = `test-munge-${n}`;

  let env: StackEnv;
  let node: string;
  let root: VaultClient;
  let spire: SpireServerClient;
  let replica: Munged | undefined;
  let foreign: Munged | undefined;
  const apps: ServerApp[] = [];
  let appA: ServerApp;
  let appB: ServerApp;
  let appShortAge: ServerApp;
  let aliceJob: string | undefined;
  const accepted: { req: NodeTokenRequest; res: NodeTokenResponse }[] = [];
  const agents: AgentWithToken[] = [];
  const digests: string[] = [];
  const logLines: string[] = [];
  const tokenAccessors: string[] = [];
  const vaultCli = (args: string[]) =>
    runOk(env.vault.bin, args, {
      env: {
        ...process.env,
        VAULT_ADDR: env.vault.url,
        VAULT_CACERT: env.ca_cert,
        VAULT_TOKEN: env.vault.root_token,
      },
    });

  /** `munge -s <payload>` as `user`, through `socket` (default: the bench's munged). */
  async function credential(user: string, payload: string, opts: { socket?: string; ttl?: number } = {}) {
    const args = ["-u", user, "--", "munge", "--socket", opts.socket ?? env.munge.socket, "-s", payload];
    if (opts.ttl !== undefined) args.push("-t", String(opts.ttl));
    const c = (await runOk("runuser", args)).trim();
    digests.push(credentialDigest(c));
    return c;
  }
  const payload = (nodeName: string, user: string) =>
    mungePayload(nodeName, user, randomBytes(16).toString("hex"));

  async function app(mungeSocket: string, extra: string[] = []): Promise<ServerApp> {
    const config = parseServerConfig(
      [
        "[spire-server]",
        `address = ${env.spire.server_address}`,
        `port = ${env.spire.server_port}`,
        `trust-domain = ${env.trust_domain}`,
        `socket-path = ${env.spire.admin_socket}`,
        "[vault]",
        `url = ${env.vault.url}`,
        `ca-file = ${env.ca_cert}`,
        `kv-mount = ${env.vault.kv_mount}`,
        `jwt-mount = ${env.vault.jwt_mount}`,
        "[hpcs-server]",
        "agent-model = per-job",
        // node-attestation is left out on purpose: munge is the default.
        `munge-socket = ${mungeSocket}`,
        ...extra,
        "",
      ].join("\n"),
      "munge-it.ini",
    );
    assert.equal(config.hpcsServer.nodeAttestation, "munge");
    // The server's Vault token carries exactly the hpcs server's policy (no root shortcuts).
    const created = JSON.parse(
      await vaultCli(["token", "create", `-policy=${policy}`, "-ttl=20m", "-format=json"]),
    ) as { auth: { client_token: string; accessor: string; lease_duration: number } };
    tokenAccessors.push(created.auth.accessor);
    const logger = pino({ level: "info" }, { write: (s: string) => void logLines.push(s) });
    const a = await createServerApp(config, logger, {
      vaultLogin: () =>
        TokenKeeper.start({
          login: async () => ({
            token: created.auth.client_token,
            accessor: created.auth.accessor,
            policies: [policy],
            leaseDurationSec: created.auth.lease_duration,
            renewable: false,
          }),
        }),
    });
    apps.push(a);
    return a;
  }

  async function issue(a: ServerApp, req: NodeTokenRequest): Promise<NodeTokenResponse> {
    const res = await a.service.nodeJoinToken(ctx, req);
    accepted.push({ req, res });
    return res;
  }

  /** SPIRE entries for …/h/<node>/u/<user> (the per-job user alias): none may exist after a refusal. */
  async function aliasEntries(nodeName: string, user: string) {
    return spire.listEntries({ bySpiffeId: SpiffeId.of(env.trust_domain, "h", nodeName, "u", user) });
  }
  async function assertNothingInSpire() {
    for (const [nd, u] of [
      [node, "alice"],
      [node, "bob"],
      ["127.0.0.2", "alice"],
    ] as const) {
      assert.deepEqual(await aliasEntries(nd, u), [], `entries for /h/${nd}/u/${u}`);
    }
  }

  async function runningJobsOf(user: string): Promise<string[]> {
    const out = await runOk("squeue", ["-h", "-w", node, "-u", user, "-t", "RUNNING", "-o", "%i"]);
    return out.split("\n").filter(Boolean);
  }

  before(async () => {
    env = loadStackEnv();
    node = env.slurm.node;
    assert.equal(node, hostname().split(".")[0], "the bench's Slurm node is this host");
    root = new VaultClient({
      url: env.vault.url,
      caPem: readFileSync(env.ca_cert),
      timeoutMs: 10_000,
      token: env.vault.root_token,
      kvMount: env.vault.kv_mount,
      jwtMount: env.vault.jwt_mount,
    });
    await root.writePolicy(
      policy,
      serverPolicy({ serverRole: policy, kvMount: env.vault.kv_mount, jwtMount: env.vault.jwt_mount }),
    );
    spire = new SpireServerClient({ socketPath: env.spire.admin_socket });
    replica = await Munged.start({ key: "bench", origin: "127.0.0.2" });
    foreign = await Munged.start({ key: "own" });
    appA = await app(env.munge.socket);
    appB = await app(replica.socket);
    appShortAge = await app(env.munge.socket, ["munge-max-age = 2s"]);
  });

  after(async () => {
    if (aliceJob) await run("scancel", [aliceJob]);
    for (const a of agents) await a.stop().catch(() => undefined);
    for (const { req, res } of accepted) {
      await appA?.service
        .endJob(ctx, { node: req.node, user: req.user, joinToken: res.joinToken })
        .catch(() => undefined);
    }
    for (const a of apps) await a.close().catch(() => undefined);
    await replica?.stop().catch(() => undefined);
    await foreign?.stop().catch(() => undefined);
    // Our digests out of the shared replay records: check-and-set, so a concurrent claim stays; a
    // record left empty is destroyed if nobody wrote it since (a window of one request, test only).
    const paths = new Set(digests.map((d) => `${DEFAULT_REPLAY_PREFIX}/${d.slice(0, 2)}`));
    for (const path of paths) {
      for (let i = 0; i < 5; i++) {
        const rec = await root?.kvRead(path).catch(() => undefined);
        if (!rec) break;
        const seen = { ...((rec.data.seen as Record<string, number> | undefined) ?? {}) };
        for (const d of digests) delete seen[d];
        if (Object.keys(seen).length === 0) {
          const meta = await root.kvReadMetadata(path).catch(() => undefined);
          if (meta?.currentVersion !== rec.version) continue;
          await root.kvDestroyAll(path).catch(() => undefined);
          break;
        }
        const written = await root.kvWrite(path, { seen }, { cas: rec.version }).then(
          () => true,
          () => false,
        );
        if (written) break;
      }
    }
    for (const a of tokenAccessors)
      await vaultCli(["token", "revoke", "-accessor", a]).catch(() => undefined);
    await root?.deletePolicy(policy).catch(() => undefined);
    spire?.close();
  });

  it("refuses alice while she has no running job on the node (permission_denied)", async () => {
    assert.deepEqual(await runningJobsOf("alice"), [], "alice already has a running job on the bench");
    const c = await credential("alice", payload(node, "alice"));
    await assert.rejects(
      appA.service.nodeJoinToken(ctx, { node, user: "alice", mungeCredential: c }),
      code("permission_denied", /alice has no running Slurm job on node/),
    );
    await assertNothingInSpire();
  });

  it("accepts alice's credential from inside her running job: token for …/h/<node>/u/alice + NSS groups", async () => {
    aliceJob = (
      await runOk("runuser", [
        "-u",
        "alice",
        "--",
        "sbatch",
        "--parsable",
        "-p",
        env.slurm.partition,
        "-w",
        node,
        "-o",
        "/dev/null",
        "-J",
        `hpcs-munge-${n}`,
        "--wrap",
        "sleep 300",
      ])
    )
      .trim()
      .split(";")[0];
    assert.match(aliceJob ?? "", /^\d+$/);
    await eventually("alice's job RUNNING", 90_000, async () => {
      const state = (await runOk("squeue", ["-h", "-j", aliceJob ?? "", "-o", "%T"])).trim();
      if (state !== "RUNNING") throw new Error(`job ${aliceJob} is ${state}`);
    });

    const c = await credential("alice", payload(node, "alice"));
    const res = await issue(appA, { node, user: "alice", mungeCredential: c });
    const td = env.trust_domain;
    assert.equal(res.agentSpiffeId, `spiffe://${td}/h/${node}/u/alice`);
    assert.deepEqual(
      [...res.aliases].sort(),
      ["alice", "shared", "proj-a"].map((g) => `spiffe://${td}/h/${node}/g/${g}`).sort(),
    );
    // The token is real: a spire-agent attests with it and holds exactly these aliases.
    const agent = await AgentWithToken.start(env, res.joinToken);
    agents.push(agent);
    const entries = await spire.listEntries({ byParentId: SpiffeId.parse(agent.nodeId) });
    assert.deepEqual(
      entries.map((e) => e.spiffeId.toString()).sort(),
      [res.agentSpiffeId, ...res.aliases].sort(),
    );
    assert.ok(
      logLines.some((l) => l.includes("munge node attestation accepted") && l.includes(aliceJob ?? "-")),
    );
  });

  it("refuses the same credential again: on the same replica (munged) and on another (Vault)", async () => {
    const c = await credential("alice", payload(node, "alice"));
    await issue(appA, { node, user: "alice", mungeCredential: c });
    // The bench's munged has decoded it already: MUNGE itself says replayed.
    await assert.rejects(
      appA.service.nodeJoinToken(ctx, { node, user: "alice", mungeCredential: c }),
      code("unauthenticated", /Replayed credential/),
    );
    // The other replica's munged has never seen it: only the replay record in Vault stops it.
    await assert.rejects(
      appB.service.nodeJoinToken(ctx, { node, user: "alice", mungeCredential: c }),
      code("unauthenticated", /already used/),
    );
    const digest = credentialDigest(c);
    const rec = await root.kvRead(`${DEFAULT_REPLAY_PREFIX}/${digest.slice(0, 2)}`);
    assert.ok(rec && digest in (rec.data.seen as object), "the digest is remembered in Vault");

    // And a fresh credential on the other replica works (the realm and the checks are the same).
    const fresh = await credential("alice", payload(node, "alice"));
    const res = await issue(appB, { node, user: "alice", mungeCredential: fresh });
    assert.equal(res.agentSpiffeId, `spiffe://${env.trust_domain}/h/${node}/u/alice`);
    for (const { req, res: r } of accepted.splice(0)) {
      await appA.service.endJob(ctx, { node: req.node, user: req.user, joinToken: r.joinToken });
    }
    for (const a of agents.splice(0)) await a.stop();
    await assertNothingInSpire();
  });

  it("refuses stale credentials: past MUNGE's own TTL, and older than munge-max-age", async () => {
    const shortTtl = await credential("alice", payload(node, "alice"), { ttl: 1 });
    const older = await credential("alice", payload(node, "alice"));
    await new Promise((r) => setTimeout(r, 3_500));
    await assert.rejects(
      appA.service.nodeJoinToken(ctx, { node, user: "alice", mungeCredential: shortTtl }),
      code("unauthenticated", /Expired credential/),
    );
    await assert.rejects(
      appShortAge.service.nodeJoinToken(ctx, { node, user: "alice", mungeCredential: older }),
      code("unauthenticated", /old, more than munge-max-age \(2s\)/),
    );
    await assertNothingInSpire();
  });

  it("refuses bob's credential used for alice, and bob without a job on the node", async () => {
    const forAlice = await credential("bob", payload(node, "alice"));
    await assert.rejects(
      appA.service.nodeJoinToken(ctx, { node, user: "alice", mungeCredential: forAlice }),
      code("permission_denied", /created by uid \d+, not by alice/),
    );
    const forBob = await credential("bob", payload(node, "bob"));
    await assert.rejects(
      appA.service.nodeJoinToken(ctx, { node, user: "bob", mungeCredential: forBob }),
      code("permission_denied", /bob has no running Slurm job on node/),
    );
    await assertNothingInSpire();
  });

  it("refuses a payload naming another host, and a credential encoded on another host", async () => {
    const otherInPayload = await credential("alice", payload("127.0.0.2", "alice"));
    await assert.rejects(
      appA.service.nodeJoinToken(ctx, { node, user: "alice", mungeCredential: otherInPayload }),
      code("permission_denied", new RegExp(`names node 127\\.0\\.0\\.2, not ${node}`)),
    );
    // Claiming the other host outright: the bench's munged encodes 127.0.0.1, not 127.0.0.2.
    const claimOther = await credential("alice", payload("127.0.0.2", "alice"));
    await assert.rejects(
      appA.service.nodeJoinToken(ctx, { node: "127.0.0.2", user: "alice", mungeCredential: claimOther }),
      code("permission_denied", /encoded on 127\.0\.0\.1, which is not an address of node 127\.0\.0\.2/),
    );
    // Made on "another host" (the replica's munged, origin 127.0.0.2), presented for this node.
    const elsewhere = await credential("alice", payload(node, "alice"), { socket: replica?.socket ?? "" });
    await assert.rejects(
      appA.service.nodeJoinToken(ctx, { node, user: "alice", mungeCredential: elsewhere }),
      code(
        "permission_denied",
        new RegExp(`encoded on 127\\.0\\.0\\.2, which is not an address of node ${node}`),
      ),
    );
    await assertNothingInSpire();
  });

  it("refuses garbage and a credential from another MUNGE realm (unauthenticated)", async () => {
    const req = (mungeCredential: string) => ({ node, user: "alice", mungeCredential });
    await assert.rejects(appA.service.nodeJoinToken(ctx, req("hello")), code("unauthenticated", /malformed/));
    const random = `MUNGE:${randomBytes(120).toString("base64")}:`;
    await assert.rejects(
      appA.service.nodeJoinToken(ctx, req(random)),
      code("unauthenticated", /refused by MUNGE/),
    );
    await assert.rejects(
      appA.service.nodeJoinToken(ctx, { node, user: "alice" }),
      code("unauthenticated", /mungeCredential is missing/),
    );
    const forged = await credential("alice", payload(node, "alice"), { socket: foreign?.socket ?? "" });
    await assert.rejects(
      appA.service.nodeJoinToken(ctx, req(forged)),
      code("unauthenticated", /refused by MUNGE/),
    );
    // A payload that is not ours, from a real credential.
    const notOurs = await credential("alice", `${node} alice`);
    await assert.rejects(appA.service.nodeJoinToken(ctx, req(notOurs)), code("unauthenticated", /payload/));
    await assertNothingInSpire();
  });
});
