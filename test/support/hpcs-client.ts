import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { run, type RunResult } from "./exec.js";
import type { HpcsServerProcess } from "./hpcs-server.js";
import { sshUser, type StackEnv } from "./stack-env.js";

// This file runs from dist/test/support/: the client's entry point is dist/client/cli.js.
export const CLIENT_CLI = fileURLToPath(new URL("../../client/cli.js", import.meta.url));

/**
 * A researcher's machine for the real `hpcs` CLI: a client INI pointing at the bench (the real hpcs
 * server process, SPIRE, Vault, sshd as `user`) and an enrollment secret the operator issued for
 * `clientName`. The CLI runs as a child process, exactly as `docker compose run --rm data-prep` would.
 */
export class HpcsClientHome {
  private constructor(
    readonly dir: string,
    readonly configPath: string,
    readonly secretFile: string,
    readonly clientName: string,
  ) {}

  static async create(
    env: StackEnv,
    srv: HpcsServerProcess,
    clientName: string,
    user = "alice",
    overrides: { sshPort?: number } = {},
  ): Promise<HpcsClientHome> {
    const dir = await mkdtemp(join(tmpdir(), "hpcs-client-home-"));
    const home = new HpcsClientHome(
      dir,
      join(dir, "hpcs-client.conf"),
      join(dir, "enrollment.secret"),
      clientName,
    );
    try {
      const enrolled = await srv.enroll(clientName);
      // The JSON `hpcs-server enroll --json` prints: it names the client too, so no client-name key is needed.
      await writeFile(home.secretFile, `${JSON.stringify(enrolled)}\n`, { mode: 0o600 });
      await home.writeConfig(env, srv, user, overrides.sshPort ?? env.ssh.port);
    } catch (err) {
      await home.remove();
      throw err;
    }
    return home;
  }

  async writeConfig(env: StackEnv, srv: HpcsServerProcess, user: string, sshPort: number): Promise<void> {
    await writeFile(
      this.configPath,
      [
        "[spire-server]",
        `address = ${env.spire.server_address}`,
        `port = ${env.spire.server_port}`,
        `trust-domain = ${env.trust_domain}`,
        `trust-bundle = ${env.spire.bundle}`,
        `agent-bin = ${env.spire.agent_bin}`,
        "",
        "[hpcs-server]",
        `url = ${srv.url}`,
        `ca-file = ${env.ca_cert}`,
        `enrollment-secret-file = ${this.secretFile}`,
        "",
        "[vault]",
        `url = ${env.vault.url}`,
        `ca-file = ${env.ca_cert}`,
        "",
        "[supercomputer]",
        `address = ${env.ssh.host}`,
        `port = ${sshPort}`,
        `username = ${user}`,
        `ssh-key = ${sshUser(env, user).key}`,
        `known-hosts = ${env.ssh.known_hosts}`,
        "",
      ].join("\n"),
      { mode: 0o600 },
    );
  }

  /** `hpcs <args…> --config <this config>`, collected. */
  hpcs(args: string[], timeoutMs = 300_000): Promise<RunResult> {
    return run(process.execPath, [CLIENT_CLI, ...args, "--config", this.configPath], {
      timeoutMs,
      env: { ...process.env, SSH_AUTH_SOCK: "" },
    });
  }

  /** The same, started without waiting, for tests that interfere mid-way. */
  spawnHpcs(args: string[]): ReturnType<typeof spawn> {
    return spawn(process.execPath, [CLIENT_CLI, ...args, "--config", this.configPath], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, SSH_AUTH_SOCK: "" },
    });
  }

  async remove(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}
