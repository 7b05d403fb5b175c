/**
 * Throw-away certificates made with the openssl CLI (node:crypto cannot issue them), for tests that
 * need certificates SPIRE would never issue: self-signed SVID look-alikes, other CAs, CA leaves,
 * several URI SANs.
 */

import { execFileSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface TestCert {
  certPem: string;
  keyPem: string;
  cert: X509Certificate;
}

export interface CertSpec {
  /** URI SANs (none when empty). */
  uris: string[];
  /** basicConstraints CA:TRUE (a CA certificate); default false, a leaf. */
  ca?: boolean;
  /** Signed by this certificate; default self-signed. */
  issuer?: TestCert;
}

/** A directory of openssl material; dispose() removes it. */
export class OpensslCerts {
  private n = 0;
  private constructor(private readonly dir: string) {}

  static create(): OpensslCerts {
    return new OpensslCerts(mkdtempSync(join(tmpdir(), "hpcs-certs-")));
  }

  make(spec: CertSpec): TestCert {
    const n = ++this.n;
    const [key, crt] = [`c${n}.key`, `c${n}.pem`];
    const ext = spec.ca
      ? ["basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign"]
      : [
          "basicConstraints=critical,CA:FALSE",
          "keyUsage=critical,digitalSignature,keyEncipherment,keyAgreement",
          "extendedKeyUsage=serverAuth,clientAuth",
        ];
    if (spec.uris.length > 0) ext.push(`subjectAltName=${spec.uris.map((u) => `URI:${u}`).join(",")}`);
    const signer: string[] = [];
    if (spec.issuer) {
      const [ik, ic] = [`i${n}.key`, `i${n}.pem`];
      writeFileSync(join(this.dir, ik), spec.issuer.keyPem, { mode: 0o600 });
      writeFileSync(join(this.dir, ic), spec.issuer.certPem);
      signer.push("-CA", ic, "-CAkey", ik);
    }
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        ...signer,
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key,
        "-out",
        crt,
        "-subj",
        `/CN=test ${n}`,
        "-days",
        "1",
        ...ext.flatMap((e) => ["-addext", e]),
      ],
      { cwd: this.dir, stdio: ["ignore", "ignore", "pipe"] },
    );
    const certPem = readFileSync(join(this.dir, crt), "utf8");
    return { certPem, keyPem: readFileSync(join(this.dir, key), "utf8"), cert: new X509Certificate(certPem) };
  }

  dispose(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
