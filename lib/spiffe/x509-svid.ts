/**
 * An X509-SVID as the Workload API delivers it (DER chain, PKCS#8 key, DER bundle), parsed and checked
 * against the X509-SVID profile: the leaf carries exactly one URI SAN, the SPIFFE ID the agent named,
 * and the key is the leaf's.
 */

import { createPrivateKey, type KeyObject, X509Certificate } from "node:crypto";
import { SpiffeId } from "../spiffe-id.js";
import type { RawX509Svid } from "./workload-proto.js";

export interface X509Svid {
  spiffeId: SpiffeId;
  /** Leaf first, then any intermediates. */
  chain: X509Certificate[];
  chainPem: string;
  key: KeyObject;
  /** PKCS#8. */
  keyPem: string;
  /** CA certificates of the SVID's own trust domain. */
  bundle: X509Certificate[];
  bundlePem: string;
  /** The operator's hint for choosing among several SVIDs; "" when none. */
  hint: string;
  expiresAt: Date;
}

export function parseX509Svid(raw: RawX509Svid): X509Svid {
  const spiffeId = SpiffeId.parse(raw.spiffe_id);
  const what = `X509-SVID for ${spiffeId}`;
  const chain = parseCertificates(raw.x509_svid, `${what}: certificate chain`);
  const bundle = parseCertificates(raw.bundle, `${what}: bundle`);
  const leaf = chain[0] as X509Certificate;
  const uris = uriSans(leaf);
  if (uris.length !== 1 || uris[0] !== spiffeId.toString()) {
    throw new Error(`${what}: the leaf certificate's URI SANs are [${uris.join(", ")}], not that one ID`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: raw.x509_svid_key, format: "der", type: "pkcs8" });
  } catch (err) {
    throw new Error(`${what}: private key is not DER PKCS#8: ${(err as Error).message}`);
  }
  if (!leaf.checkPrivateKey(key)) throw new Error(`${what}: private key does not match the leaf certificate`);
  return {
    spiffeId,
    chain,
    chainPem: chain.map((c) => c.toString()).join(""),
    key,
    keyPem: key.export({ format: "pem", type: "pkcs8" }).toString(),
    bundle,
    bundlePem: bundle.map((c) => c.toString()).join(""),
    hint: raw.hint,
    expiresAt: new Date(leaf.validTo),
  };
}

/** Certificates from concatenated DER, as the Workload API sends chains and bundles; at least one. */
export function parseCertificates(der: Buffer, what: string): X509Certificate[] {
  let parts: Buffer[];
  try {
    parts = splitDer(der);
  } catch (err) {
    throw new Error(`${what}: ${(err as Error).message}`);
  }
  if (parts.length === 0) throw new Error(`${what}: empty`);
  return parts.map((p, i) => {
    try {
      return new X509Certificate(p);
    } catch (err) {
      throw new Error(`${what}: certificate #${i + 1} does not parse: ${(err as Error).message}`);
    }
  });
}

/**
 * Splits concatenated DER SEQUENCEs by their length headers. X509Certificate reads only the first
 * certificate of such a buffer, so the rest would be silently lost without this.
 */
export function splitDer(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  while (at < buf.length) {
    if (buf[at] !== 0x30) throw new Error(`byte ${at} does not start a DER SEQUENCE`);
    const first = buf[at + 1];
    if (first === undefined) throw new Error(`truncated DER header at byte ${at}`);
    let len = first;
    let header = 2;
    if (first & 0x80) {
      const n = first & 0x7f;
      // Indefinite length (n = 0) is not DER; more than 4 length bytes would not fit in memory anyway.
      if (n === 0 || n > 4 || at + 2 + n > buf.length) throw new Error(`bad DER length at byte ${at}`);
      len = buf.readUIntBE(at + 2, n);
      header = 2 + n;
    }
    const end = at + header + len;
    if (end > buf.length) throw new Error(`DER element at byte ${at} runs past the end`);
    out.push(buf.subarray(at, end));
    at = end;
  }
  return out;
}

/** The URI SANs of a certificate, in order. */
export function uriSans(cert: X509Certificate): string[] {
  // Node lists SANs as `URI:x, DNS:y`; it quotes values containing ", " so a split on it is safe.
  return (cert.subjectAltName ?? "")
    .split(", ")
    .filter((s) => s.startsWith("URI:"))
    .map((s) => s.slice(4));
}
