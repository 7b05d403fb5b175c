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
listen = 0.0.0.0:10080
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
  assert.ok(!e.message.includes("\n"));
  return true;
};

describe("lib/config gRPC mTLS keys", () => {
  describe("server [hpcs-server] grpc-mtls-listen", () => {
    const server = (extra: string) => parseServerConfig(`${SERVER}${extra}`, "/etc/s.ini").hpcsServer;

    it("is off when unset or empty", () => {
      assert.equal(server("").grpcMtlsListen, undefined);
      assert.equal(server("grpc-mtls-listen =\n").grpcMtlsListen, undefined);
    });

    it("reads host:port, IPv6 in brackets", () => {
      assert.deepEqual(server("grpc-mtls-listen = 0.0.0.0:10082\n").grpcMtlsListen, {
        host: "0.0.0.0",
        port: 10082,
      });
      assert.deepEqual(server("grpc-mtls-listen = [::1]:10082\n").grpcMtlsListen, {
        host: "::1",
        port: 10082,
      });
    });

    it("refuses a bad address and one the other listeners use", () => {
      assert.throws(
        () => server("grpc-mtls-listen = 10082\n"),
        refused(/grpc-mtls-listen: "10082" is not host:port; set it to e.g. 0.0.0.0:10082/),
      );
      assert.throws(
        () => server("grpc-mtls-listen = 0.0.0.0:10080\n"),
        refused(/same address as listen or grpc-listen/),
      );
      assert.throws(
        () => server("grpc-mtls-listen = 0.0.0.0:10081\n"),
        refused(/same address as listen or grpc-listen/),
      );
    });
  });

  describe("client [hpcs-server] grpc-mtls, grpc-mtls-server-id", () => {
    const client = (extra: string) => parseClientConfig(`${CLIENT}${extra}`, "/home/a/c.ini").hpcsServer;

    it("is off by default (JSON/HTTP)", () => {
      assert.equal(client("").grpcMtls, undefined);
    });

    it("reads the address; the server ID defaults to spiffe://<td>/hpcs-server", () => {
      assert.deepEqual(client("grpc-mtls = hpcs:10082\n").grpcMtls, {
        host: "hpcs",
        port: 10082,
        serverId: "spiffe://hpcs.test/hpcs-server",
      });
      assert.deepEqual(
        client("grpc-mtls = [::1]:10082\ngrpc-mtls-server-id = spiffe://hpcs.test/srv/a\n").grpcMtls,
        { host: "::1", port: 10082, serverId: "spiffe://hpcs.test/srv/a" },
      );
    });

    it("refuses a bad address, a server ID of another trust domain or none, and a lone server ID", () => {
      assert.throws(() => client("grpc-mtls = hpcs\n"), refused(/grpc-mtls: "hpcs" is not host:port/));
      assert.throws(
        () => client("grpc-mtls = hpcs:10082\ngrpc-mtls-server-id = spiffe://other.org/hpcs-server\n"),
        refused(/grpc-mtls-server-id: .* is not a workload of trust domain hpcs.test/),
      );
      assert.throws(
        () => client("grpc-mtls = hpcs:10082\ngrpc-mtls-server-id = spiffe://hpcs.test\n"),
        refused(/is not a workload of trust domain/),
      );
      assert.throws(
        () => client("grpc-mtls = hpcs:10082\ngrpc-mtls-server-id = hpcs-server\n"),
        refused(/grpc-mtls-server-id: invalid SPIFFE ID/),
      );
      assert.throws(
        () => client("grpc-mtls-server-id = spiffe://hpcs.test/hpcs-server\n"),
        refused(/set without grpc-mtls/),
      );
    });
  });
});
