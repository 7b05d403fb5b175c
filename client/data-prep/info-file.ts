/**
 * The info file (DESIGN.md "Formats"): YAML beside the artifact, written last and atomically, so an
 * info file never points at a partial artifact. It carries the original's keys (path_at_rest,
 * secret_path, access_role, checksum, spiffeID) — job-prep and the job runtime read those — plus the
 * new ones. It holds no secret: only where the secret is and which role may read it.
 */

import { parse, stringify } from "yaml";

export const INFO_VERSION = 1;
export const CIPHER = "openpgp-seipd1-aes256";

export interface ArtifactInfo {
  version: number;
  kind: "data" | "container";
  /**
   * What decrypting yields: a tar of the dataset directory (untar it), a single file, or a SIF
   * container image.
   */
  payload: "tar" | "file" | "sif";
  /** Data: the dataset's own name (directory or file), where the job puts it: /sd-container/encrypted/<name>. */
  payload_name?: string;
  /** Absolute remote path of the artifact. */
  path_at_rest: string;
  /** kv v2 data path of the artifact's secret, e.g. kv/data/hpcs/<client>/<secret>. */
  secret_path: string;
  /** Vault jwt role a granted job logs in with. */
  access_role: string;
  /** "sha256:<hex>" of the ciphertext, as shipped. */
  checksum: string;
  /** The SPIFFE ID a granted job fetches its JWT-SVID for. */
  spiffeID: string;
  cipher: string;
  /** Hex sha256 of the ciphertext. */
  sha256: string;
  /** Ciphertext bytes. */
  size: number;
  /** ISO 8601. */
  created: string;
  trust_domain: string;
  vault_url: string;
  /** What the grant covers; informational, the server holds the truth. */
  grant: { nodes: string[]; users: string[]; groups: string[]; expires?: string };
}

export function infoFileName(artifactName: string): string {
  return `${artifactName}.info.yaml`;
}

export function formatInfo(info: ArtifactInfo): string {
  return stringify(info, { lineWidth: 0 });
}

/** Parses and checks the keys job-prep relies on; one line naming the missing key. */
export function parseInfo(text: string, source: string): ArtifactInfo {
  const doc = parse(text) as Partial<ArtifactInfo> | null;
  if (!doc || typeof doc !== "object") throw new Error(`${source} is not an info file (not a YAML mapping)`);
  for (const key of ["path_at_rest", "secret_path", "access_role", "spiffeID", "sha256"] as const) {
    if (typeof doc[key] !== "string" || doc[key] === "") {
      throw new Error(`${source} has no ${key}: re-run data-prep/container-prep to write a new one`);
    }
  }
  if (doc.version !== INFO_VERSION) {
    throw new Error(
      `${source} has info version ${String(doc.version)}; this hpcs reads version ${INFO_VERSION}`,
    );
  }
  return doc as ArtifactInfo;
}
