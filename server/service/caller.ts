import { createPublicKey, type KeyObject } from "node:crypto";
import { decodeProtectedHeader, errors as joseErrors, jwtVerify } from "jose";
import { isValidName } from "../../lib/names.js";
import { SpiffeId } from "../../lib/spiffe-id.js";
import type { SpireRegistration } from "../../lib/spire/registration.js";
import { type CallContext, ServiceError } from "./types.js";

/**
 * Authenticates a client from the JWT-SVID it sends (ctx.bearerJwt): signature against the trust
 * bundle's JWT authorities, audience, expiry, and a subject of the form
 * spiffe://<td>/c/<client-id>/workload. The result is the client id; nothing else about the caller is
 * trusted. The bundle is fetched from SPIRE (not from the OIDC discovery endpoint) because the server
 * already holds the admin socket and so needs no extra network trust anchor. On the mTLS listener the
 * transport has already verified the caller's X509-SVID (ctx.peerSpiffeId); it is mapped to a client id
 * by the same rule, and no JWT is read.
 */

export interface CallerOptions {
  spire: Pick<SpireRegistration, "getBundle">;
  trustDomain: string;
  /**
   * The audience a client must fetch its JWT-SVID for. Default "hpcs-server". The original accepted
   * "TESTING", which any workload of the trust domain may fetch for any purpose; it is never a default.
   */
  audience?: string;
  /** How long a fetched bundle is trusted before it is fetched again; default 30 s. */
  bundleMaxAgeMs?: number;
  /**
   * An unknown key id forces a refresh (SPIRE rotated its keys), but not more often than this, so a
   * stream of forged tokens with random kids cannot turn into a stream of SPIRE calls. Default 5 s.
   */
  minRefreshIntervalMs?: number;
  /** Milliseconds since the epoch; injectable for tests. */
  now?: () => number;
}

// Algorithms SPIRE signs JWT-SVIDs with; "none" and HMAC are never acceptable for an asymmetric bundle.
const ALGORITHMS = ["ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"];
// A little slack for clock drift between the SPIRE server and this host.
const CLOCK_TOLERANCE_SEC = 30;
const MAX_JWT_LENGTH = 16 * 1024;

interface KeySet {
  keys: Map<string, KeyObject>;
  fetchedAt: number;
}

export class CallerAuthenticator {
  private readonly audience: string;
  private readonly maxAgeMs: number;
  private readonly minRefreshMs: number;
  private readonly now: () => number;
  private keySet: KeySet | undefined;
  private inFlight: Promise<KeySet> | undefined;

  constructor(private readonly opts: CallerOptions) {
    this.audience = opts.audience ?? "hpcs-server";
    this.maxAgeMs = opts.bundleMaxAgeMs ?? 30_000;
    this.minRefreshMs = opts.minRefreshIntervalMs ?? 5_000;
    this.now = opts.now ?? Date.now;
  }

  /**
   * The caller's client id, or ServiceError("unauthenticated") with one line saying why. On the mTLS
   * transport the verified peer ID (ctx.peerSpiffeId) is the caller and must be a client workload too.
   */
  async authenticate(ctx: CallContext): Promise<string> {
    if (ctx.peerSpiffeId !== undefined) return this.clientIdFrom(ctx.peerSpiffeId, "X509-SVID");
    const jwt = ctx.bearerJwt;
    if (!jwt) throw unauthenticated("no JWT-SVID sent; fetch one for audience " + this.audience);
    if (jwt.length > MAX_JWT_LENGTH) throw unauthenticated("JWT-SVID too long");

    let kid: string | undefined;
    try {
      kid = decodeProtectedHeader(jwt).kid;
    } catch {
      throw unauthenticated("the bearer token is not a JWT");
    }
    if (!kid) throw unauthenticated("JWT-SVID has no key id (kid)");
    const key = await this.keyFor(kid);
    if (!key) throw unauthenticated(`JWT-SVID signed by unknown key ${JSON.stringify(kid)}`);

    let sub: string | undefined;
    try {
      const { payload } = await jwtVerify(jwt, key, {
        algorithms: ALGORITHMS,
        audience: this.audience,
        clockTolerance: CLOCK_TOLERANCE_SEC,
        currentDate: new Date(this.now()),
        requiredClaims: ["sub", "aud", "exp"],
      });
      sub = payload.sub;
    } catch (err) {
      throw unauthenticated(describeJoseError(err, this.audience));
    }
    return this.clientIdFrom(sub ?? "", "JWT-SVID subject");
  }

  private clientIdFrom(sub: string, what: "JWT-SVID subject" | "X509-SVID"): string {
    let id: SpiffeId;
    try {
      id = SpiffeId.parse(sub);
    } catch {
      throw unauthenticated(`${what} is not a SPIFFE ID`);
    }
    const s = id.segments;
    if (
      id.trustDomain !== this.opts.trustDomain ||
      s.length !== 3 ||
      s[0] !== "c" ||
      s[2] !== "workload" ||
      !isValidName("client", s[1] ?? "")
    ) {
      throw unauthenticated(
        `${what} ${JSON.stringify(sub)} is not a client workload (spiffe://${this.opts.trustDomain}/c/<client-id>/workload)`,
      );
    }
    return s[1] as string;
  }

  private async keyFor(kid: string): Promise<KeyObject | undefined> {
    const now = this.now();
    let ks = this.keySet;
    if (!ks || now - ks.fetchedAt > this.maxAgeMs) ks = await this.refresh();
    const key = ks.keys.get(kid);
    if (key || now - ks.fetchedAt < this.minRefreshMs) return key;
    // Unknown kid on a bundle older than the refresh interval: SPIRE may have rotated its JWT key.
    return (await this.refresh()).keys.get(kid);
  }

  /** One fetch at a time; concurrent callers share it. */
  private refresh(): Promise<KeySet> {
    this.inFlight ??= this.fetch().finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  private async fetch(): Promise<KeySet> {
    let bundle;
    try {
      bundle = await this.opts.spire.getBundle();
    } catch (err) {
      const first = String((err as Error)?.message ?? err).split("\n")[0];
      throw new ServiceError("unavailable", `cannot fetch the trust bundle to check the JWT-SVID: ${first}`);
    }
    const keys = new Map<string, KeyObject>();
    for (const a of bundle.jwtAuthorities) {
      // A tainted authority is being rotated out because it may be compromised: stop trusting it now.
      if (a.tainted || !a.keyId) continue;
      if (a.expiresAt && a.expiresAt.getTime() <= this.now()) continue;
      try {
        keys.set(a.keyId, createPublicKey({ key: a.publicKey, format: "der", type: "spki" }));
      } catch {
        // An authority we cannot parse cannot verify anything; the others still can.
      }
    }
    const ks = { keys, fetchedAt: this.now() };
    this.keySet = ks;
    return ks;
  }
}

function unauthenticated(why: string): ServiceError {
  return new ServiceError("unauthenticated", why);
}

function describeJoseError(err: unknown, audience: string): string {
  if (err instanceof joseErrors.JWTExpired) return "JWT-SVID has expired; fetch a fresh one";
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    if (err.claim === "aud") return `JWT-SVID audience is not ${JSON.stringify(audience)}; fetch one for it`;
    return `JWT-SVID claim ${JSON.stringify(err.claim)} is invalid`;
  }
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return "JWT-SVID signature is invalid";
  if (err instanceof joseErrors.JOSEAlgNotAllowed)
    return "JWT-SVID uses an algorithm SPIRE does not sign with";
  return "JWT-SVID is malformed";
}
