import assert from "node:assert/strict";
import { homedir } from "node:os";
import { parseClientConfig } from "../../../../lib/config/client-config.js";
import { ConfigError } from "../../../../lib/config/ini-file.js";

const F = "/home/alice/hpcs/client.ini";

// The original README's client config, with values filled in.
const ORIGINAL = `[spire-server]
address = spire.lumi.csc.fi
port = 8081
trust-domain = hpcs

[hpcs-server]
url = https://hpcs-server:10080

[vault]
url = https://vault-provider:8200

[supercomputer]
address = lumi.csc.fi
username = etellier
`;

function withKey(section: string, key: string, value: string | undefined): string {
  const out: string[] = [];
  let inSection = false;
  let done = false;
  for (const line of ORIGINAL.split("\n")) {
    const s = /^\[(.*)\]$/.exec(line);
    if (s) inSection = s[1] === section;
    if (inSection && line.split("=")[0]?.trim() === key) {
      done = true;
      if (value !== undefined) out.push(`${key} = ${value}`);
      continue;
    }
    out.push(line);
    if (s && inSection && value !== undefined && !ORIGINAL.includes(`\n${key} =`)) {
      out.push(`${key} = ${value}`);
      done = true;
    }
  }
  if (!done && value !== undefined) out.push(`[${section}]`, `${key} = ${value}`);
  return out.join("\n");
}

function errorOf(text: string): string {
  try {
    parseClientConfig(text, F);
  } catch (e) {
    assert.ok(e instanceof ConfigError, String(e));
    return e.message;
  }
  return "(no error)";
}

describe("client config", () => {
  it("reads the original's config with defaults", () => {
    assert.deepEqual(parseClientConfig(ORIGINAL, F), {
      source: F,
      spireServer: { address: "spire.lumi.csc.fi", port: 8081, trustDomain: "hpcs", agentBin: "spire-agent" },
      hpcsServer: { url: "https://hpcs-server:10080", audience: "hpcs-server" },
      vault: { url: "https://vault-provider:8200", audience: "vault" },
      supercomputer: { address: "lumi.csc.fi", username: "etellier", port: 22 },
    });
  });

  it("reads every new key, resolving paths", () => {
    let t = withKey("hpcs-server", "ca-file", "/etc/ssl/hpcs-ca.pem");
    t = t.replace(
      "url = https://hpcs-server:10080",
      "url = https://hpcs-server:10080\nenrollment-secret-file = secrets/enroll\nclient-name = lab-42\naudience = hpcs-srv",
    );
    t = t.replace(
      "url = https://vault-provider:8200",
      "url = https://vault-provider:8200\nca-file = ~/vault-ca.pem\naudience = TESTING",
    );
    t = t.replace(
      "trust-domain = hpcs",
      "trust-domain = hpcs\ntrust-bundle = spire/bundle.pem\nagent-bin = ~/bin/spire-agent",
    );
    t = t.replace(
      "username = etellier",
      "username = etellier\nport = 2222\nssh-key = ~/.ssh/id_ed25519\nknown-hosts = /etc/ssh/known_hosts\nproxy-jump = jump@bastion.example.org:2200,10.0.0.1\nsite-tools = true",
    );
    assert.deepEqual(parseClientConfig(t, F), {
      source: F,
      spireServer: {
        address: "spire.lumi.csc.fi",
        port: 8081,
        trustDomain: "hpcs",
        trustBundle: "/home/alice/hpcs/spire/bundle.pem",
        agentBin: `${homedir()}/bin/spire-agent`,
      },
      hpcsServer: {
        url: "https://hpcs-server:10080",
        caFile: "/etc/ssl/hpcs-ca.pem",
        enrollmentSecretFile: "/home/alice/hpcs/secrets/enroll",
        clientName: "lab-42",
        audience: "hpcs-srv",
      },
      vault: { url: "https://vault-provider:8200", caFile: `${homedir()}/vault-ca.pem`, audience: "TESTING" },
      supercomputer: {
        address: "lumi.csc.fi",
        username: "etellier",
        port: 2222,
        sshKey: `${homedir()}/.ssh/id_ed25519`,
        knownHosts: "/etc/ssh/known_hosts",
        proxyJump: [
          { user: "jump", host: "bastion.example.org", port: 2200 },
          { host: "10.0.0.1", port: 22 },
        ],
        siteTools: true,
      },
    });
  });

  it("site-tools: a boolean, default off", () => {
    const st = (v: string) =>
      parseClientConfig(withKey("supercomputer", "site-tools", v), F).supercomputer.siteTools;
    assert.equal(st("true"), true);
    assert.equal(st("false"), undefined);
    assert.throws(
      () => st("maybe"),
      /\[supercomputer\] site-tools: "maybe" is not a boolean; set it to true or false/,
    );
  });

  it("agent-bin: a bare name stays a name (PATH), a path is resolved", () => {
    const bin = (v: string) =>
      parseClientConfig(withKey("spire-server", "agent-bin", v), F).spireServer.agentBin;
    assert.equal(bin("spire-agent-1.13"), "spire-agent-1.13");
    assert.equal(bin("./bin/spire-agent"), "/home/alice/hpcs/bin/spire-agent");
    assert.equal(bin("/opt/spire/bin/spire-agent"), "/opt/spire/bin/spire-agent");
  });

  const cases: [string, string, string | undefined, string][] = [
    [
      "hpcs-server",
      "url",
      undefined,
      "[hpcs-server] url: missing; set it to the hpcs server's address, e.g. https://hpcs-server:10080",
    ],
    ["vault", "url", undefined, "[vault] url: missing; set it to the Vault address, e.g. https://vault:8200"],
    [
      "vault",
      "url",
      "ftp://vault",
      '[vault] url: "ftp://vault" is not http(s); set it to the Vault address, e.g. https://vault:8200',
    ],
    [
      "supercomputer",
      "address",
      undefined,
      "[supercomputer] address: missing; set it to the login node's host name, e.g. lumi.csc.fi",
    ],
    [
      "supercomputer",
      "address",
      "-oProxyCommand=sh",
      '[supercomputer] address: "-oProxyCommand=sh" is not a host name or IP address; set it to the login node\'s host name, e.g. lumi.csc.fi',
    ],
    [
      "supercomputer",
      "username",
      undefined,
      "[supercomputer] username: missing; set it to your user name on the supercomputer, e.g. alice",
    ],
    [
      "supercomputer",
      "username",
      "alice'; id; '",
      "[supercomputer] username: ';' or '#' in an unquoted value starts an INI comment; quote the whole value, or drop the comment",
    ],
    [
      "supercomputer",
      "username",
      '"$(id)"',
      `[supercomputer] username: invalid user name "$(id)": use lower-case letters, digits, '_' or '-', at most 32, e.g. alice`,
    ],
    [
      "supercomputer",
      "port",
      "ssh",
      '[supercomputer] port: "ssh" is not a port; set it to a number from 1 to 65535, e.g. 22',
    ],
    [
      "supercomputer",
      "proxy-jump",
      "-oProxyCommand=x",
      '[supercomputer] proxy-jump: "-oProxyCommand=x" is not [user@]host[:port]; set it to e.g. alice@bastion.example.org:22',
    ],
    [
      "supercomputer",
      "proxy-jump",
      "a@b:99999",
      '[supercomputer] proxy-jump: "a@b:99999" is not [user@]host[:port]; set it to e.g. alice@bastion.example.org:22',
    ],
    [
      "supercomputer",
      "user",
      "alice",
      "[supercomputer] user: unknown key (known in [supercomputer]: address, username, port, ssh-key, known-hosts, proxy-jump, site-tools)",
    ],
    [
      "spire-server",
      "trust-domain",
      undefined,
      "[spire-server] trust-domain: missing; set it to the SPIFFE trust domain, e.g. hpcs.example.org",
    ],
    [
      "spire-server",
      "port",
      "PORT",
      '[spire-server] port: "PORT" is not a port; set it to a number from 1 to 65535, e.g. 8081',
    ],
    [
      "spire-server",
      "pre-command",
      "x",
      "[spire-server] pre-command: unknown key (known in [spire-server]: address, port, trust-domain, trust-bundle, agent-bin)",
    ],
    [
      "hpcs-server",
      "enrolment-secret-file",
      "/x",
      "[hpcs-server] enrolment-secret-file: unknown key; did you mean enrollment-secret-file? (known in [hpcs-server]: url, ca-file, enrollment-secret-file, client-name, audience, oidc-token-file, oidc-issuer, oidc-client-id, oidc-ca-file, grpc-mtls, grpc-mtls-server-id)",
    ],
    [
      "spire-server",
      "agent-bin",
      "-x",
      '[spire-server] agent-bin: "-x" is not a program name or path; set it to e.g. spire-agent or /usr/local/bin/spire-agent',
    ],
    [
      "spire-server",
      "agent-bin",
      '"spire-agent run"',
      '[spire-server] agent-bin: "spire-agent run" is not a program name or path; set it to e.g. spire-agent or /usr/local/bin/spire-agent',
    ],
    [
      "hpcs-server",
      "client-name",
      "Lab_1",
      `[hpcs-server] client-name: invalid client name "Lab_1": use lower-case letters, digits or '-' (not at either end), at most 63, e.g. lab-42`,
    ],
    [
      "hpcs-server",
      "audience",
      '"a b"',
      `[hpcs-server] audience: "a b" is not an audience; use letters, digits, '.', '_', ':', '/' or '-', e.g. hpcs-server`,
    ],
    [
      "vault",
      "audience",
      "vault*",
      `[vault] audience: "vault*" is not an audience; use letters, digits, '.', '_', ':', '/' or '-', e.g. vault`,
    ],
  ];
  for (const [section, key, value, expected] of cases) {
    it(`[${section}] ${key} = ${JSON.stringify(value)} -> ${expected}`, () => {
      assert.equal(errorOf(withKey(section, key, value)), `config ${F}: ${expected}`);
    });
  }
});
