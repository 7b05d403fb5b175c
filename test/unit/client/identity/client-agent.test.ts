import assert from "node:assert/strict";
import { chmod, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { agentConfig, ClientAgent, ClientAgentError } from "../../../../client/identity/client-agent.js";

// What can be checked without a SPIRE server: config validation and the agent process failing to
// start. The real agent (healthy, refused token, unreachable server, crash cleanup) is in
// test/integration/client/client-agent.test.ts.

const TOKEN = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

describe("client/identity/client-agent", function () {
  this.timeout(20_000);
  let dir: string;
  let bundle: string;
  const base = () => ({
    serverAddress: "127.0.0.1",
    serverPort: 8081,
    trustDomain: "hpcs.test",
    trustBundlePath: bundle,
    joinToken: TOKEN,
    tmpRoot: dir,
  });

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "hpcs-agent-unit-"));
    bundle = join(dir, "bundle.pem");
    await writeFile(bundle, "-----BEGIN CERTIFICATE-----\n");
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const leftovers = async () => (await readdir(dir)).filter((f) => f !== "bundle.pem" && f !== "bin");

  it("writes the bench's agent config: join_token, memory keys, unix workload attestor", () => {
    const hcl = agentConfig({ ...base(), dir: "/tmp/a", socketPath: "/tmp/a/agent.sock" });
    assert.match(hcl, /data_dir = "\/tmp\/a\/data"/);
    assert.match(hcl, /server_port = "8081"/);
    assert.match(hcl, /join_token = "0f1e2d3c-/);
    assert.match(hcl, /NodeAttestor "join_token"[\s\S]*KeyManager "memory"[\s\S]*WorkloadAttestor "unix"/);
  });

  it("refuses HCL-breaking values instead of escaping them", () => {
    for (const dirName of ['/tmp/a"b', "/tmp/a\nb", "/tmp/a\\b", "/tmp/${x}", "/tmp/%{x}"]) {
      assert.throws(
        () => agentConfig({ ...base(), dir: dirName, socketPath: "/tmp/s" }),
        (e: unknown) =>
          e instanceof ClientAgentError &&
          /^spire-agent config: data dir contains a quote, backslash, control character or template sequence/.test(
            e.message,
          ),
      );
    }
  });

  it("validates its options before creating anything, never echoing the join token", async () => {
    const bad: [object, RegExp][] = [
      [{ serverAddress: "spire;rm -rf /" }, /fix \[spire-server\] address/],
      [{ serverPort: 0 }, /fix \[spire-server\] port/],
      [{ trustDomain: "Not A Domain" }, /fix \[spire-server\] trust-domain/],
      [{ trustBundlePath: "bundle.pem" }, /not an absolute path; fix \[spire-server\] trust-bundle/],
      [{ trustBundlePath: "/nonexistent/bundle.pem" }, /\(ENOENT\); set \[spire-server\] trust-bundle/],
      [{ joinToken: 'x" }\nplugins {' }, /not a SPIRE join token/],
    ];
    for (const [override, match] of bad) {
      await assert.rejects(ClientAgent.start({ ...base(), ...override }), (e: unknown) => {
        assert.ok(e instanceof ClientAgentError, String(e));
        assert.match(e.message, match);
        assert.ok(!e.message.includes("plugins {") && !e.message.includes("\n"));
        return true;
      });
    }
    assert.deepEqual(await leftovers(), []);
  });

  it("an agent program that is missing, or exits at once: one line with its output, token cut out", async () => {
    await assert.rejects(
      ClientAgent.start({ ...base(), agentBin: join(dir, "no-such-spire-agent") }),
      (e: unknown) =>
        e instanceof ClientAgentError &&
        /exited \(not started: ENOENT\).*set \[spire-server\] agent-bin/.test(e.message),
    );
    // A stand-in that fails the way spire-agent does, quoting its config (where the token is).
    await writeFile(
      join(dir, "bin"),
      `#!/bin/sh\necho 'time="x" level=error msg="Agent crashed" error="bad token ${TOKEN}"' >&2\nexit 1\n`,
    );
    await chmod(join(dir, "bin"), 0o700);
    const t0 = Date.now();
    await assert.rejects(ClientAgent.start({ ...base(), agentBin: join(dir, "bin") }), (e: unknown) => {
      assert.ok(e instanceof ClientAgentError, String(e));
      assert.match(
        e.message,
        /exited \(code 1\) before it was healthy: Agent crashed: bad token <join-token>/,
      );
      assert.ok(!e.message.includes(TOKEN));
      return true;
    });
    assert.ok(Date.now() - t0 < 5000, "fails when the process exits, not at the timeout");
    assert.deepEqual(await leftovers(), []);
  });

  it("an abort during start stops the agent and removes its directory", async () => {
    await writeFile(join(dir, "bin"), "#!/bin/sh\nexec sleep 60\n");
    await chmod(join(dir, "bin"), 0o700);
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 300);
    await assert.rejects(
      ClientAgent.start({ ...base(), agentBin: join(dir, "bin"), signal: ac.signal }),
      /spire-agent start aborted/,
    );
    assert.deepEqual(await leftovers(), []);
  });
});
