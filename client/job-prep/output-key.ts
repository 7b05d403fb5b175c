/**
 * The job's output key pair: the job encrypts its results to the public key; the private key never
 * leaves the user's machine. v4 ECC keys on curve25519Legacy (EdDSA + ECDH), because GnuPG 2.2 on a
 * compute node must import the public key (openpgp.js v6's `curve25519` makes RFC 9580 keys GnuPG 2.2
 * skips; DESIGN.md "Formats"). The private key is unprotected: it is written 0600 locally and lives
 * only as long as the user keeps the result's key.
 */

import * as openpgp from "openpgp";

export interface OutputKeyPair {
  publicKey: string;
  privateKey: string;
  fingerprint: string;
}

export async function generateOutputKey(jobName: string): Promise<OutputKeyPair> {
  const { privateKey, publicKey } = await openpgp.generateKey({
    type: "ecc",
    curve: "curve25519Legacy",
    userIDs: [{ name: `hpcs job ${jobName}` }],
    format: "armored",
  });
  const key = await openpgp.readKey({ armoredKey: publicKey });
  return { publicKey, privateKey, fingerprint: key.getFingerprint() };
}
