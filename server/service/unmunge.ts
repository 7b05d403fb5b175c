/**
 * Decoding a MUNGE credential with the site's `unmunge` (MUNGE's own tool, talking to the local
 * munged, which holds the realm's key). The credential goes to unmunge on stdin, never in argv; the
 * program runs from an argv array with a fixed environment, no shell.
 *
 * What comes back is what munged vouches for — it sets ENCODE_HOST (the encoding munged's origin
 * address), ENCODE_TIME, UID and GID itself (UID/GID from the peer credentials of the local socket) —
 * plus the payload the creator chose, which is authenticated but says whatever its creator wanted.
 *
 * unmunge's exit code is MUNGE's error code (munge.h); with `--numeric` it prints `KEY: value` lines,
 * a blank line and the payload. For some refusals (expired, replayed) it still prints the metadata:
 * the status decides, never the mere presence of metadata.
 */

import { spawn } from "node:child_process";
import { isIP } from "node:net";

/** What munged vouched for in a credential that decoded with status Success. */
export interface MungeCredentialInfo {
  /** The encoding munged's origin address, e.g. "10.1.2.3" (IPv4 or IPv6, numeric). */
  encodeHost: string;
  /** Seconds since the epoch, by the encoding host's clock. */
  encodeTime: number;
  /** The credential's own time-to-live in seconds (munge -t), enforced by munged too. */
  ttl: number;
  uid: number;
  gid: number;
  payload: Buffer;
}

export type UnmungeResult =
  | { status: 0; info: MungeCredentialInfo }
  /** A refusal by MUNGE: status is MUNGE's error code, reason its one-line text. */
  | { status: number; reason: string };

export interface CredentialDecoder {
  /** Resolves with MUNGE's verdict; rejects (UnmungeError) only when unmunge could not give one. */
  decode(credential: string): Promise<UnmungeResult>;
}

/** unmunge did not run, timed out, or printed something we cannot read. */
export class UnmungeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UnmungeError";
  }
}

/** MUNGE's error codes (munge.h, munge_err_t) that say "the local MUNGE service could not answer". */
export const MUNGE_SERVICE_ERRORS: ReadonlySet<number> = new Set([
  1, // EMUNGE_SNAFU
  4, // EMUNGE_OVERFLOW
  5, // EMUNGE_NO_MEMORY
  6, // EMUNGE_SOCKET
  7, // EMUNGE_TIMEOUT
]);

export const MUNGE_CRED_EXPIRED = 15;
export const MUNGE_CRED_REPLAYED = 17;

/** munge_strerror's texts, for when unmunge prints none (it is silent about a replay, for one). */
const MUNGE_ERRORS: Record<number, string> = {
  1: "Internal error",
  2: "Invalid argument",
  3: "Exceeded maximum message length",
  4: "Buffer overflow",
  5: "Out of memory",
  6: "Socket communication error",
  7: "Socket communication timeout",
  8: "Invalid credential format",
  9: "Invalid credential version",
  10: "Invalid cipher type",
  11: "Invalid MAC type",
  12: "Invalid compression type",
  13: "Unrecognized security realm",
  14: "Invalid credential",
  15: "Expired credential",
  16: "Rewound credential",
  17: "Replayed credential",
  18: "Unauthorized credential decode",
};

const KEYS = ["STATUS", "ENCODE_HOST", "ENCODE_TIME", "TTL", "UID", "GID", "LENGTH"] as const;
const MAX_OUTPUT = 64 * 1024;

export interface UnmungeOptions {
  /** The munged socket of the site's realm (`[hpcs-server] munge-socket`). */
  socket: string;
  /** The unmunge program (`[hpcs-server] unmunge-bin`), default "unmunge". */
  unmungeBin?: string;
  timeoutMs?: number;
}

export class Unmunge implements CredentialDecoder {
  constructor(private readonly opts: UnmungeOptions) {}

  decode(credential: string): Promise<UnmungeResult> {
    const bin = this.opts.unmungeBin ?? "unmunge";
    const args = ["--socket", this.opts.socket, "--numeric", "--keys", KEYS.join(",")];
    return new Promise((resolve, reject) => {
      const child = spawn(bin, args, {
        stdio: ["pipe", "pipe", "pipe"],
        env: { PATH: "/usr/bin:/bin:/usr/sbin:/sbin", LC_ALL: "C" },
        timeout: this.opts.timeoutMs ?? 10_000,
      });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let size = 0;
      const keep = (into: Buffer[]) => (b: Buffer) => {
        size += b.length;
        if (size > MAX_OUTPUT) child.kill("SIGKILL");
        else into.push(b);
      };
      child.stdout.on("data", keep(out));
      child.stderr.on("data", keep(err));
      child.on("error", (e: NodeJS.ErrnoException) =>
        reject(
          new UnmungeError(
            e.code === "ENOENT"
              ? `unmunge-bin ${JSON.stringify(bin)} not found: install munge on the hpcs server or set [hpcs-server] unmunge-bin`
              : `unmunge failed to start: ${e.message}`,
          ),
        ),
      );
      child.stdin.on("error", () => undefined);
      child.on("close", (code, signal) => {
        if (signal !== null || code === null) {
          reject(new UnmungeError(`unmunge did not finish (${signal ?? "no exit code"}): check munged`));
          return;
        }
        try {
          resolve(parseUnmunge(code, Buffer.concat(out), Buffer.concat(err).toString("utf8")));
        } catch (e) {
          reject(e);
        }
      });
      child.stdin.end(credential);
    });
  }
}

/** unmunge's exit code, stdout and stderr → MUNGE's verdict. Exported for unit tests. */
export function parseUnmunge(exitCode: number, stdout: Buffer, stderr: string): UnmungeResult {
  if (exitCode !== 0) {
    // "unmunge: Error: Expired credential" → "Expired credential"; the credential is never echoed.
    const line = stderr.split("\n").find((l) => l.trim() !== "") ?? "";
    const said = line
      .replace(/^unmunge:\s*(Error:\s*)?/, "")
      .replace(/[^\x20-\x7e]/g, "?")
      .trim();
    return { status: exitCode, reason: (said || mungeError(exitCode)).slice(0, 200) };
  }
  const sep = stdout.indexOf("\n\n");
  if (sep < 0) throw new UnmungeError("unmunge printed no metadata: check unmunge-bin");
  const meta = new Map<string, string>();
  for (const line of stdout.subarray(0, sep).toString("utf8").split("\n")) {
    const m = /^([A-Z_]+):\s*(.*)$/.exec(line);
    if (m?.[1] !== undefined && m[2] !== undefined) meta.set(m[1], m[2].trim());
  }
  const num = (key: (typeof KEYS)[number]): number => {
    const v = meta.get(key);
    if (v === undefined || !/^\d{1,15}$/.test(v)) {
      throw new UnmungeError(`unmunge printed no numeric ${key}: check unmunge-bin (munge >= 0.5.10)`);
    }
    return Number(v);
  };
  const status = num("STATUS");
  if (status !== 0) return { status, reason: mungeError(status) };
  const encodeHost = meta.get("ENCODE_HOST") ?? "";
  if (isIP(encodeHost) === 0) throw new UnmungeError("unmunge printed no numeric ENCODE_HOST");
  const payload = stdout.subarray(sep + 2);
  if (payload.length !== num("LENGTH")) {
    throw new UnmungeError("unmunge's payload does not match its LENGTH");
  }
  return {
    status: 0,
    info: {
      encodeHost,
      encodeTime: num("ENCODE_TIME"),
      ttl: num("TTL"),
      uid: num("UID"),
      gid: num("GID"),
      payload: Buffer.from(payload),
    },
  };
}

function mungeError(code: number): string {
  return MUNGE_ERRORS[code] ?? `MUNGE error ${code}`;
}
