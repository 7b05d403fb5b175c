import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SpiffeId } from "../../../lib/spiffe-id.js";
import {
  type EntrySpec,
  InvalidRegistrationError,
  SpireError,
  type SpireRegistration,
} from "../../../lib/spire/registration.js";
import { SpireServerCli } from "../../../lib/spire/server-cli.js";
import { SpireServerClient } from "../../../lib/spire/server-client.js";
import { eventually, runOk } from "../../support/exec.js";
import { agentConfig, nonce } from "../../support/spire.js";
import { loadStackEnv, type StackEnv } from "../../support/stack-env.js";

/** A spire-agent attested with the given join token; stop() kills it and removes its directory. */
async function startAgent(env: StackEnv, token: string): Promise<{ stop: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), "hpcs-spire-test-agent-"));
  const socket = join(dir, "agent.sock");
  await writeFile(join(dir, "agent.conf"), agentConfig(env, dir, socket, token));
  const child: ChildProcess = spawn(env.spire.agent_bin, ["run", "-config", join(dir, "agent.conf")], {
    stdio: ["ignore", "ignore", "ignore"],
  });
  const stop = async () => {
    child.kill("SIGKILL");
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await eventually("spire-agent healthy", 30_000, () =>
      runOk(env.spire.agent_bin, ["healthcheck", "-socketPath", socket]),
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return { stop };
}

function spec(spiffeId: SpiffeId, parentId: SpiffeId, value = "uid:1000"): EntrySpec {
  return { spiffeId, parentId, selectors: [{ type: "unix", value }] };
}

/** The same behaviour, whichever way the SPIRE server is reached. */
function registrationSuite(mode: "grpc" | "cli"): void {
  describe(`spire: registration through ${mode === "grpc" ? "the admin API socket" : "the spire-server CLI"}`, () => {
    let env: StackEnv;
    let spire: SpireRegistration;
    let base: SpiffeId;
    // Every parent under which this suite may have created entries, swept in after().
    const parents: SpiffeId[] = [];
    const agents: { stop: () => Promise<void> }[] = [];

    before(() => {
      env = loadStackEnv();
      base = SpiffeId.of(env.trust_domain, "test-spire", nonce(), mode);
      spire =
        mode === "grpc"
          ? new SpireServerClient({ socketPath: env.spire.admin_socket })
          : new SpireServerCli({
              preCommand: [],
              serverBin: env.spire.server_bin,
              socketPath: env.spire.admin_socket,
            });
    });

    after(async () => {
      if (!spire) return;
      for (const a of agents) await a.stop();
      for (const p of parents) {
        const left = await spire.listEntries({ byParentId: p }).catch(() => []);
        if (left.length) await spire.batchDeleteEntries(left.map((e) => e.id)).catch(() => undefined);
      }
      spire.close();
    });

    const parent = (...segments: string[]) => {
      const p = base.child(...segments);
      parents.push(p);
      return p;
    };

    it("creates a join token, and one that carries an agent alias", async () => {
      const before = Date.now();
      const t = await spire.createJoinToken({ ttlSeconds: 120 });
      assert.match(t.token, /^[0-9a-f-]{36}$/);
      assert.ok(Math.abs(t.expiresAt.getTime() - (before + 120_000)) < 10_000, t.expiresAt.toISOString());

      const agentId = base.child("h", "node1", "u", "alice");
      const aliased = await spire.createJoinToken({ ttlSeconds: 60, agentId });
      // SPIRE records the alias as an entry parented to the agent's future join-token ID.
      const nodeId = SpiffeId.of(env.trust_domain, "spire", "agent", "join_token", aliased.token);
      parents.push(nodeId);
      const alias = await spire.listEntries({ byParentId: nodeId });
      assert.deepEqual(
        alias.map((e) => e.spiffeId.toString()),
        [agentId.toString()],
      );
    });

    it("creates 50 entries in one batch, lists them by parent and deletes them", async () => {
      const p = parent("h", "batch");
      const specs = Array.from({ length: 50 }, (_, i) =>
        spec(p.child("s", `secret-${i}`), p, `uid:${1000 + i}`),
      );
      const res = await spire.batchCreateEntries(specs);
      assert.equal(res.length, 50);
      const ids = res.map((r, i) => {
        assert.equal(r.status, "created", `entry ${i}: ${JSON.stringify(r)}`);
        return r.status === "created" ? r.id : "";
      });
      assert.equal(new Set(ids).size, 50);

      const listed = await spire.listEntries({ byParentId: p });
      assert.deepEqual(listed.map((e) => e.id).sort(), [...ids].sort());
      const e7 = listed.find((e) => e.spiffeId.equals(p.child("s", "secret-7")));
      assert.deepEqual(e7?.selectors, [{ type: "unix", value: "uid:1007" }]);
      assert.ok(e7?.parentId.equals(p));

      const del = await spire.batchDeleteEntries(ids);
      assert.ok(
        del.every((d) => d.status === "deleted"),
        JSON.stringify(del.filter((d) => d.status !== "deleted")),
      );
      assert.deepEqual(await spire.listEntries({ byParentId: p }), []);
      assert.deepEqual(
        (await spire.batchDeleteEntries([ids[0] ?? ""])).map((d) => d.status),
        ["not-found"],
      );
    });

    it("is idempotent: the same entry again reports the existing id and makes no duplicate", async () => {
      const p = parent("h", "idem");
      const id = p.child("s", "data");
      const first = await spire.batchCreateEntries([
        { ...spec(id, p), hint: "data", expiresAt: new Date(Date.now() + 3_600_000) },
      ]);
      assert.equal(first[0]?.status, "created");
      const firstId = first[0]?.status === "created" ? first[0].id : "";
      const expiresAt = first[0]?.status === "created" ? first[0].entry.expiresAt : undefined;
      assert.ok(expiresAt && expiresAt.getTime() > Date.now());

      const again = await spire.batchCreateEntries([spec(id, p), spec(id, p)]);
      assert.deepEqual(
        again.map((r) => [r.status, r.status === "error" ? r.message : r.id]),
        [
          ["exists", firstId],
          ["exists", firstId],
        ],
      );
      const byId = await spire.listEntries({ bySpiffeId: id });
      assert.deepEqual(
        byId.map((e) => e.id),
        [firstId],
      );
      assert.equal(byId[0]?.hint, "data");
    });

    it("lists by SPIFFE ID across parents", async () => {
      const p1 = parent("h", "n1");
      const p2 = parent("h", "n2");
      const id = base.child("s", "shared");
      const other = base.child("s", "other");
      const res = await spire.batchCreateEntries([spec(id, p1), spec(id, p2), spec(other, p1)]);
      assert.ok(
        res.every((r) => r.status === "created"),
        JSON.stringify(res),
      );
      const listed = await spire.listEntries({ bySpiffeId: id });
      assert.deepEqual(
        listed.map((e) => e.parentId.toString()).sort(),
        [p1.toString(), p2.toString()].sort(),
      );
      const both = await spire.listEntries({ bySpiffeId: id, byParentId: p2 });
      assert.equal(both.length, 1);
    });

    it("reports a per-entry error without failing the rest of the batch", async () => {
      const p = parent("h", "mixed");
      // Valid for us, refused by SPIRE: an entry whose SPIFFE ID lies in another trust domain.
      const foreign = SpiffeId.of("elsewhere.test", "x");
      const res = await spire.batchCreateEntries([spec(p.child("s", "ok"), p), spec(foreign, p)]);
      assert.equal(res[0]?.status, "created");
      assert.equal(res[1]?.status, "error");
      assert.equal(res[1]?.status === "error" && res[1].code, 3);
    });

    it("gets the bundle with the X.509 authorities the bench published", async () => {
      const b = await spire.getBundle();
      assert.equal(b.trustDomain, env.trust_domain);
      assert.ok(b.x509Authorities.length >= 1);
      const certs = b.x509Authorities.map((der) => new X509Certificate(der));
      assert.ok(certs.every((c) => c.ca));
      const published = new X509Certificate(readFileSync(env.spire.bundle));
      assert.ok(
        certs.some((c) => c.fingerprint256 === published.fingerprint256),
        "bundle.pem is among the authorities",
      );
      assert.ok(b.jwtAuthorities.length >= 1);
      assert.ok(b.jwtAuthorities.every((k) => k.keyId && k.publicKey.length > 0));
    });

    it("evicts an agent attested with a join token", async function () {
      this.timeout(90_000);
      const t = await spire.createJoinToken({ ttlSeconds: 120 });
      const agent = await startAgent(env, t.token);
      agents.push(agent);
      const nodeId = SpiffeId.of(env.trust_domain, "spire", "agent", "join_token", t.token);
      await spire.evictAgent(nodeId);
      await assert.rejects(spire.evictAgent(nodeId), (e: unknown) => e instanceof SpireError && e.code === 5);
    });
  });
}

registrationSuite("grpc");
registrationSuite("cli");

describe("spire: both modes see one server; hostile input through the CLI", () => {
  let env: StackEnv;
  let grpcClient: SpireServerClient;
  let cli: SpireServerCli;
  let base: SpiffeId;
  const canary = join(tmpdir(), `hpcs-spire-canary-${nonce()}`);

  before(() => {
    env = loadStackEnv();
    base = SpiffeId.of(env.trust_domain, "test-spire", nonce(), "cross");
    grpcClient = new SpireServerClient({ socketPath: env.spire.admin_socket });
    cli = new SpireServerCli({
      preCommand: [],
      serverBin: env.spire.server_bin,
      socketPath: env.spire.admin_socket,
    });
  });

  after(async () => {
    if (!grpcClient) return;
    const left = await grpcClient.listEntries({ byParentId: base }).catch(() => []);
    if (left.length) await grpcClient.batchDeleteEntries(left.map((e) => e.id));
    grpcClient.close();
    await rm(canary, { force: true });
  });

  it("an entry created through the CLI is the one the admin API reports as existing", async () => {
    const id = base.child("s", "x");
    const viaCli = await cli.batchCreateEntries([spec(id, base)]);
    assert.equal(viaCli[0]?.status, "created");
    const viaGrpc = await grpcClient.batchCreateEntries([spec(id, base)]);
    assert.equal(viaGrpc[0]?.status, "exists");
    assert.equal(
      viaGrpc[0]?.status === "exists" && viaGrpc[0].id,
      viaCli[0]?.status === "created" && viaCli[0].id,
    );
  });

  it("refuses hostile values bound for argv and creates nothing, not even the valid half of a batch", async () => {
    const hostile = "a;rm -rf /";
    await assert.rejects(
      cli.batchCreateEntries([
        spec(base.child("s", "fine"), base),
        { spiffeId: base.child("s", "bad"), parentId: base, selectors: [{ type: hostile, value: "uid:0" }] },
      ]),
      InvalidRegistrationError,
    );
    await assert.rejects(cli.batchDeleteEntries([hostile]), InvalidRegistrationError);
    const fake = {
      toString: () => hostile,
      trustDomain: env.trust_domain,
      path: "/x",
    } as unknown as SpiffeId;
    await assert.rejects(cli.evictAgent(fake), InvalidRegistrationError);
    await assert.rejects(cli.listEntries({ bySpiffeId: fake }), InvalidRegistrationError);
    assert.deepEqual(
      (await grpcClient.listEntries({ bySpiffeId: base.child("s", "fine") })).map((e) => e.id),
      [],
    );
  });

  it("passes a shell-looking selector value through stdin literally, never to a shell", async () => {
    const value = `path:/x $(touch ${canary}); touch ${canary}; \`touch ${canary}\``;
    const id = base.child("s", "literal");
    const res = await cli.batchCreateEntries([
      { spiffeId: id, parentId: base, selectors: [{ type: "unix", value }] },
    ]);
    assert.equal(res[0]?.status, "created", JSON.stringify(res));
    const listed = await grpcClient.listEntries({ bySpiffeId: id });
    assert.deepEqual(listed[0]?.selectors, [{ type: "unix", value }]);
    assert.equal(existsSync(canary), false);
  });
});
