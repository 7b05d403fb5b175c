import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createWriteStream } from "node:fs";
import { chmod, copyFile, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import type { ArtifactInfo } from "../../client/data-prep/info-file.js";
import { VaultClient } from "../../lib/vault/vault-client.js";
import { AgentWithToken } from "./agent-with-token.js";
import { eventually, run, runOk } from "./exec.js";
import type { HpcsServerProcess } from "./hpcs-server.js";
import { httpsJson } from "./https-json.js";
import { forgetAgent, spireServer } from "./spire.js";
import { sshUser, type StackEnv } from "./stack-env.js";

/** What the compute side reads from an info file. */
export type JobInfo = Pick<ArtifactInfo, "path_at_rest" | "secret_path" | "access_role" | "spiffeID">;

/**
 * The compute side of a shipped artifact, played as a job would: a per-job spire-agent attested for
 * (node, user) through the hpcs server with an operator token, a JWT-SVID fetched as the job's user
 * (runuser + a copy of spire-agent in a 0755 directory: the bench keeps its binaries under root's 0700
 * home), Vault login with the info file's access_role, the passphrase read, and `gpg --decrypt` over
 * SSH as the job's user with the passphrase on fd 0. stop() stops every agent it started.
 */
export class JobSide {
  private readonly agents: AgentWithToken[] = [];
  /** Why the last svidAs() gave no SVID. */
  lastError = "";

  private constructor(
    readonly env: StackEnv,
    private readonly srv: HpcsServerProcess,
    private readonly ca: Buffer,
    /** Holds the job users' spire-agent copy. */
    readonly userBin: string,
  ) {}

  static async create(env: StackEnv, srv: HpcsServerProcess): Promise<JobSide> {
    const userBin = await mkdtemp(join(tmpdir(), "job-side-bin-"));
    try {
      await chmod(userBin, 0o755);
      await copyFile(env.spire.agent_bin, join(userBin, "spire-agent"));
      await chmod(join(userBin, "spire-agent"), 0o755);
      return new JobSide(env, srv, await readFile(env.ca_cert), userBin);
    } catch (err) {
      await rm(userBin, { recursive: true, force: true });
      throw err;
    }
  }

  /** A per-job agent for (node, user), attested through the server with an operator token. */
  async jobAgent(node: string, user: string): Promise<AgentWithToken> {
    const issued = await this.srv.nodeToken(node, user);
    const r = await httpsJson(`${this.srv.url}/v1/nodes/token`, {
      ca: this.ca,
      method: "POST",
      body: { node, user, operatorToken: issued.operatorToken },
    });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const agent = await AgentWithToken.start(this.env, (r.body as { joinToken: string }).joinToken);
    this.agents.push(agent);
    // The job's user must reach the socket; the agent's directory is root's 0700 by default.
    await chmod(agent.dir, 0o755);
    return agent;
  }

  /**
   * The JWT-SVID (audience vault) for `spiffeId` as the job's user would fetch it, or undefined when
   * SPIRE gives none within `timeoutMs` (the reason in lastError).
   */
  async svidAs(
    agent: AgentWithToken,
    user: string,
    spiffeId: string,
    timeoutMs = 15_000,
  ): Promise<string | undefined> {
    this.lastError = "";
    try {
      return await eventually(`JWT-SVID ${spiffeId} as ${user}`, timeoutMs, async () => {
        const out = await runOk("runuser", [
          "-u",
          user,
          "--",
          join(this.userBin, "spire-agent"),
          "api",
          "fetch",
          "jwt",
          "-audience",
          "vault",
          "-spiffeID",
          spiffeId,
          "-socketPath",
          agent.socket,
          "-output",
          "json",
        ]);
        const svid = (JSON.parse(out) as { svids?: { svid: string }[] }[])
          .flatMap((o) => o.svids ?? [])
          .map((s) => s.svid)[0];
        if (!svid) throw new Error("no SVID yet");
        return svid;
      });
    } catch (err) {
      this.lastError = (err as Error).message;
      return undefined;
    }
  }

  /** A Vault client without a token (for logins). */
  vault(token?: string): VaultClient {
    return new VaultClient({
      url: this.env.vault.url,
      caPem: this.ca,
      timeoutMs: 10_000,
      ...(token ? { token } : {}),
    });
  }

  /** Vault login with the info file's role and the SVID, then the artifact's passphrase. */
  async readPassphrase(info: JobInfo, svid: string): Promise<string> {
    const login = await this.vault().loginJwt(info.access_role, svid);
    const secret = await this.vault(login.token).kvRead(info.secret_path.replace(/^kv\/data\//, ""));
    return String(secret?.data.passphrase ?? "");
  }

  /** `gpg --decrypt <path_at_rest>` over SSH as `user`; the plaintext in memory (small artifacts). */
  async decryptOverSsh(info: JobInfo, passphrase: string, user = "alice"): Promise<Buffer> {
    const r = await run("ssh", this.gpgOverSsh(info, user), { input: `${passphrase}\n`, timeoutMs: 120_000 });
    if (r.code !== 0)
      throw new Error(`gpg --decrypt over ssh as ${user} exited ${r.code ?? r.signal}: ${r.stderr}`);
    return r.stdoutBytes;
  }

  /** The same, the plaintext streamed into the local file `out` (large artifacts). */
  async decryptOverSshToFile(info: JobInfo, passphrase: string, out: string, user = "alice"): Promise<void> {
    const child = spawn("ssh", this.gpgOverSsh(info, user), {
      stdio: ["pipe", "pipe", "pipe"],
      timeout: 300_000,
    });
    let stderr = "";
    child.stderr.on("data", (b: Buffer) => (stderr += b.toString()));
    child.stdin.on("error", () => undefined);
    child.stdin.end(`${passphrase}\n`);
    const exited = new Promise<number | string | null>((resolve, reject) => {
      child.on("error", reject);
      child.on("close", (code, signal) => resolve(code ?? signal));
    });
    const written = pipeline(child.stdout, createWriteStream(out, { mode: 0o600 }));
    const [, code] = await Promise.all([written, exited]);
    if (code !== 0) {
      await rm(out, { force: true });
      throw new Error(`gpg --decrypt over ssh as ${user} exited ${code}: ${stderr}`);
    }
  }

  private gpgOverSsh(info: JobInfo, user: string): string[] {
    return [
      "-p",
      String(this.env.ssh.port),
      "-i",
      sshUser(this.env, user).key,
      "-o",
      `UserKnownHostsFile=${this.env.ssh.known_hosts}`,
      "-o",
      "StrictHostKeyChecking=yes",
      "-o",
      "BatchMode=yes",
      `${user}@${this.env.ssh.host}`,
      "gpg",
      "--batch",
      "--quiet",
      "--pinentry-mode",
      "loopback",
      "--passphrase-fd",
      "0",
      "--decrypt",
      info.path_at_rest,
    ];
  }

  /** Stops every agent this started and removes the spire-agent copy. */
  async stop(): Promise<void> {
    for (const a of this.agents.splice(0)) await a.stop().catch(() => undefined);
    await rm(this.userBin, { recursive: true, force: true });
  }
}

/**
 * The operator's view of what a client left behind, with the bench's root token and SPIRE admin
 * socket: its kv secrets and its grants' SPIRE entries; revokeAll() removes those, forget() the
 * client's registration too.
 */
export class ClientTraces {
  constructor(
    private readonly env: StackEnv,
    readonly clientName: string,
  ) {}

  /** Keys under kv/metadata/hpcs/<client> ([] when none). */
  secrets(): Promise<string[]> {
    return this.vaultList(`${this.env.vault.kv_mount}/metadata/hpcs/${this.clientName}`);
  }

  private async vaultList(path: string): Promise<string[]> {
    const r = await httpsJson(`${this.env.vault.url}/v1/${path}?list=true`, {
      ca: await readFile(this.env.ca_cert),
      headers: { "X-Vault-Token": this.env.vault.root_token },
    });
    if (r.status === 404) return [];
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return (r.body as { data: { keys: string[] } }).data.keys;
  }

  /** IDs of the SPIRE entries of the client's grants (SPIFFE ID path /c/<client>/s/…). */
  async grantEntries(): Promise<string[]> {
    const all = (await spireServer(this.env, ["entry", "show"])) as {
      entries?: { id: string; spiffe_id: { path: string } }[];
    };
    return (all.entries ?? [])
      .filter((e) => e.spiffe_id.path.startsWith(`/c/${this.clientName}/s/`))
      .map((e) => e.id);
  }

  /** Destroys the client's secrets and deletes its grant entries (whatever the runs left). */
  async revokeAll(): Promise<void> {
    const root = await this.root();
    for (const s of await this.secrets()) {
      await root.kvDestroyAll(`hpcs/${this.clientName}/${s}`).catch(() => undefined);
    }
    for (const e of await this.grantEntries()) {
      await spireServer(this.env, ["entry", "delete", "-entryID", e]).catch(() => undefined);
    }
  }

  /**
   * revokeAll(), then everything else registering and granting made: the grants' and the client's
   * Vault policies and jwt roles, the server's enrollment and grant-index records, the client's SPIRE
   * entries (/c/<client>, /c/<client>/workload) and the agents its runs attested.
   */
  async forget(): Promise<void> {
    await this.revokeAll();
    const root = await this.root();
    const mine = (name: string): boolean =>
      name === `hpcs-client-${this.clientName}` || name.startsWith(`hpcs-grant-${this.clientName}.`);
    for (const role of await this.vaultList(`auth/${this.env.vault.jwt_mount}/role`)) {
      if (mine(role)) await root.deleteJwtRole(role).catch(() => undefined);
    }
    for (const policy of await this.vaultList("sys/policies/acl")) {
      if (mine(policy)) await root.deletePolicy(policy).catch(() => undefined);
    }
    for (const record of ["enrollments", "grants"]) {
      await root.kvDestroyAll(`hpcs-server/${record}/${this.clientName}`).catch(() => undefined);
    }
    const all = (await spireServer(this.env, ["entry", "show"])) as {
      entries?: { id: string; spiffe_id: { path: string }; parent_id: { path: string } }[];
    };
    const base = `/c/${this.clientName}`;
    for (const e of all.entries ?? []) {
      if (e.spiffe_id.path !== base && !e.spiffe_id.path.startsWith(`${base}/`)) continue;
      await spireServer(this.env, ["entry", "delete", "-entryID", e.id]).catch(() => undefined);
      if (e.parent_id.path.startsWith("/spire/agent/")) {
        await forgetAgent(this.env, `spiffe://${this.env.trust_domain}${e.parent_id.path}`);
      }
    }
  }

  private async root(): Promise<VaultClient> {
    return new VaultClient({
      url: this.env.vault.url,
      caPem: await readFile(this.env.ca_cert),
      timeoutMs: 10_000,
      token: this.env.vault.root_token,
      kvMount: this.env.vault.kv_mount,
      jwtMount: this.env.vault.jwt_mount,
    });
  }
}
