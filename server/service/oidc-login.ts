/**
 * OIDC client login (DESIGN flow 2, second method): a client registers with an id_token from the one
 * OpenID Provider the operator trusts (`[hpcs-server] oidc-issuer`) instead of an enrollment secret.
 *
 * The provider's metadata comes from `<issuer>/.well-known/openid-configuration` (its `issuer` must be
 * the configured one, exactly), its keys from the document's `jwks_uri` through jose's remote key set
 * (cached; refetched when a token names an unknown key, at most every 30 s). A token is accepted when
 * its signature verifies with one of those keys under an asymmetric algorithm the provider announces,
 * `iss` is the issuer, `aud` contains `oidc-audience`, it has not expired (5 s of clock tolerance) and was
 * issued at most an hour ago. The client id is the value of `oidc-client-claim`, which must be a valid
 * client name (and in `oidc-allowed-clients` when that is set). The token is never logged or echoed.
 */

import {
  createRemoteJWKSet,
  customFetch,
  decodeJwt,
  errors as joseErrors,
  type JWTPayload,
  jwtVerify,
} from "jose";
import type { OidcConfig } from "../../lib/config/server-config.js";
import { InvalidNameError, validateName } from "../../lib/names.js";
import { type OidcFetch, oidcFetch, readOidcCa } from "../../lib/oidc-fetch.js";
import { ServiceError } from "./types.js";

export interface OidcLoginOptions {
  config: OidcConfig;
  /** Default: node:https with `config.caFile` (tests may pass another). */
  fetch?: OidcFetch;
  /** Per request to the provider; default 10 s. */
  timeoutMs?: number;
}

/** Signature algorithms accepted from the provider: asymmetric only (never HS*, never none). */
const ASYMMETRIC = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"];
const CLOCK_TOLERANCE_SEC = 5;
const MAX_TOKEN_AGE = "1h";
const MAX_TOKEN_CHARS = 16 * 1024;

interface Provider {
  keys: ReturnType<typeof createRemoteJWKSet>;
  algorithms: string[];
}

export class OidcLogin {
  private readonly fetch: OidcFetch;
  /** Discovery runs once; a failed attempt is forgotten so the next registration tries again. */
  private provider: Promise<Provider> | undefined;

  constructor(private readonly opts: OidcLoginOptions) {
    const timeout = opts.timeoutMs ?? 10_000;
    this.fetch = opts.fetch ?? oidcFetch(readOidcCa(opts.config.caFile), timeout);
  }

  get issuer(): string {
    return this.opts.config.issuer;
  }

  /** The client id the verified token names; ServiceError otherwise (one line, without the token). */
  async clientIdFrom(idToken: string): Promise<string> {
    const cfg = this.opts.config;
    if (typeof idToken !== "string" || idToken.length > MAX_TOKEN_CHARS || idToken.split(".").length !== 3) {
      throw new ServiceError(
        "unauthenticated",
        "idToken is not a JWT; send the id_token the OpenID Provider issued",
      );
    }
    let unverified: JWTPayload;
    try {
      unverified = decodeJwt(idToken);
    } catch {
      throw new ServiceError(
        "unauthenticated",
        "idToken is not a JWT; send the id_token the OpenID Provider issued",
      );
    }
    // Checked before the signature only to say which issuer is wrong; jwtVerify checks it again.
    if (unverified.iss !== cfg.issuer) {
      throw new ServiceError(
        "unauthenticated",
        `OIDC token issued by ${JSON.stringify(String(unverified.iss ?? "nobody"))}, not by the trusted issuer ${cfg.issuer}; log in there`,
      );
    }
    const provider = await this.discover();
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(idToken, provider.keys, {
        issuer: cfg.issuer,
        audience: cfg.audience,
        algorithms: provider.algorithms,
        clockTolerance: CLOCK_TOLERANCE_SEC,
        maxTokenAge: MAX_TOKEN_AGE,
        requiredClaims: ["exp", "iat"],
      }));
    } catch (err) {
      throw refusal(err, cfg);
    }
    const value = payload[cfg.clientClaim];
    if (typeof value !== "string") {
      throw new ServiceError(
        "permission_denied",
        `OIDC token has no string claim ${cfg.clientClaim}; the operator's [hpcs-server] oidc-client-claim must name a claim the provider issues`,
      );
    }
    let clientId: string;
    try {
      clientId = validateName("client", value);
    } catch (err) {
      if (err instanceof InvalidNameError) {
        throw new ServiceError(
          "permission_denied",
          `OIDC claim ${cfg.clientClaim} is not a valid client id: ${err.message}; ask the operator to map a claim that holds one`,
        );
      }
      throw err;
    }
    if (cfg.allowedClients.length > 0 && !cfg.allowedClients.includes(clientId)) {
      throw new ServiceError(
        "permission_denied",
        `client ${clientId} may not register by OIDC on this server; ask the operator to add it to [hpcs-server] oidc-allowed-clients`,
      );
    }
    return clientId;
  }

  private discover(): Promise<Provider> {
    this.provider ??= this.load().catch((err: unknown) => {
      this.provider = undefined;
      throw err;
    });
    return this.provider;
  }

  private async load(): Promise<Provider> {
    const issuer = this.opts.config.issuer;
    const where = `${issuer}/.well-known/openid-configuration`;
    let doc: Record<string, unknown>;
    try {
      const res = await this.fetch(where, { headers: { accept: "application/json" } });
      if (res.status !== 200) throw new Error(`HTTP ${res.status}`);
      doc = (await res.json()) as Record<string, unknown>;
    } catch (err) {
      throw new ServiceError(
        "unavailable",
        `OIDC discovery at ${where} failed: ${(err as Error).message}; check [hpcs-server] oidc-issuer and oidc-ca-file`,
      );
    }
    if (doc.issuer !== issuer) {
      throw new ServiceError(
        "unavailable",
        `OIDC discovery at ${where} names issuer ${JSON.stringify(doc.issuer)}; set [hpcs-server] oidc-issuer to exactly the provider's issuer`,
      );
    }
    if (typeof doc.jwks_uri !== "string" || !doc.jwks_uri.startsWith("https://")) {
      throw new ServiceError("unavailable", `OIDC discovery at ${where} has no https jwks_uri`);
    }
    const announced = Array.isArray(doc.id_token_signing_alg_values_supported)
      ? doc.id_token_signing_alg_values_supported.filter((a): a is string => typeof a === "string")
      : ["RS256"];
    const algorithms = announced.filter((a) => ASYMMETRIC.includes(a));
    if (algorithms.length === 0) {
      throw new ServiceError(
        "unavailable",
        `OIDC provider ${issuer} announces no asymmetric id_token signing algorithm; configure it to sign with e.g. RS256`,
      );
    }
    const f = this.fetch;
    const keys = createRemoteJWKSet(new URL(doc.jwks_uri), {
      timeoutDuration: this.opts.timeoutMs ?? 10_000,
      cooldownDuration: 30_000,
      cacheMaxAge: 10 * 60_000,
      [customFetch]: (url, init) =>
        f(url, { method: init.method, headers: init.headers, signal: init.signal }),
    });
    return { keys, algorithms };
  }
}

function refusal(err: unknown, cfg: OidcConfig): ServiceError {
  if (err instanceof joseErrors.JWTExpired) {
    return new ServiceError("unauthenticated", "OIDC token has expired; log in again to get a fresh one");
  }
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    if (err.claim === "aud") {
      return new ServiceError(
        "unauthenticated",
        `OIDC token is not for audience ${cfg.audience}; get it with the OIDC client id the operator configured ([hpcs-server] oidc-audience)`,
      );
    }
    if (err.claim === "iat") {
      return new ServiceError(
        "unauthenticated",
        "OIDC token is too old (issued over an hour ago); log in again",
      );
    }
    return new ServiceError(
      "unauthenticated",
      `OIDC token claim ${err.claim} is not acceptable: ${err.reason}`,
    );
  }
  if (
    err instanceof joseErrors.JWKSNoMatchingKey ||
    err instanceof joseErrors.JWSSignatureVerificationFailed
  ) {
    return new ServiceError(
      "unauthenticated",
      `OIDC token signature does not verify with the keys of ${cfg.issuer}; log in there again`,
    );
  }
  if (err instanceof joseErrors.JOSEAlgNotAllowed) {
    return new ServiceError(
      "unauthenticated",
      "OIDC token is signed with an algorithm the provider does not announce",
    );
  }
  if (err instanceof joseErrors.JWKSTimeout || err instanceof joseErrors.JWKSInvalid) {
    return new ServiceError(
      "unavailable",
      `OIDC keys of ${cfg.issuer} could not be fetched: ${(err as Error).message}`,
    );
  }
  if (err instanceof joseErrors.JOSEError) {
    return new ServiceError("unauthenticated", `OIDC token refused: ${err.message}`);
  }
  return new ServiceError(
    "unavailable",
    `OIDC keys of ${cfg.issuer} could not be fetched: ${(err as Error).message}`,
  );
}
