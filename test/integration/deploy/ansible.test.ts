import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { serverPolicy } from "../../../lib/vault/policies.js";
import { VaultClient } from "../../../lib/vault/vault-client.js";
import { run, type RunResult } from "../../support/exec.js";
import { nonce, spireServer, TestAgent } from "../../support/spire.js";
import { loadStackEnv, type StackEnv } from "../../support/stack-env.js";

// From dist/test/integration/deploy/: four levels up is the repository root, which holds ansible/.
const ANSIBLE_DIR = fileURLToPath(new URL("../../../../ansible/", import.meta.url));

interface Recap {
  ok: number;
  changed: number;
  failed: number;
}

interface SpireEntry {
  id: string;
  spiffe_id: { trust_domain: string; path: string };
  parent_id: { trust_domain: string; path: string };
  selectors: { type: string; value: string }[];
}

function ansible(cmd: string, args: string[]): Promise<RunResult> {
  return run(cmd, args, {
    cwd: ANSIBLE_DIR,
    env: { ...process.env, ANSIBLE_CONFIG: join(ANSIBLE_DIR, "ansible.cfg"), ANSIBLE_NOCOLOR: "1" },
    timeoutMs: 120_000,
  });
}

function recap(r: RunResult): Recap {
  const m = /localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)/.exec(r.stdout);
  if (!m) throw new Error(`no PLAY RECAP in ansible-playbook output: ${r.stdout.slice(-2000)} ${r.stderr}`);
  return { ok: Number(m[1]), changed: Number(m[2]), failed: Number(m[3]) };
}

/** The names of the tasks that reported "changed", in order. */
function changedTasks(r: RunResult): string[] {
  const out: string[] = [];
  let task = "";
  for (const line of r.stdout.split("\n")) {
    const t = /^TASK \[(?:[\w.]+ : )?(.*)\] \**$/.exec(line);
    if (t?.[1]) task = t[1];
    else if (line.startsWith("changed: ")) out.push(task);
  }
  return out;
}

function tail(r: RunResult): string {
  return `${r.stdout.slice(-3000)}\n${r.stderr.slice(-1000)}`;
}

async function entriesOf(env: StackEnv, spiffeId: string): Promise<SpireEntry[]> {
  const res = (await spireServer(env, ["entry", "show", "-spiffeID", spiffeId])) as {
    entries?: SpireEntry[];
  };
  return res.entries ?? [];
}

function selectorsOf(e: SpireEntry): string[] {
  return e.selectors.map((s) => `${s.type}:${s.value}`).sort();
}

// The Vault/SPIRE half of deploy-all.yaml (role hpcs_bootstrap) runs for real, `connection: local`, against
// the bench's Vault (root token) and SPIRE (admin socket), under names unique to this run. The bench's
// Vault is already initialised, so role vault_init is only syntax-checked with deploy-all.yaml.
describe("ansible: deploy-all.yaml and the hpcs_bootstrap role on the real Vault and SPIRE", function () {
  this.timeout(120_000);
  const env = loadStackEnv();
  const td = env.trust_domain;
  const id = nonce();
  // An hpcs-* name, so the policy carries the "deny its own role and policy" block too.
  const serverRole = `hpcs-ansible-${id}`;
  const serverId = `spiffe://${td}/test-ansible/${id}/server`;
  const agentId = `spiffe://${td}/test-ansible/${id}/agent`;
  const aliasId = `spiffe://${td}/test-ansible/${id}/k8s-agent`;
  const k8sServerId = `spiffe://${td}/test-ansible/${id}/k8s-server`;
  const uid = process.getuid?.() ?? 0;
  const root = new VaultClient({
    url: env.vault.url,
    caPem: readFileSync(env.ca_cert),
    timeoutMs: 10_000,
    token: env.vault.root_token,
    kvMount: env.vault.kv_mount,
    jwtMount: env.vault.jwt_mount,
  });
  let dir = "";
  let agent: TestAgent | undefined;

  /** The role's variables for the bench; `extra` overrides or adds. */
  async function varsFile(name: string, extra: Record<string, unknown> = {}): Promise<string> {
    const path = join(dir, `${name}.json`);
    const vars = {
      hpcs_bootstrap_vault_addr: env.vault.url,
      hpcs_bootstrap_vault_token: env.vault.root_token,
      hpcs_bootstrap_vault_ca_file: env.ca_cert,
      hpcs_bootstrap_kv_mount: env.vault.kv_mount,
      hpcs_bootstrap_jwt_mount: env.vault.jwt_mount,
      // The same wiring stack.sh gave the bench's Vault, so the role finds it in place.
      hpcs_bootstrap_oidc_discovery_url: env.oidc.url,
      hpcs_bootstrap_oidc_discovery_ca_pem: readFileSync(env.ca_cert, "utf8"),
      hpcs_bootstrap_oidc_bound_issuer: env.spire.jwt_issuer,
      hpcs_bootstrap_trust_domain: td,
      hpcs_bootstrap_server_role: serverRole,
      hpcs_bootstrap_server_spiffe_id: serverId,
      // The bench's agent got its ID from its join token: no node alias entry needed.
      hpcs_bootstrap_agent_spiffe_id: agentId,
      hpcs_bootstrap_agent_selectors: [],
      hpcs_bootstrap_server_selectors: [`unix:uid:${uid}`],
      hpcs_bootstrap_spire_server_cmd: [env.spire.server_bin],
      hpcs_bootstrap_spire_socket: env.spire.admin_socket,
      ...extra,
    };
    await writeFile(path, JSON.stringify(vars), { mode: 0o600 });
    return path;
  }

  const bootstrap = async (vars: string) => ansible("ansible-playbook", ["bootstrap.yaml", "-e", `@${vars}`]);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "hpcs-ansible-"));
    agent = await TestAgent.start(env, agentId);
  });

  after(async () => {
    await root.deleteJwtRole(serverRole).catch(() => undefined);
    await root.deletePolicy(serverRole).catch(() => undefined);
    for (const spiffeId of [serverId, aliasId, k8sServerId]) {
      for (const e of await entriesOf(env, spiffeId).catch(() => [])) {
        await spireServer(env, ["entry", "delete", "-entryID", e.id]).catch(() => undefined);
      }
    }
    await agent?.stop().catch(() => undefined);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("deploy-all.yaml (with role vault_init) and bootstrap.yaml pass --syntax-check", async () => {
    for (const playbook of ["deploy-all.yaml", "bootstrap.yaml"]) {
      const r = await ansible("ansible-playbook", ["--syntax-check", playbook]);
      assert.equal(r.code, 0, `${playbook}: ${tail(r)}`);
    }
  });

  it("ansible-lint passes with no warning", async () => {
    const r = await ansible("ansible-lint", ["--offline", "--strict"]);
    assert.equal(r.code, 0, tail(r));
  });

  it("the bootstrap role configures Vault and SPIRE on its first run and changes nothing on its second", async () => {
    const vars = await varsFile("bootstrap");
    const first = await bootstrap(vars);
    assert.equal(first.code, 0, tail(first));
    const r1 = recap(first);
    assert.equal(r1.failed, 0);
    // Policy, role and the workload entry are new; kv, jwt and its OIDC wiring are the bench's already.
    assert.deepEqual(changedTasks(first), [
      `Write policy ${serverRole}`,
      `Write the jwt role, bound to the server's SPIFFE ID, named ${serverRole}`,
      `Create the entry of ${serverId}`,
    ]);
    assert.equal(r1.changed, 3, tail(first));

    const second = await bootstrap(vars);
    assert.equal(second.code, 0, tail(second));
    assert.deepEqual(recap(second).changed, 0, tail(second));
  });

  it("writes exactly serverPolicy() and a jwt role bound to the server's SPIFFE ID", async () => {
    const want = serverPolicy({ serverRole, kvMount: env.vault.kv_mount, jwtMount: env.vault.jwt_mount });
    assert.equal(await root.readPolicy(serverRole), want);
    assert.match(
      want,
      new RegExp(`path "sys/policies/acl/${serverRole}" \\{\\n  capabilities = \\["deny"\\]`),
    );
    const role = await root.readJwtRole(serverRole);
    assert.ok(role, "the jwt role exists");
    assert.equal(role.boundSubject, serverId);
    assert.deepEqual(role.boundAudiences, ["vault"]);
    assert.deepEqual(role.tokenPolicies, [serverRole]);
    assert.equal(role.tokenTtlSec, 3600);
    assert.equal(role.tokenMaxTtlSec, 86400);

    const entries = await entriesOf(env, serverId);
    assert.equal(entries.length, 1);
    const [entry] = entries;
    assert.ok(entry);
    assert.equal(`spiffe://${entry.parent_id.trust_domain}${entry.parent_id.path}`, agentId);
    assert.deepEqual(selectorsOf(entry), [`unix:uid:${uid}`]);
  });

  it("lets the server's identity log in to Vault with that role, and nothing else", async () => {
    assert.ok(agent);
    const svid = await agent.fetchJwt("vault", serverId);
    const anon = root.withToken("");
    const login = await anon.loginJwt(serverRole, svid);
    assert.ok(login.policies.includes(serverRole), `policies: ${login.policies.join(",")}`);
    const asServer = root.withToken(login.token);
    // What the policy grants: hpcs-* policies ...
    const probe = `hpcs-ansible-probe-${id}`;
    await asServer.writePolicy(probe, 'path "kv/data/nothing" {\n  capabilities = ["read"]\n}\n');
    await asServer.deletePolicy(probe);
    // ... and not its own policy, nor any other name.
    await assert.rejects(asServer.writePolicy(serverRole, 'path "*" {\n  capabilities = ["sudo"]\n}\n'));
    await assert.rejects(asServer.writePolicy(`other-${id}`, 'path "*" {\n  capabilities = ["read"]\n}\n'));
    await asServer.revokeSelf().catch(() => undefined);
  });

  it("registers a k8s_psat agent alias (-node) once and updates its selectors when they change", async () => {
    const k8s = (selectors: string[]) =>
      varsFile(`k8s-${selectors.length}`, {
        hpcs_bootstrap_agent_spiffe_id: aliasId,
        hpcs_bootstrap_agent_selectors: selectors,
        hpcs_bootstrap_server_spiffe_id: k8sServerId,
        hpcs_bootstrap_server_selectors: ["unix:uid:10001"],
      });
    const first = await bootstrap(await k8s([`k8s_psat:cluster:test-${id}`, "k8s_psat:agent_ns:hpcs"]));
    assert.equal(first.code, 0, tail(first));
    // The alias and the server's workload entry under it (the role and policy are this run's already,
    // but the role's bound subject changes: 3).
    assert.equal(recap(first).changed, 3, tail(first));
    const [workload] = await entriesOf(env, k8sServerId);
    assert.ok(workload, "the workload entry exists");
    assert.equal(`spiffe://${workload.parent_id.trust_domain}${workload.parent_id.path}`, aliasId);
    const [alias] = await entriesOf(env, aliasId);
    assert.ok(alias, "the alias entry exists");
    assert.equal(alias.parent_id.path, "/spire/server");
    assert.deepEqual(selectorsOf(alias), ["k8s_psat:agent_ns:hpcs", `k8s_psat:cluster:test-${id}`]);

    const changed = await bootstrap(
      await k8s([`k8s_psat:cluster:test-${id}`, "k8s_psat:agent_ns:hpcs", "k8s_psat:agent_sa:hpcs-server"]),
    );
    assert.equal(changed.code, 0, tail(changed));
    assert.deepEqual(changedTasks(changed), [`Update the selectors of ${aliasId}`]);
    assert.equal(recap(changed).changed, 1, tail(changed));
    const after = await entriesOf(env, aliasId);
    assert.equal(after.length, 1, "updated in place, not duplicated");
    assert.deepEqual(selectorsOf(after[0] as SpireEntry), [
      "k8s_psat:agent_ns:hpcs",
      "k8s_psat:agent_sa:hpcs-server",
      `k8s_psat:cluster:test-${id}`,
    ]);
  });

  it("refuses to run without a Vault token, before touching anything", async () => {
    const r = await bootstrap(await varsFile("no-token", { hpcs_bootstrap_vault_token: "" }));
    assert.notEqual(r.code, 0);
    assert.match(r.stdout, /set hpcs_bootstrap_vault_token/);
    assert.deepEqual(recap(r), { ok: 0, changed: 0, failed: 1 });
  });
});
