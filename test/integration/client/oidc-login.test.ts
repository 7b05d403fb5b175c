import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { decodeJwt } from "jose";
import type { ArtifactInfo } from "../../../client/data-prep/info-file.js";
import { clientPolicyName } from "../../../lib/vault/policies.js";
import { VaultClient } from "../../../lib/vault/vault-client.js";
import { HPCS_PROTO_FILE, PROTO_LOADER_OPTIONS } from "../../../server/transport/grpc-server.js";
import { run, type RunResult } from "../../support/exec.js";
import { CLIENT_CLI } from "../../support/hpcs-client.js";
import { HpcsServerProcess } from "../../support/hpcs-server.js";
import { httpsJson } from "../../support/https-json.js";
import { ClientTraces } from "../../support/job-side.js";
import { TestOpenIdProvider } from "../../support/oidc-provider.js";
import { nonce, spireServer } from "../../support/spire.js";
import { loadStackEnv, sshUser, type StackEnv } from "../../support/stack-env.js";

// OIDC client login (issue 7 item 2) end to end: two real OpenID Providers (the `oidc-provider`
// package, test/support/oidc-provider.ts), the real hpcs-server process trusting the first, and the
// real `hpcs data-prep` CLI logging in by device code or with a token file. Refusals (another issuer,
// expired, wrong audience, a claim that is no client name, OIDC off on the server) must be one line
// and create nothing in SPIRE or Vault.
describe("OIDC client login (real OpenID Providers, server, CLI)", function () {
  this.timeout(300_000);
  const n = nonce();
  const CLI_CLIENT = "hpcs-cli";
  const sub = (what: string) => `oidc-${n}-${what}`;
  let env: StackEnv;
  let op: TestOpenIdProvider | undefined;
  let otherOp: TestOpenIdProvider | undefined;
  let srv: HpcsServerProcess | undefined;
  let plain: HpcsServerProcess | undefined;
  let root: VaultClient;
  let work = "";
  let input = "";
  let scratch = "";
  const used = new Set<string>();
  const tokens: string[] = [];

  before(async () => {
    env = loadStackEnv();
    scratch = sshUser(env, "alice").scratch;
    root = new VaultClient({
      url: env.vault.url,
      caPem: readFileSync(env.ca_cert),
      timeoutMs: 10_000,
      token: env.vault.root_token,
      kvMount: env.vault.kv_mount,
      jwtMount: env.vault.jwt_mount,
    });
    work = await mkdtemp(join(tmpdir(), "oidc-login-test-"));
    input = join(work, "input");
    await mkdir(input);
    await writeFile(join(input, "data.txt"), `oidc ${n}\n`);
    op = await TestOpenIdProvider.start(env, [CLI_CLIENT, "other-app"]);
    otherOp = await TestOpenIdProvider.start(env, [CLI_CLIENT]);
    srv = await HpcsServerProcess.start(env, {
      extraServerKeys: [
        `oidc-issuer = ${op.issuer}`,
        `oidc-audience = ${CLI_CLIENT}`,
        `oidc-ca-file = ${env.ca_cert}`,
      ],
    });
    plain = await HpcsServerProcess.start(env);
  });

  after(async () => {
    for (const f of await readdir(scratch).catch(() => [] as string[])) {
      if (f.startsWith(`oidc-${n}`)) await rm(join(scratch, f), { force: true });
    }
    for (const s of used) await new ClientTraces(env, s).forget().catch(() => undefined);
    await srv?.stop();
    await plain?.stop();
    await op?.stop();
    await otherOp?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  /** A client INI with the given [hpcs-server] OIDC lines instead of an enrollment secret. */
  async function config(name: string, server: HpcsServerProcess, oidcLines: string[]): Promise<string> {
    const path = join(work, `${name}.conf`);
    await writeFile(
      path,
      [
        "[spire-server]",
        `address = ${env.spire.server_address}`,
        `port = ${env.spire.server_port}`,
        `trust-domain = ${env.trust_domain}`,
        `trust-bundle = ${env.spire.bundle}`,
        `agent-bin = ${env.spire.agent_bin}`,
        "",
        "[hpcs-server]",
        `url = ${server.url}`,
        `ca-file = ${env.ca_cert}`,
        ...oidcLines,
        "",
        "[vault]",
        `url = ${env.vault.url}`,
        `ca-file = ${env.ca_cert}`,
        "",
        "[supercomputer]",
        `address = ${env.ssh.host}`,
        `port = ${env.ssh.port}`,
        "username = alice",
        `ssh-key = ${sshUser(env, "alice").key}`,
        `known-hosts = ${env.ssh.known_hosts}`,
        "",
      ].join("\n"),
      { mode: 0o600 },
    );
    return path;
  }

  function dataPrep(name: string, configPath: string): string[] {
    return [
      CLIENT_CLI,
      "data-prep",
      "-i",
      input,
      "--data-path",
      `/tmp/${name}`,
      "--data-path-at-rest",
      scratch,
      "-u",
      "alice",
      "-c",
      `oidc-${n}-node`,
      "--json",
      "--config",
      configPath,
    ];
  }

  const cliEnv = (token?: string): NodeJS.ProcessEnv => {
    const e: NodeJS.ProcessEnv = { ...process.env, SSH_AUTH_SOCK: "" };
    delete e.HPCS_OIDC_TOKEN;
    if (token !== undefined) e.HPCS_OIDC_TOKEN = token;
    return e;
  };

  function auditLines(server: HpcsServerProcess): Record<string, unknown>[] {
    return server.log
      .split("\n")
      .filter((l) => l.includes('"type":"audit"'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((a) => a.action === "client.register");
  }

  async function nothingCreatedFor(clientId: string): Promise<void> {
    const all = (await spireServer(env, ["entry", "show"])) as {
      entries?: { spiffe_id: { path: string } }[];
    };
    const mine = (all.entries ?? []).filter(
      (e) => e.spiffe_id.path === `/c/${clientId}` || e.spiffe_id.path.startsWith(`/c/${clientId}/`),
    );
    assert.deepEqual(mine, [], `no SPIRE entry for ${clientId}`);
    assert.equal(
      await root.readJwtRole(clientPolicyName(clientId)),
      undefined,
      `no Vault role for ${clientId}`,
    );
    assert.equal(
      await root.readPolicy(clientPolicyName(clientId)),
      undefined,
      `no Vault policy for ${clientId}`,
    );
  }

  it("device-code login through the real CLI: data-prep ships under spiffe://<td>/c/<sub>", async () => {
    const who = sub("device");
    used.add(who);
    const cfg = await config("device", srv!, [
      `oidc-issuer = ${op!.issuer}`,
      `oidc-client-id = ${CLI_CLIENT}`,
      `oidc-ca-file = ${env.ca_cert}`,
    ]);
    const child = spawn(process.execPath, dataPrep(`oidc-${n}-device.tar.gpg`, cfg), {
      stdio: ["ignore", "pipe", "pipe"],
      env: cliEnv(),
    });
    let stdout = "";
    let stderr = "";
    let approved: Promise<void> | undefined;
    child.stdout.on("data", (b: Buffer) => (stdout += b.toString("utf8")));
    child.stderr.on("data", (b: Buffer) => {
      stderr += b.toString("utf8");
      // The user reads the prompt, opens the URI and enters the code: here the provider is told directly.
      const m = /open (\S+) and enter the code (\S+)/.exec(stderr);
      if (m && !approved) {
        assert.equal(m[1], `${op!.issuer}/device`);
        approved = op!.approve(m[2] ?? "", who);
      }
    });
    const [code] = (await once(child, "exit")) as [number | null];
    await approved;
    assert.ok(approved, `the CLI printed the device-code prompt; stderr: ${stderr}`);
    assert.equal(code, 0, `stderr: ${stderr}\nserver: ${srv!.lastLines()}`);
    const info = JSON.parse(stdout) as ArtifactInfo;
    assert.match(info.spiffeID, new RegExp(`^spiffe://${env.trust_domain}/c/${who}/s/`));
    const ok = auditLines(srv!).filter(
      (a) => a.result === "ok" && a.caller === `spiffe://${env.trust_domain}/c/${who}`,
    );
    assert.equal(ok.length, 1, JSON.stringify(auditLines(srv!)));
    assert.equal((ok[0]?.target as Record<string, unknown>).method, "oidc");
  });

  it("a token file works too (and the token is in no server log line)", async () => {
    const who = sub("file");
    used.add(who);
    const token = await op!.idToken(CLI_CLIENT, who);
    tokens.push(token);
    const file = join(work, "id_token");
    await writeFile(file, `${token}\n`, { mode: 0o600 });
    const cfg = await config("file", srv!, [`oidc-token-file = ${file}`]);
    const r = await run(process.execPath, dataPrep(`oidc-${n}-file.tar.gpg`, cfg), {
      timeoutMs: 300_000,
      env: cliEnv(),
    });
    assert.equal(r.code, 0, `stderr: ${r.stderr}\nserver: ${srv!.lastLines()}`);
    assert.doesNotMatch(r.stderr, /readable by others/);
    const info = JSON.parse(r.stdout) as ArtifactInfo;
    assert.match(info.spiffeID, new RegExp(`^spiffe://${env.trust_domain}/c/${who}/s/`));
    assert.ok(!srv!.log.includes(token), "the id_token never reaches the server's log");
  });

  /** The CLI with HPCS_OIDC_TOKEN (which wins over the config's token file) against `server`. */
  async function refused(server: HpcsServerProcess, token: string, what: string): Promise<RunResult> {
    tokens.push(token);
    const file = join(work, "unused_token");
    await writeFile(file, "not used\n", { mode: 0o600 });
    const cfg = await config(`refused-${what}`, server, [`oidc-token-file = ${file}`]);
    const r = await run(process.execPath, dataPrep(`oidc-${n}-${what}.tar.gpg`, cfg), {
      timeoutMs: 120_000,
      env: cliEnv(token),
    });
    assert.notEqual(r.code, 0, `${what}: must fail; stdout: ${r.stdout}`);
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 1, `${what}: one line: ${r.stderr}`);
    assert.match(lines[0] ?? "", /^hpcs data-prep: client identity: register failed: /);
    assert.ok(!r.stderr.includes(token) && !r.stdout.includes(token), `${what}: token not echoed`);
    assert.ok(!server.log.includes(token), `${what}: token not in the server log`);
    return r;
  }

  it("refuses a token of another issuer, an expired one, a wrong audience and a claim that is no client name", async () => {
    const foreign = sub("foreign");
    let r = await refused(srv!, await otherOp!.idToken(CLI_CLIENT, foreign), "foreign");
    assert.match(
      r.stderr,
      new RegExp(`issued by "${otherOp!.issuer}", not by the trusted issuer ${op!.issuer}`),
    );

    const late = sub("expired");
    op!.idTokenTtlSec = 1;
    const expired = await op!.idToken(CLI_CLIENT, late).finally(() => (op!.idTokenTtlSec = 600));
    const exp = decodeJwt(expired).exp ?? 0;
    // Past exp and the server's 5 s clock tolerance.
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, (exp + 6) * 1000 - Date.now())));
    r = await refused(srv!, expired, "expired");
    assert.match(r.stderr, /OIDC token has expired; log in again/);

    const aud = sub("aud");
    r = await refused(srv!, await op!.idToken("other-app", aud), "aud");
    assert.match(r.stderr, new RegExp(`OIDC token is not for audience ${CLI_CLIENT}`));

    r = await refused(srv!, await op!.idToken(CLI_CLIENT, "Not_A_Name"), "name");
    assert.match(r.stderr, /OIDC claim sub is not a valid client id: invalid client name "Not_A_Name"/);

    for (const s of [foreign, late, aud]) await nothingCreatedFor(s);
    const refusals = auditLines(srv!).filter((a) => a.result === "refused");
    assert.equal(refusals.length, 4, JSON.stringify(refusals));
    for (const a of refusals) assert.equal((a.target as Record<string, unknown>).method, "oidc");
  });

  it("refuses OIDC on a server without oidc-issuer, and a request with both login methods", async () => {
    const who = sub("off");
    const token = await op!.idToken(CLI_CLIENT, who);
    const r = await refused(plain!, token, "off");
    assert.match(r.stderr, /OIDC login is off on this server/);
    await nothingCreatedFor(who);

    const both = await httpsJson(`${srv!.url}/v1/clients/register`, {
      ca: readFileSync(env.ca_cert),
      method: "POST",
      body: {
        idToken: token,
        clientName: who,
        enrollmentSecret: "x".repeat(43),
        selectors: [{ type: "unix", value: "uid:0" }],
      },
    });
    assert.equal(both.status, 400, JSON.stringify(both.body));
    assert.match(
      JSON.stringify(both.body),
      /send either idToken or clientName \+ enrollmentSecret, not both/,
    );
    await nothingCreatedFor(who);
  });

  it("gRPC RegisterClient takes an id_token too (and refuses a wrong audience)", async () => {
    const who = sub("grpc");
    used.add(who);
    const def = protoLoader.loadSync(HPCS_PROTO_FILE, PROTO_LOADER_OPTIONS);
    const pkg = grpc.loadPackageDefinition(def) as unknown as {
      hpcs: { v1: { Hpcs: grpc.ServiceClientConstructor } };
    };
    const stub = new pkg.hpcs.v1.Hpcs(
      srv!.grpcAddress,
      grpc.credentials.createSsl(readFileSync(env.ca_cert)),
    ) as unknown as grpc.Client &
      Record<
        "RegisterClient",
        (req: object, cb: (err: grpc.ServiceError | null, res: never) => void) => void
      >;
    const register = (idToken: string) =>
      new Promise<Record<string, unknown>>((resolve, reject) =>
        stub.RegisterClient(
          { id_token: idToken, selectors: [{ type: "unix", value: "uid:0" }] },
          (err, res) => (err ? reject(err) : resolve(res)),
        ),
      );
    try {
      const token = await op!.idToken(CLI_CLIENT, who);
      const r = await register(token);
      assert.equal(r.client_id, who);
      assert.equal(r.workload_spiffe_id, `spiffe://${env.trust_domain}/c/${who}/workload`);
      assert.equal(r.next_enrollment_secret, "", "OIDC login issues no enrollment secret");
      assert.ok(!srv!.log.includes(token));
      const aud = sub("grpc-aud");
      await assert.rejects(register(await op!.idToken("other-app", aud)), (e: grpc.ServiceError) => {
        assert.equal(e.code, grpc.status.UNAUTHENTICATED);
        assert.match(e.details, /OIDC token is not for audience/);
        return true;
      });
      await nothingCreatedFor(aud);
    } finally {
      stub.close();
    }
  });
});
