import assert from "node:assert/strict";
import { parseCertificates, parseX509Svid, splitDer } from "../../../../lib/spiffe/x509-svid.js";
import { TestPki } from "./test-pki.js";

const ID = "spiffe://example.org/w";

describe("spiffe/x509-svid", () => {
  let pki: TestPki;
  before(() => {
    pki = TestPki.create();
  });
  after(() => pki.dispose());

  it("parses a chain, key and bundle whose leaf carries the SVID's ID", () => {
    const leaf = pki.leaf(ID);
    const svid = parseX509Svid({ ...pki.svid(ID, leaf), hint: "internal" });
    assert.equal(svid.spiffeId.toString(), ID);
    assert.equal(svid.chain.length, 1);
    assert.ok(svid.chain[0]?.checkIssued(svid.bundle[0] as NonNullable<(typeof svid.bundle)[0]>));
    assert.equal(svid.hint, "internal");
    assert.ok(svid.expiresAt.getTime() > Date.now());
    assert.equal(svid.bundlePem, svid.bundle[0]?.toString());
  });

  it("splits concatenated DER certificates", () => {
    const a = pki.leaf(ID);
    const certs = parseCertificates(Buffer.concat([a.certDer, pki.caDer]), "chain");
    assert.deepEqual(
      certs.map((c) => c.serialNumber),
      [a.serial, parseCertificates(pki.caDer, "ca")[0]?.serialNumber],
    );
    assert.deepEqual(splitDer(Buffer.from([0x30, 0x01, 0x00, 0x30, 0x00])), [
      Buffer.from([0x30, 0x01, 0x00]),
      Buffer.from([0x30, 0x00]),
    ]);
    assert.throws(() => splitDer(Buffer.from([0x30, 0x05, 0x00])), /runs past the end/);
    assert.throws(() => splitDer(Buffer.from([0x04, 0x00])), /does not start a DER SEQUENCE/);
    assert.throws(() => parseCertificates(Buffer.alloc(0), "bundle"), /bundle: empty/);
  });

  it("refuses a leaf for another ID, a foreign key, or a bad ID", () => {
    assert.throws(
      () => parseX509Svid(pki.svid(ID, pki.leaf("spiffe://example.org/x"))),
      /X509-SVID for spiffe:\/\/example.org\/w: the leaf certificate's URI SANs are \[spiffe:\/\/example.org\/x\]/,
    );
    const a = pki.leaf(ID);
    const b = pki.leaf(ID);
    assert.throws(
      () => parseX509Svid({ ...pki.svid(ID, a), x509_svid_key: b.keyDer }),
      /private key does not match the leaf certificate/,
    );
    assert.throws(
      () => parseX509Svid({ ...pki.svid(ID, a), x509_svid_key: Buffer.from("x") }),
      /not DER PKCS#8/,
    );
    assert.throws(() => parseX509Svid(pki.svid("spiffe://Example.org/w", a)), /invalid SPIFFE ID/);
  });
});
