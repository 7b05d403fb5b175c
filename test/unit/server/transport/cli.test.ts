import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { parseServerConfig } from "../../../../lib/config/server-config.js";
import { createLogger } from "../../../../lib/log.js";
import { type CliDeps, type EnrollFn, parseDuration, runCli, startServer } from "../../../../server/cli.js";
import { EXPIRES, FakeService, makeTlsFiles, type TlsFiles } from "./fixtures.js";

const CONFIG = `[spire-server]
address = 127.0.0.1
port = 8081
trust-domain = hpcs.test

[vault]
url = https://127.0.0.1:8200
`;

describe("server/cli", () => {
  let dir: string;
  let out: string;
  let err: string;
  let enrolled: [string, number, boolean][];

  const enroll: EnrollFn = async (name, ttl, opts) => {
    enrolled.push([name, ttl, opts.force === true]);
    return { clientName: name, secret: "enroll-secret-xyz", expiresAt: EXPIRES };
  };

  function deps(): CliDeps {
    return {
      createService: () => new FakeService(),
      createEnroll: () => enroll,
      stdout: (t) => {
        out += t;
      },
      stderr: (t) => {
        err += t;
      },
      logDestination: new Writable({ write: (_c, _e, cb) => cb() }),
    };
  }

  before(() => {
    dir = mkdtempSync(join(tmpdir(), "hpcs-cli-"));
    writeFileSync(join(dir, "server.ini"), CONFIG);
    writeFileSync(join(dir, "bad.ini"), "[vault]\nurl = not a url\n");
  });
  after(() => rmSync(dir, { recursive: true, force: true }));
  beforeEach(() => {
    out = "";
    err = "";
    enrolled = [];
  });

  it("--help lists the subcommands, exit 0", async () => {
    assert.equal(await runCli(["--help"], deps()), 0);
    assert.match(out, /Usage: hpcs-server/);
    assert.match(out, /serve/);
    assert.match(out, /enroll/);
  });

  it("serve with a bad config: exit 2, one line on stderr", async () => {
    assert.equal(await runCli(["serve", "--config", join(dir, "bad.ini")], deps()), 2);
    assert.equal(err.trimEnd().split("\n").length, 1);
    assert.match(err, /^hpcs-server: config /);
    err = "";
    assert.equal(await runCli(["serve", "--config", join(dir, "missing.ini")], deps()), 2);
    assert.match(err, /no such file/);
  });

  it("serve without TLS and without --insecure: exit 2", async () => {
    assert.equal(await runCli(["serve", "--config", join(dir, "server.ini")], deps()), 2);
    assert.match(err, /tls-cert and tls-key/);
  });

  it("usage errors: exit 2, one line", async () => {
    assert.equal(await runCli(["serve"], deps()), 2);
    assert.equal(err.trimEnd().split("\n").length, 1);
    err = "";
    assert.equal(await runCli(["frobnicate"], deps()), 2);
    assert.equal(err.trimEnd().split("\n").length, 1);
    err = "";
    const cfg = join(dir, "server.ini");
    assert.equal(await runCli(["enroll", "alice", "--config", cfg, "--ttl", "forever"], deps()), 2);
    assert.match(err, /--ttl/);
    err = "";
    assert.equal(await runCli(["enroll", "Bad Name!", "--config", cfg], deps()), 2);
    assert.match(err, /invalid client name/);
    assert.equal(enrolled.length, 0);
  });

  it("enroll prints the secret once (text and --json)", async () => {
    const cfg = join(dir, "server.ini");
    assert.equal(await runCli(["enroll", "alice", "--config", cfg, "--ttl", "15m"], deps()), 0);
    assert.deepEqual(enrolled, [["alice", 900, false]]);
    assert.match(out, /enrollment secret: enroll-secret-xyz/);
    out = "";
    assert.equal(await runCli(["enroll", "alice", "--config", cfg, "--json", "--force"], deps()), 0);
    assert.deepEqual(JSON.parse(out), {
      clientName: "alice",
      enrollmentSecret: "enroll-secret-xyz",
      expiresAt: EXPIRES.toISOString(),
    });
    assert.deepEqual(enrolled[1], ["alice", 86400, true]);
  });

  it("enroll runtime failure: exit 1, one line", async () => {
    const d = deps();
    d.createEnroll = () => async () => {
      throw new Error("vault unreachable\nsecond line");
    };
    assert.equal(await runCli(["enroll", "alice", "--config", join(dir, "server.ini")], d), 1);
    assert.equal(err, "hpcs-server: vault unreachable\n");
  });

  it("node-token: only with node-attestation = operator; prints the token once (text and --json)", async () => {
    const issued: [string, string, number][] = [];
    const d = deps();
    d.createNodeToken = () => async (node, user, ttl) => {
      issued.push([node, user, ttl]);
      return { token: "node-token-abc", expiresAt: EXPIRES };
    };
    // munge (the default): refused, naming the key and the mode.
    assert.equal(await runCli(["node-token", "n1", "alice", "--config", join(dir, "server.ini")], d), 2);
    assert.equal(err.trimEnd().split("\n").length, 1);
    assert.match(err, /node-attestation is munge .*node-attestation = operator/);
    assert.deepEqual(issued, []);

    const cfg = join(dir, "operator.ini");
    writeFileSync(cfg, `${CONFIG}\n[hpcs-server]\nnode-attestation = operator\n`);
    err = "";
    assert.equal(await runCli(["node-token", "n1", "alice", "--config", cfg, "--ttl", "2h"], d), 0);
    assert.match(out, /operator token: node-token-abc/);
    out = "";
    assert.equal(await runCli(["node-token", "n1", "alice", "--config", cfg, "--json"], d), 0);
    assert.deepEqual(JSON.parse(out), {
      node: "n1",
      user: "alice",
      operatorToken: "node-token-abc",
      expiresAt: EXPIRES.toISOString(),
    });
    assert.deepEqual(issued, [
      ["n1", "alice", 7200],
      ["n1", "alice", 86400],
    ]);
    // Bad names: exit 2, nothing issued.
    assert.equal(await runCli(["node-token", "n;1", "alice", "--config", cfg], d), 2);
    assert.equal(await runCli(["node-token", "n1", "../x", "--config", cfg], d), 2);
    assert.equal(issued.length, 2);
  });

  it("parseDuration", () => {
    assert.equal(parseDuration("90s"), 90);
    assert.equal(parseDuration("60"), 60);
    assert.equal(parseDuration("3600"), 3600);
    assert.equal(parseDuration("2h"), 7200);
    assert.equal(parseDuration("7d"), 604800);
    assert.throws(() => parseDuration("0"));
    assert.throws(() => parseDuration("59s"));
    assert.throws(() => parseDuration("31d"));
    assert.throws(() => parseDuration("1w"));
  });
});

describe("server/transport/start-server", () => {
  let tls: TlsFiles;
  before(() => {
    tls = makeTlsFiles();
  });
  after(() => tls.cleanup());

  it("starts gRPC + HTTPS from the config's TLS files and closes", async () => {
    const config = parseServerConfig(
      `${CONFIG}\n[hpcs-server]\nlisten = 127.0.0.1:10080\ntls-cert = ${tls.certFile}\ntls-key = ${tls.keyFile}\n`,
      "test.ini",
    );
    const logger = createLogger({ level: "silent" });
    const h = await startServer(config, new FakeService(), logger, {
      http: { host: "127.0.0.1", port: 0 },
      grpc: { host: "127.0.0.1", port: 0 },
    });
    assert.equal(h.tls, true);
    assert.ok(h.httpPort > 0 && h.grpcPort > 0);
    const status = await new Promise<number>((resolve, reject) => {
      request(`https://127.0.0.1:${h.httpPort}/v1/health`, { ca: tls.ca, agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      })
        .on("error", reject)
        .end();
    });
    assert.equal(status, 200);
    await h.close();
  });

  it("refuses plaintext unless insecure is explicit", async () => {
    const config = parseServerConfig(CONFIG, "test.ini");
    const logger = createLogger({ level: "silent" });
    await assert.rejects(
      startServer(config, new FakeService(), logger, { http: { host: "127.0.0.1", port: 0 } }),
      /tls-cert and tls-key/,
    );
    const h = await startServer(config, new FakeService(), logger, {
      http: { host: "127.0.0.1", port: 0 },
      grpc: { host: "127.0.0.1", port: 0 },
      insecure: true,
    });
    assert.equal(h.tls, false);
    await h.close();
  });
});
