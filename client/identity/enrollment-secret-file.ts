/**
 * The file behind `[hpcs-server] enrollment-secret-file`: where a client keeps its one-time enrollment
 * secret between runs. Two forms are read:
 *
 *   - the bare secret, one line (what `hpcs-server enroll` prints after "enrollment secret:");
 *   - the JSON object `hpcs-server enroll --json` prints, {clientName, enrollmentSecret, expiresAt},
 *     which also names the client, so `[hpcs-server] client-name` can stay unset.
 *
 * Each successful registration returns the next one-time secret; writeNextEnrollmentSecret() replaces
 * the file with it, in the same form, atomically (a 0600 temp file in the same directory, then
 * rename), so a crash leaves either the old file or the new one, never a torn or world-readable one.
 * Nothing here logs, and no error message contains the file's content.
 */

import { randomBytes } from "node:crypto";
import { open, readFile, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { InvalidNameError, validateName } from "../../lib/names.js";

export interface EnrollmentSecretFile {
  path: string;
  secret: string;
  /** The client name the JSON form carries. */
  clientName?: string;
  format: "plain" | "json";
}

export class EnrollmentSecretFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "EnrollmentSecretFileError";
  }
}

// The server's secrets are 43 base64url characters; the bound only keeps junk out of a request.
const SECRET = /^[A-Za-z0-9_-]{16,256}$/;
const MAX_FILE_BYTES = 64 * 1024;

export async function readEnrollmentSecretFile(path: string): Promise<EnrollmentSecretFile> {
  const what = `[hpcs-server] enrollment-secret-file ${path}`;
  let buf: Buffer;
  try {
    buf = await readFile(path);
  } catch (err) {
    throw new EnrollmentSecretFileError(
      `cannot read ${what}: ${(err as NodeJS.ErrnoException).code ?? "error"}; put the secret from 'hpcs-server enroll' there`,
    );
  }
  const notASecret = new EnrollmentSecretFileError(
    `${what} holds no enrollment secret; it must hold the secret 'hpcs-server enroll' printed (one line) or its --json output`,
  );
  if (buf.length > MAX_FILE_BYTES) throw notASecret;
  const text = buf.toString("utf8").trim();
  if (!text.startsWith("{")) {
    if (!SECRET.test(text)) throw notASecret;
    return { path, secret: text, format: "plain" };
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw notASecret;
  }
  const d = (doc ?? {}) as Record<string, unknown>;
  if (typeof d.enrollmentSecret !== "string" || !SECRET.test(d.enrollmentSecret)) throw notASecret;
  const out: EnrollmentSecretFile = { path, secret: d.enrollmentSecret, format: "json" };
  if (d.clientName !== undefined) {
    try {
      out.clientName = validateName("client", String(d.clientName));
    } catch (err) {
      if (err instanceof InvalidNameError) throw new EnrollmentSecretFileError(`${what}: ${err.message}`);
      throw err;
    }
  }
  return out;
}

/** Replaces the file with the next secret, in `format`, atomically and with mode 0600. */
export async function writeNextEnrollmentSecret(
  path: string,
  format: "plain" | "json",
  next: { clientName: string; secret: string; expiresAt?: Date },
): Promise<void> {
  if (!SECRET.test(next.secret)) {
    throw new EnrollmentSecretFileError(
      "the hpcs server returned a next enrollment secret of an unknown form; ask the operator for a new one",
    );
  }
  const text =
    format === "json"
      ? `${JSON.stringify({
          clientName: next.clientName,
          enrollmentSecret: next.secret,
          ...(next.expiresAt ? { expiresAt: next.expiresAt.toISOString() } : {}),
        })}\n`
      : `${next.secret}\n`;
  // Same directory, so rename() is atomic; a random name, created exclusively, so nothing is clobbered.
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString("hex")}.tmp`);
  try {
    const fh = await open(tmp, "wx", 0o600);
    try {
      await fh.writeFile(text);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw new EnrollmentSecretFileError(
      `cannot write the next enrollment secret to [hpcs-server] enrollment-secret-file ${path}: ${(err as NodeJS.ErrnoException).code ?? "error"}; make it and its directory writable, then ask the operator for a new secret (the one just used is spent)`,
    );
  }
}
