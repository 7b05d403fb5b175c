/**
 * `node-attestation = munge` (the default): a job proves "I run on node N as user U" with a MUNGE
 * credential — Slurm's own authentication — that it creates on the node:
 *
 *   munge -s '{"aud":"hpcs-node-token","node":"<hostname -s>","user":"<id -un>","nonce":"<random>"}'
 *
 * and sends with its request (`mungeCredential`). The server runs in the site's MUNGE realm (same
 * key) and accepts only when every check holds, in this order:
 *
 *   1. MUNGE says Success (`unmunge --socket <munge-socket>`): key, MAC, MUNGE's own TTL, not
 *      replayed to this munged.                                                → unauthenticated
 *   2. Fresh: ENCODE_TIME at most munge-max-age ago and not from the future.  → unauthenticated
 *   3. The payload is ours (aud), names exactly the requested node and user and carries a nonce.
 *                                       malformed → unauthenticated, other node/user → permission_denied
 *   4. ENCODE_HOST (the address the encoding munged vouches for) is one of the addresses the
 *      requested node name resolves to on the server (NSS/DNS).               → permission_denied
 *   5. The credential's UID is the requested user (NSS: `getent passwd <uid>`). → permission_denied
 *   6. Slurm has a RUNNING job of that uid on that node (squeue).              → permission_denied
 *   7. Groups from NSS (`id -Gn`), as for the other modes.
 *   8. Single use across replicas and restarts (munge-replay.ts).              → unauthenticated
 *
 * Nothing is consumed before the last step, so a refusal for a job that is not RUNNING yet leaves
 * the credential usable for a retry (within its age); concurrent uses are settled by check-and-set.
 * Nothing reaches SPIRE unless attest() resolves (nodes.ts asks for the token afterwards).
 *
 * Loopback: munged's origin is the address its own host name resolves to. On the test bench the
 * node and the server are one host whose name resolves to 127.0.0.1, so ENCODE_HOST is 127.0.0.1
 * and check 4 compares it with the node's 127.0.0.1: no special case. At a site a node whose name
 * resolves to 127.0.1.1 on itself (Debian's default /etc/hosts) produces such a loopback
 * ENCODE_HOST; it matches no compute node's address as the server resolves it, so it is refused —
 * fix munged's `--origin` on the nodes.
 */

import { createHash } from "node:crypto";
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import { InvalidNameError, isValidName, type NameKind, validateName } from "../../lib/names.js";
import type { AttestedNode, GroupResolver, Logger, NodeAttestor, UidResolver } from "./node-attestation.js";
import { type ReplayGuard, ReplayStoreError } from "./munge-replay.js";
import { type RunningJobs, SlurmJobsError } from "./slurm-jobs.js";
import { type CallContext, type NodeTokenRequest, ServiceError } from "./types.js";
import {
  type CredentialDecoder,
  MUNGE_CRED_REPLAYED,
  MUNGE_SERVICE_ERRORS,
  UnmungeError,
} from "./unmunge.js";

/** The payload's `aud`: a credential made for anything else is not a node-token request. */
export const MUNGE_PAYLOAD_AUD = "hpcs-node-token";

export const DEFAULT_MUNGE_MAX_AGE = 300;

/** How far ENCODE_TIME may lie in the server's future (clock skew between node and server). */
const MAX_SKEW_SEC = 60;
// An armored MUNGE credential: "MUNGE:" base64 ":" (munge(1)); a few hundred bytes for our payloads.
const CREDENTIAL = /^MUNGE:[A-Za-z0-9+/]+={0,2}:$/;
const MAX_CREDENTIAL = 4096;
const MAX_PAYLOAD = 1024;
const NONCE = /^[A-Za-z0-9_-]{16,128}$/;

/** The payload a job passes to `munge -s`: one line of JSON. */
export function mungePayload(node: string, user: string, nonce: string): string {
  return JSON.stringify({ aud: MUNGE_PAYLOAD_AUD, node, user, nonce });
}

/** Where a node name's addresses come from; an interface so unit tests need no resolver. */
export interface HostResolver {
  /** Every address the name resolves to; [] when it does not resolve. */
  addressesOf(node: string): Promise<string[]>;
}

/** The server's own resolver (getaddrinfo: /etc/hosts, DNS, as NSS is configured). */
export class NssHostResolver implements HostResolver {
  async addressesOf(node: string): Promise<string[]> {
    try {
      return (await lookup(node, { all: true, verbatim: true })).map((a) => a.address);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOTFOUND" || code === "ENODATA" || code === "EAI_NONAME") return [];
      throw err;
    }
  }
}

export interface MungeAttestorOptions {
  decoder: CredentialDecoder;
  replay: ReplayGuard;
  jobs: RunningJobs;
  users: UidResolver;
  groups: GroupResolver;
  hosts: HostResolver;
  /** `[hpcs-server] munge-max-age` in seconds. */
  maxAgeSec?: number;
  now?: () => Date;
  logger?: Logger & { info(obj: object, msg: string): void };
}

export class MungeAttestor implements NodeAttestor {
  private readonly maxAgeSec: number;
  private readonly now: () => Date;

  constructor(private readonly opts: MungeAttestorOptions) {
    this.maxAgeSec = opts.maxAgeSec ?? DEFAULT_MUNGE_MAX_AGE;
    this.now = opts.now ?? (() => new Date());
  }

  async attest(req: NodeTokenRequest, ctx: CallContext): Promise<AttestedNode> {
    const node = name("node", req.node);
    const user = name("user", req.user);
    const credential = credentialOf(req.mungeCredential);

    // 1. MUNGE's verdict.
    let decoded;
    try {
      decoded = await this.opts.decoder.decode(credential);
    } catch (err) {
      if (err instanceof UnmungeError) throw new ServiceError("unavailable", `munge: ${err.message}`);
      throw err;
    }
    if (!("info" in decoded)) {
      const reason = decoded.reason;
      if (MUNGE_SERVICE_ERRORS.has(decoded.status)) {
        throw new ServiceError(
          "unavailable",
          `munge on the hpcs server: ${reason}; check munged and munge-socket`,
        );
      }
      const fix =
        decoded.status === MUNGE_CRED_REPLAYED
          ? "create a fresh credential for each request"
          : "create it on the node with munge -s, right before the request";
      throw new ServiceError("unauthenticated", `mungeCredential refused by MUNGE (${reason}): ${fix}`);
    }
    const info = decoded.info;

    // 2. Freshness by our own bound (MUNGE's TTL was step 1).
    const nowSec = Math.floor(this.now().getTime() / 1000);
    const age = nowSec - info.encodeTime;
    if (age > this.maxAgeSec) {
      throw new ServiceError(
        "unauthenticated",
        `mungeCredential is ${age}s old, more than munge-max-age (${this.maxAgeSec}s): create a fresh one right before the request`,
      );
    }
    if (age < -MAX_SKEW_SEC) {
      throw new ServiceError(
        "unauthenticated",
        `mungeCredential was created ${-age}s in the server's future: synchronise the clocks (NTP)`,
      );
    }

    // 3. The payload binds the credential to this request.
    const payload = payloadOf(info.payload);
    if (payload.node !== node) {
      throw new ServiceError(
        "permission_denied",
        `mungeCredential names node ${payload.node}, not ${node}: create it on ${node} for ${node}`,
      );
    }
    if (payload.user !== user) {
      throw new ServiceError(
        "permission_denied",
        `mungeCredential names user ${payload.user}, not ${user}: request the token for the job's own user`,
      );
    }

    // 4. The encoding host is the node.
    const encodeHost = canonicalAddress(info.encodeHost);
    const addresses = (await this.opts.hosts.addressesOf(node)).map(canonicalAddress);
    if (addresses.length === 0) {
      throw new ServiceError(
        "permission_denied",
        `node ${node} does not resolve on the hpcs server: use the node's host name as the server's DNS knows it`,
      );
    }
    if (!addresses.includes(encodeHost)) {
      throw new ServiceError(
        "permission_denied",
        `mungeCredential was encoded on ${encodeHost}, which is not an address of node ${node}: create it on ${node} (check munged --origin there)`,
      );
    }

    // 5. The uid is the user.
    const owner = await this.opts.users.userOf(info.uid);
    if (owner !== user) {
      throw new ServiceError(
        "permission_denied",
        `mungeCredential was created by uid ${info.uid}, not by ${user}: run munge as the job's user`,
      );
    }

    // 6. Slurm: a running job of that uid on that node.
    let jobIds: string[];
    try {
      jobIds = await this.opts.jobs.runningJobs(node, info.uid);
    } catch (err) {
      if (err instanceof SlurmJobsError) {
        if (err.kind === "unknown-node") {
          throw new ServiceError("permission_denied", `${err.message}: use the node name Slurm knows`);
        }
        throw new ServiceError("unavailable", `slurm: ${err.message}`);
      }
      throw err;
    }
    if (jobIds.length === 0) {
      throw new ServiceError(
        "permission_denied",
        `${user} has no running Slurm job on node ${node}: request the token from inside the job`,
      );
    }

    // 7. Groups, resolved by the server.
    const groups = await this.opts.groups.groupsOf(user);

    // 8. Single use, last: a refusal above leaves the credential unconsumed.
    const digest = credentialDigest(credential);
    const until = new Date((Math.max(info.encodeTime, nowSec) + this.maxAgeSec + MAX_SKEW_SEC) * 1000);
    let first: boolean;
    try {
      first = await this.opts.replay.claim(digest, until);
    } catch (err) {
      if (err instanceof ReplayStoreError) {
        throw new ServiceError(err.transient ? "unavailable" : "internal", err.message);
      }
      throw err;
    }
    if (!first) {
      throw new ServiceError(
        "unauthenticated",
        "mungeCredential was already used: create a fresh credential for each request",
      );
    }
    this.opts.logger?.info(
      { node, user, uid: info.uid, jobIds, groups, requestId: ctx.requestId },
      "munge node attestation accepted",
    );
    return { node, user, uid: info.uid, groups };
  }
}

/**
 * The credential's identity for single use: SHA-256 of its decoded bytes, so two spellings of one
 * credential (base64 is decoded leniently) share one digest.
 */
export function credentialDigest(credential: string): string {
  const b64 = credential.slice("MUNGE:".length, -1);
  return createHash("sha256").update(Buffer.from(b64, "base64")).digest("hex");
}

function credentialOf(value: unknown): string {
  if (typeof value !== "string" || value.trim() === "") {
    throw new ServiceError(
      "unauthenticated",
      "mungeCredential is missing: node-attestation = munge needs a credential made on the node with munge -s (see README)",
    );
  }
  const c = value.trim();
  if (c.length > MAX_CREDENTIAL || !CREDENTIAL.test(c)) {
    throw new ServiceError("unauthenticated", "mungeCredential is malformed: pass munge's output unchanged");
  }
  return c;
}

interface Payload {
  node: string;
  user: string;
}

function payloadOf(bytes: Buffer): Payload {
  const bad = (why: string) =>
    new ServiceError(
      "unauthenticated",
      `mungeCredential payload ${why}: use munge -s '{"aud":"${MUNGE_PAYLOAD_AUD}","node":…,"user":…,"nonce":…}'`,
    );
  if (bytes.length > MAX_PAYLOAD) throw bad("is too long");
  let p: unknown;
  try {
    p = JSON.parse(bytes.toString("utf8"));
  } catch {
    throw bad("is not JSON");
  }
  if (p === null || typeof p !== "object" || Array.isArray(p)) throw bad("is not a JSON object");
  const o = p as Record<string, unknown>;
  const keys = Object.keys(o).sort().join(",");
  if (keys !== "aud,node,nonce,user") throw bad("must have exactly aud, node, user and nonce");
  if (o.aud !== MUNGE_PAYLOAD_AUD) throw bad(`is not for ${MUNGE_PAYLOAD_AUD}`);
  if (typeof o.nonce !== "string" || !NONCE.test(o.nonce)) throw bad("has no nonce of 16-128 [A-Za-z0-9_-]");
  if (typeof o.node !== "string" || !isValidName("node", o.node)) throw bad("has no valid node name");
  if (typeof o.user !== "string" || !isValidName("user", o.user)) throw bad("has no valid user name");
  return { node: o.node, user: o.user };
}

/** "::ffff:10.0.0.1" → "10.0.0.1", IPv6 lower-cased; anything else unchanged. */
function canonicalAddress(a: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(a);
  if (m?.[1] !== undefined) return m[1];
  return isIP(a) === 6 ? a.toLowerCase() : a;
}

/** lib/names as a one-line invalid_argument ServiceError. */
function name(kind: NameKind, value: string): string {
  try {
    return validateName(kind, value);
  } catch (err) {
    if (err instanceof InvalidNameError) throw new ServiceError("invalid_argument", err.message);
    throw err;
  }
}
