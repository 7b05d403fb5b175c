/**
 * OpenSSH known_hosts, read strictly: the server's host key must already be listed for exactly the
 * host name (and port) we dial. There is no "trust on first use" here — a data-prep run ships
 * ciphertext and reads info files whose checksums the job trusts, so a silently accepted key would
 * let an interceptor swap artifacts. Unknown host or mismatch refuses the connection with one line.
 */

import { createHmac, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";

export interface KnownHostEntry {
  /** 1-based line number in the file, for error messages. */
  line: number;
  marker: "" | "@revoked" | "@cert-authority";
  /** Host patterns as written (plain, `[host]:port`, wildcards, `!negation`) or one hashed `|1|salt|hash`. */
  hosts: string[];
  keyType: string;
  /** The decoded key blob: the SSH wire format ssh2 hands to `hostVerifier`. */
  key: Buffer;
}

export type HostKeyVerdict =
  | { ok: true; entry: KnownHostEntry }
  | { ok: false; reason: "unknown" | "mismatch" | "revoked"; message: string };

/** The name OpenSSH stores for a host: bare on port 22, `[host]:port` otherwise. */
export function knownHostsName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

/** Parses the file's text; malformed lines are skipped, as ssh(1) does, rather than failing the whole file. */
export function parseKnownHosts(text: string): KnownHostEntry[] {
  const entries: KnownHostEntry[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const raw = (lines[i] ?? "").trim();
    if (raw === "" || raw.startsWith("#")) continue;
    const fields = raw.split(/\s+/);
    let marker: KnownHostEntry["marker"] = "";
    if (fields[0] === "@revoked" || fields[0] === "@cert-authority") {
      marker = fields[0];
      fields.shift();
    } else if (fields[0]?.startsWith("@")) {
      continue; // an unknown marker: ignore the line, like ssh(1)
    }
    const [hostField, keyType, keyB64] = fields;
    if (!hostField || !keyType || !keyB64) continue;
    const key = Buffer.from(keyB64, "base64");
    // The blob starts with its own type name; a line whose two disagree is corrupt, never a match.
    if (blobKeyType(key) !== keyType) continue;
    entries.push({ line: i + 1, marker, hosts: hostField.split(","), keyType, key });
  }
  return entries;
}

/** The key type name at the start of an SSH public key blob (uint32 length + name), or undefined. */
export function blobKeyType(blob: Buffer): string | undefined {
  if (blob.length < 4) return undefined;
  const len = blob.readUInt32BE(0);
  if (len === 0 || len > 64 || 4 + len > blob.length) return undefined;
  return blob.subarray(4, 4 + len).toString("latin1");
}

/** Whether one host field (comma-separated patterns, or one hashed name) covers `name`. */
export function hostFieldMatches(patterns: string[], name: string): boolean {
  let matched = false;
  for (const pattern of patterns) {
    if (pattern.startsWith("|1|")) {
      if (hashedMatches(pattern, name)) matched = true;
      continue;
    }
    const negated = pattern.startsWith("!");
    const glob = negated ? pattern.slice(1) : pattern;
    if (globMatches(glob.toLowerCase(), name.toLowerCase())) {
      if (negated) return false; // a negated match wins over any positive one, as in ssh(1)
      matched = true;
    }
  }
  return matched;
}

/** `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`, the form `HashKnownHosts yes` writes. */
function hashedMatches(field: string, name: string): boolean {
  const parts = field.split("|");
  if (parts.length !== 4) return false;
  const salt = Buffer.from(parts[2] ?? "", "base64");
  const expected = Buffer.from(parts[3] ?? "", "base64");
  if (salt.length === 0 || expected.length !== 20) return false;
  const actual = createHmac("sha1", salt).update(name).digest();
  return timingSafeEqual(actual, expected);
}

/** OpenSSH patterns: `*` any run, `?` one character; everything else literal (including `[`, `]`, `:`). */
function globMatches(glob: string, name: string): boolean {
  const re = glob
    .replace(/[.+^${}()|[\]\\]/g, "\\$&")
    .replace(/\*/g, ".*")
    .replace(/\?/g, ".");
  return new RegExp(`^${re}$`).test(name);
}

/**
 * Decides whether `key` (the raw blob from ssh2) is the right key for host:port per `entries`.
 * `file` only names the file in messages. Host certificates (@cert-authority) are not supported:
 * such lines never make a plain key acceptable.
 */
export function verifyHostKey(
  entries: KnownHostEntry[],
  host: string,
  port: number,
  key: Buffer,
  file: string,
): HostKeyVerdict {
  const name = knownHostsName(host, port);
  const forHost = entries.filter((e) => hostFieldMatches(e.hosts, name));
  const revoked = entries.find((e) => e.marker === "@revoked" && e.key.equals(key));
  if (revoked) {
    return {
      ok: false,
      reason: "revoked",
      message: `host key for ${name} is marked @revoked in ${file} line ${revoked.line}: refusing to connect; ask the site for the host's current key`,
    };
  }
  const plain = forHost.filter((e) => e.marker === "");
  const match = plain.find((e) => e.key.equals(key));
  if (match) return { ok: true, entry: match };
  const offered = blobKeyType(key) ?? "unknown type";
  const first = plain[0];
  if (first) {
    const sameType = plain.find((e) => e.keyType === offered) ?? first;
    return {
      ok: false,
      reason: "mismatch",
      message: `host key for ${name} (${offered}) does not match ${file} line ${sameType.line}: someone may be intercepting, or the host was reinstalled; check and update the file`,
    };
  }
  return {
    ok: false,
    reason: "unknown",
    message: `host ${name} is not in ${file}: add its key after checking it with the site (e.g. ssh-keyscan -p ${port} ${host} >> ${file}, then compare fingerprints)`,
  };
}

/** Reads and parses a known_hosts file; a missing/unreadable file is one clear line. */
export function loadKnownHosts(path: string): KnownHostEntry[] {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new Error(
      `cannot read known_hosts file ${path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): set [supercomputer] known-hosts to an existing file`,
    );
  }
  return parseKnownHosts(text);
}
