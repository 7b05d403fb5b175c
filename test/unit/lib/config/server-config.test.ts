import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError } from "../../../../lib/config/ini-file.js";
import { loadServerConfig, parseServerConfig } from "../../../../lib/config/server-config.js";

const F = "/etc/hpcs/server.ini";

// The original README's server config, with values filled in.
const ORIGINAL = `[spire-server]
address = "spire.lumi.csc.fi"
port = 8081
trust-domain = hpcs
pre-command = ""
spire-server-bin = spire-server

[vault]
url = https://vault-provider:8200
server-role = hpcs-server
`;

const FULL = `[spire-server]
address = 127.0.0.1
port = 8081
trust-domain = hpcs.test
socket-path = /run/spire/admin.sock

[spire-agent]
socket-path = agent/api.sock

[vault]
url = https://127.0.0.1:8200/
server-role = site-hpcs
ca-file = ~/pki/ca.crt
audience = TESTING
kv-mount = secret
jwt-mount = spire-jwt

[hpcs-server]
listen = 127.0.0.1:9443
tls-cert = /etc/hpcs/tls.crt
tls-key = /etc/hpcs/tls.key
agent-model = site
node-attestation = operator
insecure-ip-identity = true
grpc-listen = [::1]:9444
caller-audience = spiffe://hpcs.test/hpcs-server
client-selectors = unix:uid:1000  docker:image_id:sha256:0123abcd
node-token-ttl = 12h
`;

/** Replaces `key = ...` in [section] (or appends it), or deletes it when value is undefined. */
function edit(text: string, section: string, key: string, value: string | undefined): string {
  const lines = text.split("\n");
  let inSection = false;
  let done = false;
  const out: string[] = [];
  for (const line of lines) {
    const s = /^\[(.*)\]$/.exec(line);
    if (s) {
      if (inSection && !done && value !== undefined) {
        out.push(`${key} = ${value}`);
        done = true;
      }
      inSection = s[1] === section;
    } else if (inSection && line.split("=")[0]?.trim() === key) {
      done = true;
      if (value !== undefined) out.push(`${key} = ${value}`);
      continue;
    }
    out.push(line);
  }
  if (!done && value !== undefined) out.push(...(inSection ? [] : [`[${section}]`]), `${key} = ${value}`);
  return out.join("\n");
}

function errorOf(text: string): string {
  try {
    parseServerConfig(text, F);
  } catch (e) {
    assert.ok(e instanceof ConfigError, String(e));
    return e.message;
  }
  return "(no error)";
}

describe("server config", () => {
  it("reads the original's config with defaults for every new key", () => {
    assert.deepEqual(parseServerConfig(ORIGINAL, F), {
      source: F,
      spireServer: {
        address: "spire.lumi.csc.fi",
        port: 8081,
        trustDomain: "hpcs",
        preCommand: [],
        spireServerBin: "spire-server",
      },
      spireAgent: { socketPath: "/tmp/spire-agent/public/api.sock" },
      vault: {
        url: "https://vault-provider:8200",
        serverRole: "hpcs-server",
        audience: "vault",
        kvMount: "kv",
        jwtMount: "jwt",
      },
      hpcsServer: {
        listen: { host: "0.0.0.0", port: 10080 },
        agentModel: "per-job",
        nodeAttestation: "munge",
        insecureIpIdentity: false,
        grpcListen: { host: "0.0.0.0", port: 10081 },
        callerAudience: "hpcs-server",
        clientSelectors: [],
        nodeTokenTtlSec: 3600,
        munge: {
          socket: "/run/munge/munge.socket.2",
          unmungeBin: "unmunge",
          squeueBin: "squeue",
          maxAgeSec: 300,
        },
        auditLog: { to: "stdout" },
        sweepIntervalSec: 30,
        rateLimits: { register: { count: 10, periodSec: 60 }, nodeToken: { count: 120, periodSec: 60 } },
      },
    });
  });

  it("reads every new key", () => {
    assert.deepEqual(parseServerConfig(FULL, F), {
      source: F,
      spireServer: {
        address: "127.0.0.1",
        port: 8081,
        trustDomain: "hpcs.test",
        socketPath: "/run/spire/admin.sock",
        preCommand: [],
        spireServerBin: "spire-server",
      },
      spireAgent: { socketPath: "/etc/hpcs/agent/api.sock" },
      vault: {
        url: "https://127.0.0.1:8200",
        serverRole: "site-hpcs",
        caFile: join(homedir(), "pki/ca.crt"),
        audience: "TESTING",
        kvMount: "secret",
        jwtMount: "spire-jwt",
      },
      hpcsServer: {
        listen: { host: "127.0.0.1", port: 9443 },
        tls: { certFile: "/etc/hpcs/tls.crt", keyFile: "/etc/hpcs/tls.key" },
        agentModel: "site",
        nodeAttestation: "operator",
        insecureIpIdentity: true,
        grpcListen: { host: "::1", port: 9444 },
        callerAudience: "spiffe://hpcs.test/hpcs-server",
        clientSelectors: [
          { type: "unix", value: "uid:1000" },
          { type: "docker", value: "image_id:sha256:0123abcd" },
        ],
        nodeTokenTtlSec: 12 * 3600,
        munge: {
          socket: "/run/munge/munge.socket.2",
          unmungeBin: "unmunge",
          squeueBin: "squeue",
          maxAgeSec: 300,
        },
        auditLog: { to: "stdout" },
        sweepIntervalSec: 30,
        rateLimits: { register: { count: 10, periodSec: 60 }, nodeToken: { count: 120, periodSec: 60 } },
      },
    });
  });

  it("turns pre-command into argv, and accepts the legacy agent socket key", () => {
    let t = edit(ORIGINAL, "spire-server", "pre-command", `"kubectl exec -n spire 'spire-server-0' --"`);
    t = edit(t, "spire-server", "spire-server-bin", "/opt/spire/bin/spire-server");
    t = edit(t, "spire-agent", "spire-agent-socket", "/tmp/a.sock");
    const c = parseServerConfig(t, F);
    assert.deepEqual(c.spireServer.preCommand, ["kubectl", "exec", "-n", "spire", "spire-server-0", "--"]);
    assert.equal(c.spireServer.spireServerBin, "/opt/spire/bin/spire-server");
    assert.equal(c.spireAgent.socketPath, "/tmp/a.sock");
    assert.deepEqual(
      parseServerConfig(edit(ORIGINAL, "hpcs-server", "listen", "[::1]:10080"), F).hpcsServer.listen,
      {
        host: "::1",
        port: 10080,
      },
    );
  });

  const cases: [string, string, string | undefined, string][] = [
    ["vault", "url", undefined, "[vault] url: missing; set it to the Vault address, e.g. https://vault:8200"],
    ["vault", "url", "", "[vault] url: empty; set it to the Vault address, e.g. https://vault:8200"],
    [
      "vault",
      "url",
      "vault:8200",
      '[vault] url: "vault:8200" is not http(s); set it to the Vault address, e.g. https://vault:8200',
    ],
    [
      "vault",
      "url",
      "not a url",
      '[vault] url: "not a url" is not a URL; set it to the Vault address, e.g. https://vault:8200',
    ],
    [
      "vault",
      "url",
      "https://u:p@vault:8200",
      '[vault] url: "https://u:p@vault:8200" must not carry credentials, a query or a fragment; set it to the Vault address, e.g. https://vault:8200',
    ],
    [
      "vault",
      "ulr",
      "https://v",
      "[vault] ulr: unknown key; did you mean url? (known in [vault]: url, server-role, ca-file, audience, kv-mount, jwt-mount)",
    ],
    [
      "vault",
      "server-role",
      "Hpcs Server",
      "[vault] server-role: \"Hpcs Server\" is not a Vault role name; use lower-case letters, digits, '.', '_' or '-', e.g. hpcs-server",
    ],
    [
      "vault",
      "kv-mount",
      "../sys",
      "[vault] kv-mount: \"../sys\" is not a mount path; use lower-case letters, digits, '_' or '-', e.g. kv",
    ],
    [
      "vault",
      "audience",
      "a b",
      "[vault] audience: \"a b\" is not an audience; use letters, digits, '.', '_', ':', '/' or '-', e.g. vault",
    ],
    [
      "spire-server",
      "address",
      undefined,
      "[spire-server] address: missing; set it to the SPIRE server's host name, e.g. spire.example.org",
    ],
    [
      "spire-server",
      "address",
      "spire server",
      '[spire-server] address: "spire server" is not a host name or IP address; set it to the SPIRE server\'s host name, e.g. spire.example.org',
    ],
    [
      "spire-server",
      "port",
      undefined,
      "[spire-server] port: missing; set it to the SPIRE server's port, e.g. 8081",
    ],
    [
      "spire-server",
      "port",
      "PORT",
      '[spire-server] port: "PORT" is not a port; set it to a number from 1 to 65535, e.g. 8081',
    ],
    [
      "spire-server",
      "port",
      "70000",
      '[spire-server] port: "70000" is not a port; set it to a number from 1 to 65535, e.g. 8081',
    ],
    [
      "spire-server",
      "trust-domain",
      undefined,
      "[spire-server] trust-domain: missing; set it to the SPIFFE trust domain, e.g. hpcs.example.org",
    ],
    [
      "spire-server",
      "trust-domain",
      "TRUST_DOMAIN",
      "[spire-server] trust-domain: \"TRUST_DOMAIN\" is not a trust domain; use lower-case letters, digits, '.', '_' or '-', e.g. hpcs.example.org",
    ],
    [
      "spire-server",
      "pre-command",
      '"kubectl exec x -- ; rm -rf /"',
      "[spire-server] pre-command: ';' is a shell metacharacter; the command runs as an argv list without a shell, so write plain words (put pipelines or redirections in a wrapper script)",
    ],
    [
      "spire-server",
      "pre-command",
      "kubectl exec $(id)",
      "[spire-server] pre-command: '$' is a shell metacharacter; the command runs as an argv list without a shell, so write plain words (put pipelines or redirections in a wrapper script)",
    ],
    [
      "spire-server",
      "pre-command",
      `"kubectl 'exec"`,
      "[spire-server] pre-command: unterminated ' quote; close it",
    ],
    [
      "spire-server",
      "spire-server-bin",
      "spire-server -x",
      "[spire-server] spire-server-bin: one program, no arguments; put arguments in pre-command",
    ],
    [
      "spire-server",
      "socket-path",
      "/run/admin.sock",
      "[spire-server] socket-path: set either socket-path (admin API) or pre-command/spire-server-bin (CLI), not both",
    ],
    [
      "spire-agent",
      "sokcet-path",
      "/x",
      "[spire-agent] sokcet-path: unknown key; did you mean socket-path? (known in [spire-agent]: socket-path, spire-agent-socket)",
    ],
    [
      "hpcs-server",
      "agent-model",
      "shared",
      '[hpcs-server] agent-model: "shared" is not allowed; set it to one of site, per-job',
    ],
    [
      "hpcs-server",
      "node-attestation",
      "ip",
      '[hpcs-server] node-attestation: "ip" is not allowed; set it to one of munge, operator, open',
    ],
    [
      "hpcs-server",
      "insecure-ip-identity",
      "yes",
      '[hpcs-server] insecure-ip-identity: "yes" is not a boolean; set it to true or false',
    ],
    [
      "hpcs-server",
      "listen",
      "10080",
      '[hpcs-server] listen: "10080" is not host:port; set it to e.g. 0.0.0.0:10080 or [::1]:10080',
    ],
    [
      "hpcs-server",
      "listen",
      "0.0.0.0:0",
      '[hpcs-server] listen: "0.0.0.0:0" is not host:port; set it to e.g. 0.0.0.0:10080 or [::1]:10080',
    ],
    ["hpcs-server", "tls-cert", "/etc/tls.crt", "[hpcs-server] tls-key: set tls-cert and tls-key together"],
    [
      "hpcs-server",
      "grpc-listen",
      "10081",
      '[hpcs-server] grpc-listen: "10081" is not host:port; set it to e.g. 0.0.0.0:10081 or [::1]:10081',
    ],
    [
      "hpcs-server",
      "grpc-listen",
      "0.0.0.0:10080",
      "[hpcs-server] grpc-listen: same address as listen; give gRPC its own port, e.g. listen's port + 1",
    ],
    [
      "hpcs-server",
      "caller-audience",
      "hpcs server",
      "[hpcs-server] caller-audience: \"hpcs server\" is not an audience; use letters, digits, '.', '_', ':', '/' or '-', e.g. vault",
    ],
    [
      "hpcs-server",
      "client-selectors",
      "unix:uid:1000 uid1000",
      '[hpcs-server] client-selectors: "uid1000" is not type:value; write space-separated selectors, e.g. unix:uid:1000 docker:image_id:sha256:…',
    ],
    [
      "hpcs-server",
      "client-selectors",
      "un!x:uid:0",
      "[hpcs-server] client-selectors: invalid selector type \"un!x\": use 1-64 letters, digits, '_' or '-', e.g. unix",
    ],
    [
      "hpcs-server",
      "node-token-ttl",
      "10s",
      '[hpcs-server] node-token-ttl: "10s" is not a duration between 1m and 30d; use e.g. 90s, 15m, 1h or 7d',
    ],
    [
      "hpcs-server",
      "node-token-ttl",
      "1 hour",
      '[hpcs-server] node-token-ttl: "1 hour" is not a duration between 1m and 30d; use e.g. 90s, 15m, 1h or 7d',
    ],
    ["hpcs-server", "tls-key", "/etc/tls.key", "[hpcs-server] tls-cert: set tls-cert and tls-key together"],
  ];
  for (const [section, key, value, expected] of cases) {
    it(`[${section}] ${key} = ${JSON.stringify(value)} -> ${expected}`, () => {
      assert.equal(errorOf(edit(ORIGINAL, section, key, value)), `config ${F}: ${expected}`);
    });
  }

  it("refuses an unknown or mis-cased section, suggesting the right one", () => {
    assert.equal(
      errorOf(ORIGINAL.replace("[vault]", "[Vault]")),
      `config ${F}: [Vault]: unknown section; did you mean [vault]? (known: [spire-server] [spire-agent] [vault] [hpcs-server])`,
    );
    assert.equal(
      errorOf(`${ORIGINAL}\n[supercomputer]\naddress = x\n`),
      `config ${F}: [supercomputer]: unknown section (known: [spire-server] [spire-agent] [vault] [hpcs-server])`,
    );
  });

  it("loads from a file, resolving relative paths against the file's directory", () => {
    const dir = mkdtempSync(join(tmpdir(), "hpcs-conf-"));
    try {
      const p = join(dir, "server.ini");
      writeFileSync(p, edit(ORIGINAL, "vault", "ca-file", "pki/ca.crt"));
      assert.equal(loadServerConfig(p).vault.caFile, join(dir, "pki/ca.crt"));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("server config: audit log, sweep interval, rate limits", () => {
  it("reads audit-log (a path relative to the file), sweep-interval and rate limits", () => {
    let t = edit(ORIGINAL, "hpcs-server", "audit-log", "log/audit.jsonl");
    t = edit(t, "hpcs-server", "sweep-interval", "2s");
    t = edit(t, "hpcs-server", "rate-limit-register", "3/s");
    t = edit(t, "hpcs-server", "rate-limit-node-token", "off");
    const c = parseServerConfig(t, F).hpcsServer;
    assert.deepEqual(c.auditLog, { to: "file", path: "/etc/hpcs/log/audit.jsonl" });
    assert.equal(c.sweepIntervalSec, 2);
    assert.deepEqual(c.rateLimits, { register: { count: 3, periodSec: 1 } });
    const zero = edit(
      edit(ORIGINAL, "hpcs-server", "rate-limit-register", "0"),
      "hpcs-server",
      "audit-log",
      "stdout",
    );
    assert.deepEqual(parseServerConfig(zero, F).hpcsServer.rateLimits, {
      nodeToken: { count: 120, periodSec: 60 },
    });
    assert.deepEqual(parseServerConfig(zero, F).hpcsServer.auditLog, { to: "stdout" });
    const hour = edit(ORIGINAL, "hpcs-server", "rate-limit-node-token", "500 / hour");
    assert.deepEqual(parseServerConfig(hour, F).hpcsServer.rateLimits.nodeToken, {
      count: 500,
      periodSec: 3600,
    });
  });

  const cases: [string, string, string][] = [
    [
      "rate-limit-register",
      "10",
      '[hpcs-server] rate-limit-register: "10" is not a rate; use <count>/<s|min|h>, e.g. 10/min, or 0 / off for no limit',
    ],
    [
      "rate-limit-node-token",
      "10/day",
      '[hpcs-server] rate-limit-node-token: "10/day" is not a rate; use <count>/<s|min|h>, e.g. 10/min, or 0 / off for no limit',
    ],
    [
      "rate-limit-register",
      "0/min",
      '[hpcs-server] rate-limit-register: "0/min" is not a rate; use <count>/<s|min|h>, e.g. 10/min, or 0 / off for no limit',
    ],
    [
      "sweep-interval",
      "0s",
      '[hpcs-server] sweep-interval: "0s" is not a duration between 1s and 1h; use e.g. 90s, 15m, 1h or 7d',
    ],
  ];
  for (const [key, value, expected] of cases) {
    it(`${key} = ${JSON.stringify(value)} -> ${expected}`, () => {
      assert.equal(errorOf(edit(ORIGINAL, "hpcs-server", key, value)), `config ${F}: ${expected}`);
    });
  }
});

describe("server config: node-attestation = munge keys", () => {
  it("reads munge-socket, unmunge-bin, squeue-bin and munge-max-age", () => {
    let t = edit(ORIGINAL, "hpcs-server", "munge-socket", "run/munge.sock");
    t = edit(t, "hpcs-server", "unmunge-bin", "/opt/munge/bin/unmunge");
    t = edit(t, "hpcs-server", "squeue-bin", "/opt/slurm/bin/squeue");
    t = edit(t, "hpcs-server", "munge-max-age", "90s");
    assert.deepEqual(parseServerConfig(t, F).hpcsServer.munge, {
      socket: "/etc/hpcs/run/munge.sock",
      unmungeBin: "/opt/munge/bin/unmunge",
      squeueBin: "/opt/slurm/bin/squeue",
      maxAgeSec: 90,
    });
    assert.equal(
      parseServerConfig(edit(ORIGINAL, "hpcs-server", "munge-max-age", "1"), F).hpcsServer.munge.maxAgeSec,
      1,
    );
    assert.equal(
      parseServerConfig(edit(ORIGINAL, "hpcs-server", "munge-max-age", "1h"), F).hpcsServer.munge.maxAgeSec,
      3600,
    );
  });

  const cases: [string, string, string][] = [
    [
      "munge-max-age",
      "0s",
      '[hpcs-server] munge-max-age: "0s" is not a duration between 1s and 1h; use e.g. 90s, 15m, 1h or 7d',
    ],
    [
      "munge-max-age",
      "2h",
      '[hpcs-server] munge-max-age: "2h" is not a duration between 1s and 1h; use e.g. 90s, 15m, 1h or 7d',
    ],
    [
      "munge-max-age",
      "five minutes",
      '[hpcs-server] munge-max-age: "five minutes" is not a duration between 1s and 1h; use e.g. 90s, 15m, 1h or 7d',
    ],
    [
      "unmunge-bin",
      "unmunge -S /x",
      "[hpcs-server] unmunge-bin: one program, no arguments, e.g. /usr/bin/unmunge",
    ],
    [
      "squeue-bin",
      "squeue --all",
      "[hpcs-server] squeue-bin: one program, no arguments, e.g. /usr/bin/squeue",
    ],
    [
      "squeue-bin",
      "squeue $(id)",
      "[hpcs-server] squeue-bin: '$' is a shell metacharacter; the command runs as an argv list without a shell, so write plain words (put pipelines or redirections in a wrapper script)",
    ],
  ];
  it("suggests munge-socket for a typo", () => {
    assert.match(
      errorOf(edit(ORIGINAL, "hpcs-server", "munge-sokcet", "/x")),
      /\[hpcs-server\] munge-sokcet: unknown key; did you mean munge-socket\? \(known in \[hpcs-server\]: .*munge-socket, unmunge-bin, squeue-bin, munge-max-age/,
    );
  });

  for (const [key, value, expected] of cases) {
    it(`[hpcs-server] ${key} = ${JSON.stringify(value)} -> ${expected}`, () => {
      assert.equal(errorOf(edit(ORIGINAL, "hpcs-server", key, value)), `config ${F}: ${expected}`);
    });
  }
});
