import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { type WorkloadApiError, WorkloadClient } from "../../../../lib/spiffe/workload-client.js";
import { X509Source } from "../../../../lib/spiffe/x509-source.js";
import type { X509Svid } from "../../../../lib/spiffe/x509-svid.js";
import { FakeWorkloadApi, statusError, until } from "./fake-workload-api.js";
import { TestPki } from "./test-pki.js";

const ID = "spiffe://example.org/w";

describe("spiffe/x509-source", () => {
  let pki: TestPki;
  let fake: FakeWorkloadApi;
  let client: WorkloadClient;
  let source: X509Source | undefined;
  before(() => {
    pki = TestPki.create();
  });
  after(() => pki.dispose());
  beforeEach(async () => {
    fake = await FakeWorkloadApi.start();
    client = new WorkloadClient(fake.socket);
  });
  afterEach(async () => {
    source?.close();
    source = undefined;
    client.close();
    await fake.stop();
  });

  const message = (...svids: ReturnType<TestPki["svid"]>[]) => ({ svids, crl: [], federated_bundles: {} });

  it("serves the first SVID, then the rotated one", async () => {
    const seen: X509Svid[] = [];
    source = new X509Source(client, { onUpdate: (s) => seen.push(s) });
    const stream = await fake.x509Stream(0);
    const first = pki.leaf(ID);
    const second = pki.leaf(ID);
    stream.write(message(pki.svid(ID, first)));
    const ready = await source.waitReady(5000);
    assert.equal(ready.chain[0]?.serialNumber, first.serial);
    assert.equal(source.current().spiffeId.toString(), ID);
    assert.match(source.current().chainPem, /^-----BEGIN CERTIFICATE-----\n/);
    assert.match(source.current().keyPem, /^-----BEGIN PRIVATE KEY-----\n/);
    assert.ok(source.current().bundle[0]?.raw.equals(pki.caDer));
    stream.write(message(pki.svid(ID, second)));
    await until(() => source?.current().chain[0]?.serialNumber === second.serial);
    assert.equal(seen.length, 2);
  });

  it("reopens a broken stream with backoff and keeps the last SVID meanwhile", async () => {
    const errors: WorkloadApiError[] = [];
    source = new X509Source(client, {
      initialBackoffMs: 20,
      maxBackoffMs: 100,
      onError: (e) => errors.push(e),
    });
    const s0 = await fake.x509Stream(0);
    const first = pki.leaf(ID);
    s0.write(message(pki.svid(ID, first)));
    await source.waitReady(5000);
    s0.emit("error", statusError({ code: grpc.status.UNAVAILABLE, details: "agent restarting" }));
    const s1 = await fake.x509Stream(1);
    assert.equal(errors.length, 1);
    assert.equal(source.current().chain[0]?.serialNumber, first.serial, "old SVID kept while reconnecting");
    // A stream the agent simply ends is broken too.
    s1.end();
    const s2 = await fake.x509Stream(2);
    const second = pki.leaf(ID);
    s2.write(message(pki.svid(ID, second)));
    await until(() => source?.current().chain[0]?.serialNumber === second.serial);
    assert.equal(errors.length, 2);
  });

  it("keeps retrying while the agent issues no identity, and says so on timeout", async () => {
    source = new X509Source(client, { initialBackoffMs: 10, maxBackoffMs: 40 });
    for (let i = 0; i < 3; i++) {
      (await fake.x509Stream(i)).emit(
        "error",
        statusError({ code: grpc.status.PERMISSION_DENIED, details: "no identity issued" }),
      );
    }
    await assert.rejects(
      source.waitReady(100),
      /within 100 ms: .*no identity issued \(is a registration entry/,
    );
    assert.throws(() => source?.current(), /no X509-SVID yet: .*no identity issued/);
    // The entry shows up: the next attempt succeeds.
    const s3 = await fake.x509Stream(3);
    s3.write(message(pki.svid(ID)));
    assert.equal((await source.waitReady(5000)).spiffeId.toString(), ID);
  });

  it("gives up on InvalidArgument, which retrying cannot fix", async () => {
    source = new X509Source(client, { initialBackoffMs: 10 });
    (await fake.x509Stream(0)).emit(
      "error",
      statusError({ code: grpc.status.INVALID_ARGUMENT, details: "security header missing from request" }),
    );
    await assert.rejects(source.waitReady(5000), /FetchX509SVID refused: security header missing/);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(fake.x509Streams.length, 1);
  });

  it("picks among several SVIDs", async () => {
    const other = "spiffe://example.org/other";
    source = new X509Source(client, { pick: (svids) => svids.find((s) => s.spiffeId.toString() === other) });
    (await fake.x509Stream(0)).write(message(pki.svid(ID), pki.svid(other)));
    assert.equal((await source.waitReady(5000)).spiffeId.toString(), other);
  });

  it("fails at once over a closed client", async () => {
    client.close();
    source = new X509Source(client);
    await assert.rejects(source.waitReady(5000), /the client is closed/);
  });

  it("close() ends the stream and fails waiters", async () => {
    source = new X509Source(client);
    const s0 = await fake.x509Stream(0);
    const waiting = source.waitReady(5000);
    source.close();
    await assert.rejects(waiting, /closed before an X509-SVID arrived/);
    assert.throws(() => source?.current(), /closed/);
    await until(() => s0.cancelled);
  });
});
