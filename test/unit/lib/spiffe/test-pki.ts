/**
 * Throw-away X509-SVID material for unit tests, made with the openssl CLI (node:crypto cannot issue
 * certificates): one CA and as many leaves as asked, in the Workload API's DER forms.
 */

import { execFileSync } from "node:child_process";
import { createPrivateKey, X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { RawX509Svid } from "../../../../lib/spiffe/workload-proto.js";

export interface TestLeaf {
  certDer: Buffer;
  keyDer: Buffer;
  serial: string;
}

export class TestPki {
  private n = 0;
  private constructor(
    private readonly dir: string,
    readonly caDer: Buffer,
  ) {}

  static create(): TestPki {
    const dir = mkdtempSync(join(tmpdir(), "hpcs-pki-"));
    openssl(dir, [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      "ca.key",
      "-out",
      "ca.pem",
      "-subj",
      "/CN=test CA",
      "-days",
      "1",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign",
    ]);
    return new TestPki(dir, new X509Certificate(readFileSync(join(dir, "ca.pem"))).raw);
  }

  /** A leaf signed by the CA whose only SAN is `uri`. */
  leaf(uri: string): TestLeaf {
    const n = ++this.n;
    openssl(this.dir, [
      "req",
      "-x509",
      "-CA",
      "ca.pem",
      "-CAkey",
      "ca.key",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      `leaf${n}.key`,
      "-out",
      `leaf${n}.pem`,
      "-subj",
      `/CN=leaf ${n}`,
      "-days",
      "1",
      "-addext",
      `subjectAltName=${uri.startsWith("URI:") ? uri : `URI:${uri}`}`,
    ]);
    const cert = new X509Certificate(readFileSync(join(this.dir, `leaf${n}.pem`)));
    const keyDer = createPrivateKey(readFileSync(join(this.dir, `leaf${n}.key`))).export({
      format: "der",
      type: "pkcs8",
    });
    return { certDer: cert.raw, keyDer, serial: cert.serialNumber };
  }

  /** The X509SVID message for `leaf` named `spiffeId`, with this CA as its bundle. */
  svid(spiffeId: string, leaf: TestLeaf = this.leaf(spiffeId)): RawX509Svid {
    return {
      spiffe_id: spiffeId,
      x509_svid: leaf.certDer,
      x509_svid_key: leaf.keyDer,
      bundle: this.caDer,
      hint: "",
    };
  }

  dispose(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function openssl(cwd: string, args: string[]): void {
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
}
