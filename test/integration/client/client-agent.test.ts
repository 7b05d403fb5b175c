import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { ClientAgent, type ClientAgentOptions } from "../../../client/identity/client-agent.js";
import { eventually, runOk } from "../../support/exec.js";
import { freePort } from "../../support/hpcs-server.js";
import { forgetAgent, nonce, spireServer } from "../../support/spire.js";
import { loadStackEnv, type StackEnv } from "../../support/stack-env.js";

// From dist*/test/integration/client/: the compiled ClientAgent, for the crash test's child process.
const CLIENT_AGENT_JS = fileURLToPath(new URL("../../../client/identity/client-agent.js", import.meta.url));

/** Running and not a zombie (a killed child waits for its reaper for a moment). */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

// ClientAgent with the real spire-agent against the bench's SPIRE server.
describe("client/identity/client-agent (real spire-agent)", function () {
  this.timeout(120_000);
  const n = nonce();
  let env: StackEnv;
  let dir = "";
  const nodeIds: string[] = [];

  /** A fresh join token (alias spiffe://<td>/test-client-agent/<n>/<i>), forgotten in after(). */
  async function token(i: number): Promise<string> {
    const id = `spiffe://${env.trust_domain}/test-client-agent/${n}/${i}`;
    const t = (await spireServer(env, ["token", "generate", "-spiffeID", id, "-ttl", "300"])) as {
      value: string;
    };
    nodeIds.push(`spiffe://${env.trust_domain}/spire/agent/join_token/${t.value}`);
    return t.value;
  }

  const options = (joinToken: string, extra: Partial<ClientAgentOptions> = {}): ClientAgentOptions => ({
    serverAddress: env.spire.server_address,
    serverPort: env.spire.server_port,
    trustDomain: env.trust_domain,
    trustBundlePath: env.spire.bundle,
    joinToken,
    agentBin: env.spire.agent_bin,
    tmpRoot: dir,
    ...extra,
  });

  const nothingLeft = async () => assert.deepEqual(await readdir(dir), [], "no agent directory left");

  before(async () => {
    env = loadStackEnv();
    dir = await mkdtemp(join(tmpdir(), "hpcs-client-agent-test-"));
  });

  after(async () => {
    for (const id of nodeIds) await forgetAgent(env, id).catch(() => undefined);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  let usedToken = "";

  it("starts healthy from a join token; stop() ends the process and removes its directory, twice", async () => {
    usedToken = await token(1);
    const agent = await ClientAgent.start(options(usedToken));
    const pid = agent.pid ?? 0;
    assert.ok(alive(pid));
    assert.ok(agent.running);
    assert.ok(agent.dir.startsWith(dir));
    await runOk(env.spire.agent_bin, ["healthcheck", "-socketPath", agent.socketPath]);
    // The config holding the token is private to this user.
    assert.equal(readFileSync(join(agent.dir, "agent.conf"), "utf8").includes(usedToken), true);
    await agent.stop();
    await agent.stop();
    assert.ok(!agent.running);
    await eventually("agent reaped", 5000, async () => assert.ok(!alive(pid)));
    assert.ok(!existsSync(agent.dir));
    await nothingLeft();
  });

  it("a spent join token: fails fast with SPIRE's refusal, token cut out, nothing left", async () => {
    assert.ok(usedToken, "the previous test ran");
    const t0 = Date.now();
    await assert.rejects(ClientAgent.start(options(usedToken)), (e: unknown) => {
      assert.ok(e instanceof Error);
      assert.match(
        e.message,
        /refused the spire-agent's join token: .*join token does not exist or has already been used/,
      );
      assert.ok(!e.message.includes(usedToken) && !e.message.includes("\n"), e.message);
      return true;
    });
    assert.ok(Date.now() - t0 < 15_000, `took ${Date.now() - t0} ms`);
    await nothingLeft();
  });

  it("an unreachable SPIRE server: not healthy within the bound, naming the keys to check", async () => {
    const port = await freePort();
    const t = await token(2);
    await assert.rejects(
      ClientAgent.start(options(t, { serverPort: port, healthTimeoutMs: 3000 })),
      (e: unknown) => {
        assert.ok(e instanceof Error);
        assert.match(
          e.message,
          /^spire-agent not healthy within 3000 ms: .*connection refused.*; check \[spire-server\] address, port and trust-bundle$/,
        );
        assert.ok(!e.message.includes(t));
        return true;
      },
    );
    await nothingLeft();
  });

  it("a crashing client process leaves no agent behind (process 'exit' handler)", async () => {
    const script = join(dir, "..", `hpcs-crash-${n}.mjs`);
    await writeFile(
      script,
      [
        `import { ClientAgent } from ${JSON.stringify(CLIENT_AGENT_JS)};`,
        `const a = await ClientAgent.start(JSON.parse(process.env.AGENT_OPTIONS));`,
        `process.stdout.write(JSON.stringify({ pid: a.pid, dir: a.dir }) + "\\n");`,
        `throw new Error("client crashed");`,
        "",
      ].join("\n"),
    );
    try {
      // Options through the environment, so the token is not in the child's argv.
      const child = spawn(process.execPath, [script], {
        env: { ...process.env, AGENT_OPTIONS: JSON.stringify(options(await token(3))) },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let out = "";
      let err = "";
      child.stdout.on("data", (b: Buffer) => (out += b.toString()));
      child.stderr.on("data", (b: Buffer) => (err += b.toString()));
      const [code] = (await once(child, "exit")) as [number | null];
      assert.notEqual(code, 0);
      assert.match(err, /client crashed/);
      const started = JSON.parse(out.trim()) as { pid: number; dir: string };
      assert.ok(started.pid > 0 && started.dir.startsWith(dir), out);
      await eventually("agent killed", 5000, async () => assert.ok(!alive(started.pid)));
      assert.ok(!existsSync(started.dir));
      await nothingLeft();
    } finally {
      await rm(script, { force: true });
    }
  });
});
