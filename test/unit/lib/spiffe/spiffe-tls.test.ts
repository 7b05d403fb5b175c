import assert from "node:assert/strict";
import { createPrivateKey } from "node:crypto";
import { connect } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { SpiffeId } from "../../../../lib/spiffe-id.js";
import {
  authorizePeer,
  peerSpiffeId,
  SpiffeTls,
  SpiffeTlsError,
  spiffeIdOfLeaf,
} from "../../../../lib/spiffe/spiffe-tls.js";
import { WorkloadClient } from "../../../../lib/spiffe/workload-client.js";
import type { RawX509SvidResponse } from "../../../../lib/spiffe/workload-proto.js";
import { OpensslCerts, type TestCert } from "../../../support/openssl-certs.js";
import { FakeWorkloadApi, until } from "./fake-workload-api.js";

const TD = "example.org";
const SERVER_ID = `spiffe://${TD}/hpcs-server`;
const CLIENT_ID = `spiffe://${TD}/c/acme/workload`;

const refusal = (re: RegExp) => (err: unknown) => {
  assert.ok(err instanceof SpiffeTlsError, String(err));
  assert.match(err.message, re);
  return true;
};

describe("spiffe/spiffe-tls", () => {
  let certs: OpensslCerts;
  let ca: TestCert;
  before(() => {
    certs = OpensslCerts.create();
    ca = certs.make({ uris: [], ca: true });
  });
  after(() => certs.dispose());

  describe("spiffeIdOfLeaf / authorizePeer", () => {
    it("takes the one URI SAN of a leaf as its SPIFFE ID", () => {
      const leaf = certs.make({ uris: [CLIENT_ID], issuer: ca });
      assert.equal(spiffeIdOfLeaf(leaf.cert).toString(), CLIENT_ID);
      assert.equal(spiffeIdOfLeaf(leaf.cert.raw).toString(), CLIENT_ID);
      assert.equal(authorizePeer(leaf.cert.raw, { trustDomain: TD }).toString(), CLIENT_ID);
      const id = SpiffeId.parse(CLIENT_ID);
      assert.equal(authorizePeer(leaf.cert.raw, { trustDomain: TD, id }).toString(), CLIENT_ID);
    });

    it("refuses what is no X509-SVID leaf", () => {
      assert.throws(() => spiffeIdOfLeaf(Buffer.from("not DER")), refusal(/does not parse/));
      assert.throws(
        () => spiffeIdOfLeaf(certs.make({ uris: [CLIENT_ID], ca: true }).cert),
        refusal(/is a CA certificate/),
      );
      assert.throws(() => spiffeIdOfLeaf(certs.make({ uris: [] }).cert), refusal(/has 0 URI SANs/));
      assert.throws(
        () => spiffeIdOfLeaf(certs.make({ uris: [CLIENT_ID, SERVER_ID] }).cert),
        refusal(/has 2 URI SANs/),
      );
      assert.throws(
        () => spiffeIdOfLeaf(certs.make({ uris: ["https://example.org/x"] }).cert),
        refusal(/is not a SPIFFE ID/),
      );
      assert.throws(
        () => spiffeIdOfLeaf(certs.make({ uris: [`spiffe://${TD}`] }).cert),
        refusal(/without a path/),
      );
    });

    it("refuses another trust domain, and another ID when one is expected", () => {
      const other = certs.make({ uris: ["spiffe://other.org/c/acme/workload"] });
      assert.throws(() => authorizePeer(other.cert.raw, { trustDomain: TD }), refusal(/not of trust domain/));
      const leaf = certs.make({ uris: [CLIENT_ID] });
      assert.throws(
        () => authorizePeer(leaf.cert.raw, { trustDomain: TD, id: SpiffeId.parse(SERVER_ID) }),
        refusal(
          /is spiffe:\/\/example.org\/c\/acme\/workload, not the expected spiffe:\/\/example.org\/hpcs-server/,
        ),
      );
    });

    it("peerSpiffeId needs a verified peer certificate", () => {
      assert.throws(() => peerSpiffeId({ getAuthContext: () => ({}) }, TD), refusal(/no verified client/));
      assert.throws(() => peerSpiffeId({ getAuthContext: () => null }, TD), refusal(/no verified client/));
    });
  });

  // Both ends over real TLS on 127.0.0.1, each with its SVIDs from a fake Workload API.
  describe("SpiffeTls credentials", () => {
    const PING = "/test.Ping/Ping";
    const raw = (b: Buffer) => b;
    let serverApi: FakeWorkloadApi;
    let clientApi: FakeWorkloadApi;
    let serverWl: WorkloadClient;
    let clientWl: WorkloadClient;
    let serverTls: SpiffeTls | undefined;
    let clientTls: SpiffeTls | undefined;
    let server: grpc.Server;
    let port = 0;

    const message = (id: string, leaf: TestCert): RawX509SvidResponse => ({
      svids: [
        {
          spiffe_id: id,
          x509_svid: leaf.cert.raw,
          x509_svid_key: createPrivateKey(leaf.keyPem).export({ format: "der", type: "pkcs8" }),
          bundle: ca.cert.raw,
          hint: "",
        },
      ],
      crl: [],
      federated_bundles: {},
    });

    /** The serial number the server presents to a new connection. */
    const serverSerial = (): Promise<string> =>
      new Promise((resolve, reject) => {
        const leaf = clientTls?.current();
        const s = connect({
          host: "127.0.0.1",
          port,
          ca: ca.certPem,
          cert: leaf?.chainPem,
          key: leaf?.keyPem,
          checkServerIdentity: () => undefined,
        });
        s.once("secureConnect", () => {
          resolve(s.getPeerCertificate().serialNumber);
          s.destroy();
        });
        s.once("error", reject);
      });

    const ping = (creds: grpc.ChannelCredentials): Promise<string> => {
      const c = new grpc.Client(`127.0.0.1:${port}`, creds, {
        "grpc.ssl_target_name_override": TD,
      });
      return new Promise<string>((resolve, reject) => {
        c.makeUnaryRequest(PING, raw, raw, Buffer.alloc(0), (err, res) =>
          err ? reject(err) : resolve(String(res)),
        );
      }).finally(() => c.close());
    };

    before(async () => {
      serverApi = await FakeWorkloadApi.start();
      clientApi = await FakeWorkloadApi.start();
      serverWl = new WorkloadClient(serverApi.socket);
      clientWl = new WorkloadClient(clientApi.socket);
      const starting = SpiffeTls.start(serverWl, { timeoutMs: 5000 });
      (await serverApi.x509Stream(0)).write(
        message(SERVER_ID, certs.make({ uris: [SERVER_ID], issuer: ca })),
      );
      serverTls = await starting;
      const clientStarting = SpiffeTls.start(clientWl, {
        timeoutMs: 5000,
        spiffeId: SpiffeId.parse(CLIENT_ID),
      });
      (await clientApi.x509Stream(0)).write(
        message(CLIENT_ID, certs.make({ uris: [CLIENT_ID], issuer: ca })),
      );
      clientTls = await clientStarting;

      server = new grpc.Server();
      server.addService(
        {
          Ping: {
            path: PING,
            requestStream: false,
            responseStream: false,
            requestSerialize: raw,
            requestDeserialize: raw,
            responseSerialize: raw,
            responseDeserialize: raw,
          },
        },
        {
          Ping: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
            cb(null, Buffer.from(peerSpiffeId(call, TD).toString())),
        },
      );
      port = await new Promise<number>((ok, fail) =>
        server.bindAsync("127.0.0.1:0", serverTls!.serverCredentials(), (e, p) => (e ? fail(e) : ok(p))),
      );
    });

    after(async () => {
      server?.forceShutdown();
      serverTls?.close();
      clientTls?.close();
      serverWl?.close();
      clientWl?.close();
      await serverApi?.stop();
      await clientApi?.stop();
    });

    it("authenticates both ends by their SVIDs", async () => {
      const creds = clientTls!.channelCredentials({ trustDomain: TD, id: SpiffeId.parse(SERVER_ID) });
      assert.equal(await ping(creds), CLIENT_ID);
    });

    it("fails the connection to a server with another SPIFFE ID than expected", async () => {
      const creds = clientTls!.channelCredentials({
        trustDomain: TD,
        id: SpiffeId.parse(`spiffe://${TD}/someone-else`),
      });
      await assert.rejects(ping(creds), (e: grpc.ServiceError) => {
        assert.equal(e.code, grpc.status.UNAVAILABLE);
        assert.match(e.details, /not the expected spiffe:\/\/example.org\/someone-else/);
        return true;
      });
    });

    it("refuses a client without a certificate at the handshake", async () => {
      const creds = grpc.credentials.createSsl(Buffer.from(ca.certPem), null, null, {
        checkServerIdentity: () => undefined,
      });
      await assert.rejects(ping(creds), (e: grpc.ServiceError) => {
        assert.equal(e.code, grpc.status.UNAVAILABLE);
        assert.match(e.details, /certificate required/);
        return true;
      });
    });

    it("presents a rotated SVID to new connections", async () => {
      const before = await serverSerial();
      const next = certs.make({ uris: [SERVER_ID], issuer: ca });
      (await serverApi.x509Stream(0)).write(message(SERVER_ID, next));
      await until(() => serverTls?.current().chain[0]?.serialNumber === next.cert.serialNumber);
      const after = await serverSerial();
      assert.notEqual(after, before);
      assert.equal(after, next.cert.serialNumber);
      const creds = clientTls!.channelCredentials({ trustDomain: TD, id: SpiffeId.parse(SERVER_ID) });
      assert.equal(await ping(creds), CLIENT_ID);
    });
  });
});
