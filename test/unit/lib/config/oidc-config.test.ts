import assert from "node:assert/strict";
import { parseClientConfig } from "../../../../lib/config/client-config.js";
import { ConfigError } from "../../../../lib/config/ini-file.js";
import { parseServerConfig } from "../../../../lib/config/server-config.js";

const SERVER = `[spire-server]
address = 127.0.0.1
trust-domain = hpcs.test
port = 8081
[vault]
url = https://127.0.0.1:8200
[hpcs-server]
`;

const CLIENT = `[spire-server]
address = 127.0.0.1
trust-domain = hpcs.test
port = 8081
[vault]
url = https://127.0.0.1:8200
[supercomputer]
address = login.example.org
username = alice
[hpcs-server]
url = https://hpcs:10080
`;

const refused = (re: RegExp) => (e: unknown) => {
  assert.ok(e instanceof ConfigError, String(e));
  assert.match(e.message, re);
  return true;
};

describe("lib/config OIDC keys", () => {
  describe("server [hpcs-server] oidc-*", () => {
    it("is off by default", () => {
      assert.equal(parseServerConfig(SERVER, "/etc/s.ini").hpcsServer.oidc, undefined);
    });

    it("reads issuer, audience, claim, CA and allowed clients (with defaults)", () => {
      const min = parseServerConfig(
        `${SERVER}oidc-issuer = https://idp.example.org/realms/hpc\n`,
        "/etc/s.ini",
      );
      assert.deepEqual(min.hpcsServer.oidc, {
        issuer: "https://idp.example.org/realms/hpc",
        audience: "hpcs-server",
        clientClaim: "sub",
        allowedClients: [],
      });
      const full = parseServerConfig(
        `${SERVER}oidc-issuer = https://idp.example.org\noidc-audience = hpcs-cli\noidc-client-claim = preferred_username\noidc-ca-file = pki/idp.crt\noidc-allowed-clients = lab-1  lab-2\n`,
        "/etc/hpcs/s.ini",
      );
      assert.deepEqual(full.hpcsServer.oidc, {
        issuer: "https://idp.example.org",
        audience: "hpcs-cli",
        clientClaim: "preferred_username",
        caFile: "/etc/hpcs/pki/idp.crt",
        allowedClients: ["lab-1", "lab-2"],
      });
    });

    it("refuses http issuers, stray oidc keys, bad claims and bad allowed names", () => {
      const p = (extra: string) => () => parseServerConfig(`${SERVER}${extra}\n`, "/etc/s.ini");
      assert.throws(p("oidc-issuer = http://idp.example.org"), refused(/oidc-issuer.*not https/));
      assert.throws(p("oidc-audience = x"), refused(/oidc-audience.*without oidc-issuer/));
      assert.throws(p("oidc-issuer = https://i\noidc-client-claim = a b"), refused(/not a claim name/));
      assert.throws(
        p("oidc-issuer = https://i\noidc-allowed-clients = ok Bad_1"),
        refused(/invalid client name "Bad_1"/),
      );
    });
  });

  describe("client [hpcs-server] oidc-*", () => {
    it("reads a token file or the device-code settings", () => {
      const f = parseClientConfig(`${CLIENT}oidc-token-file = ~/.hpcs/id_token\n`, "/home/a/c.ini");
      assert.equal(f.hpcsServer.oidc?.source, "file");
      const d = parseClientConfig(
        `${CLIENT}oidc-issuer = https://idp.example.org\noidc-client-id = hpcs-cli\noidc-ca-file = idp.crt\n`,
        "/home/a/c.ini",
      );
      assert.deepEqual(d.hpcsServer.oidc, {
        source: "device-code",
        issuer: "https://idp.example.org",
        clientId: "hpcs-cli",
        caFile: "/home/a/idp.crt",
      });
      assert.equal(parseClientConfig(CLIENT, "/c.ini").hpcsServer.oidc, undefined);
    });

    it("refuses two login methods, half a device-code setup and http issuers", () => {
      const p = (extra: string) => () => parseClientConfig(`${CLIENT}${extra}\n`, "/c.ini");
      assert.throws(
        p("oidc-token-file = t\nenrollment-secret-file = s"),
        refused(/enrollment-secret-file.*keep one login method/),
      );
      assert.throws(
        p("oidc-token-file = t\noidc-issuer = https://i"),
        refused(/oidc-issuer.*either a token file/),
      );
      assert.throws(p("oidc-issuer = https://i"), refused(/oidc-client-id.*missing/));
      assert.throws(p("oidc-client-id = x"), refused(/oidc-client-id.*without oidc-issuer/));
      assert.throws(p("oidc-issuer = http://i\noidc-client-id = x"), refused(/not https/));
    });
  });
});
