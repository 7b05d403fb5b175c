import assert from "node:assert/strict";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decodeJwt } from "jose";
import { HpcsServerClient, HpcsServerError } from "../../../client/hpcs-server-client.js";
import { ClientIdentityError, establishIdentity } from "../../../client/identity/client-identity.js";
import { type ClientConfig, parseClientConfig } from "../../../lib/config/client-config.js";
import { SpiffeId } from "../../../lib/spiffe-id.js";
import { SpireServerClient } from "../../../lib/spire/server-client.js";
import { clientPolicyName, grantPolicyName, secretPath } from "../../../lib/vault/policies.js";
import { VaultClient } from "../../../lib/vault/vault-client.js";
import { VaultError } from "../../../lib/vault/vault-error.js";
import { freePort, HpcsServerProcess } from "../../support/hpcs-server.js";
import { forgetAgent, nonce } from "../../support/spire.js";
import { loadStackEnv, type StackEnv } from "../../support/stack-env.js";

/** Pids of running spire-agent processes whose config lies under `root` (read from /proc). */
function agentsUnder(root: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const argv = readFileSync(`/proc/${name}/cmdline`, "utf8").split("\0");
      if (readlinkSync(`/proc/${name}/exe`).endsWith("spire-agent") && argv.some((a) => a.startsWith(root))) {
        pids.push(Number(name));
      }
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return pids;
}

// The client's identity end to end on the real bench: the real hpcs-server process enrolls and
// registers the client, a real spire-agent is started from the join token, the workload's JWT-SVID
// logs in to the real Vault. Cleans up every entry, agent, role, policy and record it causes.
describe("client identity (real server, spire-agent, Vault)", function () {
  this.timeout(180_000);
  const n = nonce();
  const id = `idt-${n}`;
  const other = `idt-${n}-other`;
  const secretName = `x-${n}`;

  let env: StackEnv;
  let srv: HpcsServerProcess | undefined;
  let spire: SpireServerClient;
  let root: VaultClient;
  let dir = "";
  let agentsRoot = "";
  let secretFile = "";
  let firstSecret = "";

  /** The client's INI as a user writes it, with `extra` lines replacing or adding keys. */
  function config(extra: { url?: string; trustBundle?: boolean; secretFile?: string } = {}): ClientConfig {
    const server = srv;
    if (!server) throw new Error("server missing (before() failed)");
    const text = [
      "[spire-server]",
      `address = ${env.spire.server_address}`,
      `port = ${env.spire.server_port}`,
      `trust-domain = ${env.trust_domain}`,
      ...(extra.trustBundle === false ? [] : [`trust-bundle = ${env.spire.bundle}`]),
      `agent-bin = ${env.spire.agent_bin}`,
      "[hpcs-server]",
      `url = ${extra.url ?? server.url}`,
      `ca-file = ${env.ca_cert}`,
      `enrollment-secret-file = ${extra.secretFile ?? secretFile}`,
      `client-name = ${id}`,
      "[vault]",
      `url = ${env.vault.url}`,
      `ca-file = ${env.ca_cert}`,
      "[supercomputer]",
      `address = ${env.ssh.host}`,
      "username = alice",
      "",
    ].join("\n");
    return parseClientConfig(text, join(dir, "client.ini"));
  }

  const noAgentLeft = async () => {
    assert.deepEqual(agentsUnder(agentsRoot), [], "no spire-agent left running");
    assert.deepEqual(readdirSync(agentsRoot), [], "no agent directory left behind");
  };

  before(async () => {
    env = loadStackEnv();
    spire = new SpireServerClient({ socketPath: env.spire.admin_socket });
    root = new VaultClient({
      url: env.vault.url,
      caPem: readFileSync(env.ca_cert),
      timeoutMs: 10_000,
      token: env.vault.root_token,
      kvMount: env.vault.kv_mount,
      jwtMount: env.vault.jwt_mount,
    });
    dir = await mkdtemp(join(tmpdir(), "hpcs-identity-test-"));
    agentsRoot = join(dir, "agents");
    await mkdir(agentsRoot, { mode: 0o700 });
    secretFile = join(dir, "enroll.secret");
    srv = await HpcsServerProcess.start(env);
    firstSecret = (await srv.enroll(id)).enrollmentSecret;
    await writeFile(secretFile, `${firstSecret}\n`, { mode: 0o600 });
    // Another client's secret, which this client must not be able to read.
    await root.kvWrite(secretPath(other, "x"), { v: "other's" });
  });

  after(async () => {
    if (spire) {
      const td = env.trust_domain;
      // The agents' join-token IDs are the parents of the …/c/<id> alias entries the server made.
      const aliases = await spire.listEntries({ bySpiffeId: SpiffeId.of(td, "c", id) }).catch(() => []);
      for (const a of aliases) await forgetAgent(env, a.parentId.toString()).catch(() => undefined);
      for (const sid of [SpiffeId.of(td, "c", id, "workload"), SpiffeId.of(td, "c", id, "s", secretName)]) {
        const es = await spire.listEntries({ bySpiffeId: sid }).catch(() => []);
        if (es.length > 0) await spire.batchDeleteEntries(es.map((e) => e.id)).catch(() => undefined);
      }
      spire.close();
    }
    if (root) {
      for (const name of [clientPolicyName(id), grantPolicyName(id, secretName)]) {
        await root.deleteJwtRole(name).catch(() => undefined);
        await root.deletePolicy(name).catch(() => undefined);
      }
      const paths = [
        `hpcs-server/enrollments/${id}`,
        `hpcs-server/grants/${id}`,
        secretPath(id, secretName),
        secretPath(id, "y"),
        secretPath(other, "x"),
      ];
      for (const p of paths) await root.kvDestroyAll(p).catch(() => undefined);
    }
    await srv?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("refuses a config without trust-bundle before registering (the secret stays unspent)", async () => {
    await assert.rejects(establishIdentity(config({ trustBundle: false }), { tmpRoot: agentsRoot }), (e) => {
      assert.ok(e instanceof ClientIdentityError, String(e));
      assert.equal(e.step, "configuration");
      assert.match(e.message, /set \[spire-server\] trust-bundle/);
      assert.ok(!e.message.includes("\n"));
      return true;
    });
    assert.equal(await readFile(secretFile, "utf8"), `${firstSecret}\n`);
    await noAgentLeft();
  });

  it("a wrong enrollment secret fails in one line and starts no agent", async () => {
    const wrong = join(dir, "wrong.secret");
    const bogus = `${firstSecret.slice(0, -1)}${firstSecret.endsWith("A") ? "B" : "A"}`;
    await writeFile(wrong, `${bogus}\n`, { mode: 0o600 });
    await assert.rejects(establishIdentity(config({ secretFile: wrong }), { tmpRoot: agentsRoot }), (e) => {
      assert.ok(e instanceof ClientIdentityError, String(e));
      assert.equal(e.step, "register");
      assert.match(e.message, /enrollment secret for client .* is not valid/);
      assert.ok(!e.message.includes("\n") && !e.message.includes(bogus) && !e.message.includes(firstSecret));
      return true;
    });
    assert.equal(await readFile(wrong, "utf8"), `${bogus}\n`, "the file is left as it was");
    await noAgentLeft();
  });

  it("an unreachable server URL fails in one line and starts no agent", async () => {
    const url = `https://127.0.0.1:${await freePort()}`;
    await assert.rejects(establishIdentity(config({ url }), { tmpRoot: agentsRoot }), (e) => {
      assert.ok(e instanceof ClientIdentityError, String(e));
      assert.equal(
        e.message,
        `client identity: register failed: cannot reach the hpcs server at ${url}: ECONNREFUSED; check [hpcs-server] url`,
      );
      return true;
    });
    await noAgentLeft();
  });

  it("establishes the identity: real agent, workload SVIDs, a Vault login confined to its own prefix", async () => {
    const warnings: string[] = [];
    const identity = await establishIdentity(config(), {
      tmpRoot: agentsRoot,
      onWarning: (w) => warnings.push(w),
    });
    try {
      assert.deepEqual(warnings, []);
      assert.equal(identity.clientId, id);
      assert.equal(identity.workloadSpiffeId, `spiffe://${env.trust_domain}/c/${id}/workload`);
      assert.equal(identity.vaultRole, clientPolicyName(id));
      assert.equal(identity.secretPathPrefix, `hpcs/${id}/`);
      assert.equal(agentsUnder(agentsRoot).length, 1, "one spire-agent runs for the identity");

      // The rotated enrollment secret replaced the spent one, 0600.
      const next = (await readFile(secretFile, "utf8")).trim();
      assert.match(next, /^[A-Za-z0-9_-]{43}$/);
      assert.notEqual(next, firstSecret);
      assert.equal((await stat(secretFile)).mode & 0o777, 0o600);
      assert.deepEqual(
        readdirSync(dir).filter((f) => f.endsWith(".tmp")),
        [],
        "no temp file left",
      );
      const ttl = (identity.nextEnrollmentExpiresAt?.getTime() ?? 0) - Date.now();
      assert.ok(ttl > 29 * 86400_000 && ttl <= 30 * 86400_000, `next secret lifetime ${ttl} ms`);

      // Vault: create under its own prefix; nothing of another client's, not even its own read back.
      await identity.vault.kvWrite(secretPath(id, secretName), { k: "v" }, { cas: 0 });
      await identity.writeSecret("y", { k: "v" });
      const denied = (e: unknown) => e instanceof VaultError && e.status === 403;
      await assert.rejects(identity.vault.kvRead(secretPath(other, "x")), denied);
      await assert.rejects(identity.vault.kvWrite(secretPath(other, "x2"), { k: "v" }), denied);
      await assert.rejects(identity.vault.kvRead(secretPath(id, secretName)), denied);

      // The server accepts its JWT-SVID: grant, then revoke with the secret.
      const jwt = await identity.serverJwt();
      const claims = decodeJwt(jwt);
      assert.equal(claims.sub, identity.workloadSpiffeId);
      assert.deepEqual([claims.aud].flat(), ["hpcs-server"]);
      const server = new HpcsServerClient({ url: srv?.url ?? "", caFile: env.ca_cert });
      const g = await server.grant(jwt, {
        secret: secretName,
        nodes: ["nid001"],
        users: ["alice"],
        groups: [],
      });
      assert.equal(g.spiffeId, `spiffe://${env.trust_domain}/c/${id}/s/${secretName}`);
      const r = await server.revoke(await identity.serverJwt(), secretName, { deleteSecret: true });
      assert.equal(r.secretDeleted, true);
    } finally {
      await identity.close();
    }
    await identity.close();
    await noAgentLeft();
    // The Vault token was revoked.
    await assert.rejects(identity.writeSecret("z", { k: "v" }), /closed/);
    await assert.rejects(identity.vault.kvWrite(secretPath(id, "z"), { k: "v" }), (e: unknown) => {
      return e instanceof VaultError && e.status === 403;
    });
  });

  it("the spent secret is refused; the rotated one in the file registers again (and rotates again)", async () => {
    const server = new HpcsServerClient({ url: srv?.url ?? "", caFile: env.ca_cert });
    const selectors = [{ type: "unix", value: `uid:${process.getuid?.() ?? 0}` }];
    await assert.rejects(
      server.register({ clientName: id, enrollmentSecret: firstSecret, selectors }),
      (e: unknown) => {
        assert.ok(e instanceof HpcsServerError, String(e));
        assert.equal(e.code, "unauthenticated");
        assert.equal(e.status, 401);
        return true;
      },
    );
    const rotated = (await readFile(secretFile, "utf8")).trim();
    const identity = await establishIdentity(config(), { tmpRoot: agentsRoot });
    try {
      assert.equal(identity.workloadSpiffeId, `spiffe://${env.trust_domain}/c/${id}/workload`);
      await identity.writeSecret(`again-${n}`, { k: "v" }).then(
        () => root.kvDestroyAll(secretPath(id, `again-${n}`)),
        (e: unknown) => assert.fail(String(e)),
      );
    } finally {
      await identity.close();
    }
    const third = (await readFile(secretFile, "utf8")).trim();
    assert.notEqual(third, rotated);
    await assert.rejects(
      server.register({ clientName: id, enrollmentSecret: rotated, selectors }),
      (e: unknown) => e instanceof HpcsServerError && e.code === "unauthenticated",
    );
    await noAgentLeft();
  });
});
