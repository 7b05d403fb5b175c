import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parse, stringify } from "yaml";
import { serverPolicy } from "../../../lib/vault/policies.js";
import { VaultClient } from "../../../lib/vault/vault-client.js";
import { eventually, run, runOk, type RunResult } from "../../support/exec.js";
import { CLIENT_CLI } from "../../support/hpcs-client.js";
import { freePort } from "../../support/hpcs-server.js";
import { httpsJson } from "../../support/https-json.js";
import { ClientTraces } from "../../support/job-side.js";
import { forgetAgent, nonce, spireServer } from "../../support/spire.js";
import { loadStackEnv, sshUser, type StackEnv } from "../../support/stack-env.js";

// compose/docker-compose.server.yml for real on the bench: the server image built from server/Dockerfile
// (bench base), the spire-agent sidecar (a local image of the bench's binary, as the bench override
// builds it), bootstrapped as an operator does it by hand (join token for the agent, a workload entry
// for the server's uid, its Vault policy and jwt role), then `docker-compose up -d`. The containerised
// server must become healthy (SVID from its sidecar, Vault login, SPIRE admin socket) and serve a real
// client: `hpcs-server enroll` inside the container, then `hpcs data-prep` from this host.

// The repository root (this file runs as <out>/test/integration/compose/server-compose.test.js).
const ROOT = fileURLToPath(new URL("../../../../", import.meta.url));
const FILES = [
  "-f",
  join(ROOT, "compose/docker-compose.server.yml"),
  "-f",
  join(ROOT, "compose/docker-compose.server.bench.yml"),
];
const SERVER_IMAGE = "hpcs/server:compose-test";
const AGENT_IMAGE = "hpcs-bench/spire-agent:1.13.3";
const SERVER_UID = 10001;
const SPIRE_UID = 1000;

interface Service {
  image: string;
  user: string;
  pid?: string;
  read_only?: boolean;
  cap_drop?: string[];
  network_mode?: string;
  volumes: string[];
}

describe("compose/docker-compose.server.yml (hpcs server + spire-agent sidecar, real bench)", function () {
  // Image builds: ~30 s warm (tsc), minutes cold.
  this.timeout(600_000);
  const id = nonce();
  const project = `hpcs-srv-${id}`;
  const clientName = `sc-${id}`;
  let env: StackEnv;
  let dockerEnv: NodeJS.ProcessEnv;
  let dir: string;
  let composeEnv: NodeJS.ProcessEnv;
  let root: VaultClient;
  let nodeId: string | undefined;
  let entryId: string | undefined;
  let httpPort: number;
  const serverRole = `test-srv-compose-${id}`;

  /** The merged bench configuration without `ports:` (see docker-compose.server.bench.yml), once written. */
  let merged: string | undefined;
  const compose = (args: string[], extra: NodeJS.ProcessEnv = {}, timeoutMs = 300_000): Promise<RunResult> =>
    run("docker-compose", [...(merged ? ["-f", merged] : FILES), "-p", project, ...args], {
      cwd: ROOT,
      timeoutMs,
      env: { ...composeEnv, ...extra },
    });
  const logs = async (): Promise<string> => (await compose(["logs", "--no-color", "--tail", "20"])).stdout;

  before(async function () {
    env = loadStackEnv();
    dockerEnv = { ...process.env, DOCKER_HOST: `unix://${env.docker.socket}` };
    dir = await mkdtemp(join(tmpdir(), "hpcs-server-compose-"));
    await chmod(dir, 0o755);
    httpPort = await freePort();
    const grpcPort = await freePort();
    const td = env.trust_domain;
    const spiffeId = `spiffe://${td}/hpcs-server/${id}`;
    const agentAlias = `spiffe://${td}/test-srv-compose/${id}/agent`;

    // The operator's files: INI, TLS pair (+ Vault's CA), bundle, the agent's data directory.
    const tls = join(dir, "tls");
    await mkdir(tls);
    await copyFile(env.tls.cert, join(tls, "tls.crt"));
    await copyFile(env.tls.key, join(tls, "tls.key"));
    await copyFile(env.ca_cert, join(tls, "ca.pem"));
    await runOk("chown", ["-R", `${SERVER_UID}:${SERVER_UID}`, tls]);
    await chmod(join(tls, "tls.key"), 0o400);
    await copyFile(env.spire.bundle, join(dir, "bundle.pem"));
    await chmod(join(dir, "bundle.pem"), 0o644);
    const agentData = join(dir, "agent-data");
    await mkdir(agentData, { mode: 0o700 });
    await runOk("chown", [`${SPIRE_UID}:${SPIRE_UID}`, agentData]);
    const ini = join(dir, "server.ini");
    await writeFile(
      ini,
      [
        "[spire-server]",
        `address = ${env.spire.server_address}`,
        `port = ${env.spire.server_port}`,
        `trust-domain = ${td}`,
        `socket-path = /run/spire/server-socket/${env.spire.admin_socket.split("/").pop() ?? "api.sock"}`,
        "",
        "[spire-agent]",
        "socket-path = /run/spire/agent-socket/api.sock",
        "",
        "[vault]",
        `url = ${env.vault.url}`,
        "ca-file = /etc/hpcs/tls/ca.pem",
        `server-role = ${serverRole}`,
        `kv-mount = ${env.vault.kv_mount}`,
        `jwt-mount = ${env.vault.jwt_mount}`,
        "",
        "[hpcs-server]",
        `listen = 127.0.0.1:${httpPort}`,
        `grpc-listen = 127.0.0.1:${grpcPort}`,
        "tls-cert = /etc/hpcs/tls/tls.crt",
        "tls-key = /etc/hpcs/tls/tls.key",
        "agent-model = per-job",
        "node-attestation = operator",
        "",
      ].join("\n"),
      { mode: 0o644 },
    );

    // SPIRE: a join token for the sidecar (aliased to agentAlias) and the server's entry under it.
    const token = (await spireServer(env, ["token", "generate", "-spiffeID", agentAlias, "-ttl", "600"])) as {
      value: string;
    };
    nodeId = `spiffe://${td}/spire/agent/join_token/${token.value}`;
    const created = (await spireServer(env, [
      "entry",
      "create",
      "-parentID",
      agentAlias,
      "-spiffeID",
      spiffeId,
      "-selector",
      `unix:uid:${SERVER_UID}`,
    ])) as { results: { entry: { id: string } }[] };
    entryId = created.results[0]?.entry.id;
    // Vault: the server's policy and its jwt role bound to exactly that SPIFFE ID.
    root = new VaultClient({
      url: env.vault.url,
      caPem: readFileSync(env.ca_cert),
      timeoutMs: 10_000,
      token: env.vault.root_token,
      kvMount: env.vault.kv_mount,
      jwtMount: env.vault.jwt_mount,
    });
    await root.writePolicy(
      serverRole,
      serverPolicy({ serverRole, kvMount: env.vault.kv_mount, jwtMount: env.vault.jwt_mount }),
    );
    await root.writeJwtRole(serverRole, {
      boundSubject: spiffeId,
      boundAudiences: ["vault"],
      tokenPolicies: [serverRole],
      tokenTtlSec: 300,
      tokenMaxTtlSec: 900,
    });

    composeEnv = {
      ...dockerEnv,
      HPCS_SERVER_IMAGE: SERVER_IMAGE,
      HPCS_SPIRE_AGENT_IMAGE: AGENT_IMAGE,
      HPCS_SERVER_CONFIG: ini,
      HPCS_SERVER_TLS_DIR: tls,
      HPCS_SPIRE_SERVER_SOCKET_DIR: dirname(env.spire.admin_socket),
      // The bench's admin socket is root:root 0770 (a site's is SPIRE's user and group).
      HPCS_SPIRE_SERVER_SOCKET_GID: "0",
      HPCS_TRUST_DOMAIN: td,
      HPCS_SPIRE_SERVER_ADDRESS: env.spire.server_address,
      HPCS_SPIRE_SERVER_PORT: String(env.spire.server_port),
      HPCS_SPIRE_BUNDLE: join(dir, "bundle.pem"),
      HPCS_SPIRE_AGENT_DATA: agentData,
      HPCS_AGENT_JOIN_TOKEN: token.value,
    };
    const t0 = Date.now();
    // spire-agent and the npm cache into the build context, then both images as the override builds them.
    await runOk("bash", [join(ROOT, "compose/stage-build-inputs.sh")], {
      env: dockerEnv,
      timeoutMs: 300_000,
    });
    const built = await compose(["build"], {}, 600_000);
    assert.equal(built.code, 0, built.stderr.slice(-3000));
    console.log(`      images built in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  });

  after(async function () {
    if (composeEnv) await compose(["down", "-v", "--remove-orphans"], {}, 120_000);
    if (nodeId) await forgetAgent(env, nodeId, entryId ? [entryId] : []);
    await new ClientTraces(env, clientName).forget().catch(() => undefined);
    if (root) {
      await root.deleteJwtRole(serverRole).catch(() => undefined);
      await root.deletePolicy(serverRole).catch(() => undefined);
    }
    const scratch = sshUser(env, "alice").scratch;
    for (const f of await readdir(scratch).catch(() => [] as string[]))
      if (f.startsWith(clientName)) await rm(join(scratch, f), { force: true });
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("docker-compose (v1) validates it, alone and with the bench override; non-root, read-only, shared pid", async () => {
    const plain = await run(
      "docker-compose",
      ["-f", join(ROOT, "compose/docker-compose.server.yml"), "config"],
      {
        cwd: ROOT,
        env: composeEnv,
      },
    );
    assert.equal(plain.code, 0, plain.stderr);
    const s = (parse(plain.stdout) as { services: Record<string, Service> }).services;
    assert.deepEqual(Object.keys(s).sort(), ["hpcs-server", "spire-agent"]);
    const [server, agent] = [s["hpcs-server"], s["spire-agent"]];
    assert.ok(server && agent);
    assert.equal(agent.image, AGENT_IMAGE);
    assert.equal(server.user, `${SERVER_UID}:${SERVER_UID}`);
    assert.equal(agent.user, `${SPIRE_UID}:${SPIRE_UID}`);
    assert.equal(server.pid, "service:spire-agent");
    for (const svc of [server, agent]) {
      assert.equal(svc.read_only, true);
      assert.deepEqual(svc.cap_drop, ["ALL"]);
      assert.ok(
        svc.volumes.some(
          (v) => v.endsWith(":/run/spire/agent-socket:ro") || v.endsWith(":/run/spire/agent-socket:rw"),
        ),
      );
    }
    assert.equal(server.network_mode, undefined);
    const bench = await compose(["config"]);
    assert.equal(bench.code, 0, bench.stderr);
    const b = (parse(bench.stdout) as { services: Record<string, Service> }).services;
    assert.equal(b["hpcs-server"]?.network_mode, "host");
    assert.equal(b["spire-agent"]?.network_mode, "host");
  });

  it("refuses to start without a required setting, naming the variable", async () => {
    const r = await compose(["config"], { HPCS_SERVER_CONFIG: "" });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /HPCS_SERVER_CONFIG/);
    const r2 = await compose(["config"], { HPCS_SPIRE_AGENT_DATA: "" });
    assert.notEqual(r2.code, 0);
    assert.match(r2.stderr, /HPCS_SPIRE_AGENT_DATA/);
  });

  it("up -d: the server gets its SVID from the sidecar, logs in to Vault and serves a real client", async () => {
    const config = await compose(["config"]);
    assert.equal(config.code, 0, config.stderr);
    const doc = parse(config.stdout) as { services: Record<string, Record<string, unknown>> };
    for (const svc of Object.values(doc.services)) delete svc.ports;
    merged = join(dir, "server-bench.yml");
    await writeFile(merged, stringify(doc));
    const up = await compose(["up", "-d"], {}, 300_000);
    assert.equal(up.code, 0, `${up.stderr}\n${await logs()}`);
    const ca = readFileSync(env.ca_cert);
    await eventually("containerised hpcs-server healthy", 120_000, async () => {
      const r = await httpsJson(`https://localhost:${httpPort}/v1/health`, { ca });
      if (r.status !== 200) throw new Error(`health ${r.status}: ${JSON.stringify(r.body)}`);
    }).catch(async (err: Error) => {
      throw new Error(`${err.message}\n${await logs()}`);
    });

    // Who runs what: the server as its uid, root filesystem read-only.
    const who = await compose([
      "exec",
      "-T",
      "hpcs-server",
      "sh",
      "-c",
      "id -u; touch /opt/x 2>/dev/null || echo ro",
    ]);
    assert.equal(who.code, 0, who.stderr);
    assert.deepEqual(who.stdout.trim().split("\n"), [String(SERVER_UID), "ro"]);

    // The operator's enroll, inside the container; then a client on this host uses it for data-prep.
    const enrolled = await compose([
      "exec",
      "-T",
      "hpcs-server",
      "node",
      "/opt/hpcs/dist/server/main.js",
      "enroll",
      clientName,
      "--json",
      "--ttl",
      "15m",
      "--config",
      "/etc/hpcs/server.ini",
    ]);
    assert.equal(enrolled.code, 0, `${enrolled.stderr}\n${await logs()}`);
    const home = join(dir, "client");
    await mkdir(home);
    await writeFile(join(home, "enrollment.secret"), `${enrolled.stdout.trim().split("\n").pop() ?? ""}\n`, {
      mode: 0o600,
    });
    const alice = sshUser(env, "alice");
    await writeFile(
      join(home, "hpcs-client.conf"),
      [
        "[spire-server]",
        `address = ${env.spire.server_address}`,
        `port = ${env.spire.server_port}`,
        `trust-domain = ${env.trust_domain}`,
        `trust-bundle = ${env.spire.bundle}`,
        `agent-bin = ${env.spire.agent_bin}`,
        "[hpcs-server]",
        `url = https://localhost:${httpPort}`,
        `ca-file = ${env.ca_cert}`,
        `enrollment-secret-file = ${join(home, "enrollment.secret")}`,
        "[vault]",
        `url = ${env.vault.url}`,
        `ca-file = ${env.ca_cert}`,
        "[supercomputer]",
        `address = ${env.ssh.host}`,
        `port = ${env.ssh.port}`,
        "username = alice",
        `ssh-key = ${alice.key}`,
        `known-hosts = ${env.ssh.known_hosts}`,
        "",
      ].join("\n"),
    );
    await writeFile(join(home, "data.txt"), `compose ${id}\n`);
    const dp = await run(
      process.execPath,
      [
        CLIENT_CLI,
        "data-prep",
        "--config",
        join(home, "hpcs-client.conf"),
        "-i",
        join(home, "data.txt"),
        "-u",
        "alice",
        "-c",
        env.slurm.node,
        "--data-path",
        `${clientName}.gpg`,
        "--data-path-at-rest",
        alice.scratch,
        "--json",
      ],
      { timeoutMs: 180_000, env: { ...process.env, SSH_AUTH_SOCK: "" } },
    );
    assert.equal(dp.code, 0, `${dp.stderr}\n${await logs()}`);
    const info = await readFile(join(alice.scratch, `${clientName}.gpg.info.yaml`), "utf8");
    assert.match(info, new RegExp(`spiffe://${env.trust_domain}/c/${clientName}/`));
  });
});
