import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:https";
import { exportJWK, generateKeyPair } from "jose";
import Provider from "oidc-provider";
import { oidcFetch } from "../../lib/oidc-fetch.js";
import { freePort } from "./hpcs-server.js";
import type { StackEnv } from "./stack-env.js";

export const DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code";

/**
 * A real OpenID Provider (the `oidc-provider` package) on https://localhost:<free port>, with the
 * bench's TLS certificate, its own RSA signing key, the device authorization grant on, and public
 * (no secret) clients for the given client ids. Accounts exist for any id: the account id is `sub`.
 *
 * What a browser would do — enter the user code, log in, consent — is replaced by approve(), which
 * binds the pending device code to an account and an `openid` grant inside the provider exactly as its
 * own interaction would; issuing, signing and checking the tokens is the provider's own work.
 */
export class TestOpenIdProvider {
  private constructor(
    readonly issuer: string,
    private readonly ttl: { idTokenSec: number },
    private readonly provider: Provider,
    private readonly server: Server,
    private readonly ca: Buffer,
  ) {}

  static async start(env: StackEnv, clientIds: string[]): Promise<TestOpenIdProvider> {
    const port = await freePort();
    const issuer = `https://localhost:${port}`;
    const { privateKey } = await generateKeyPair("RS256", { extractable: true });
    const jwk = {
      ...(await exportJWK(privateKey)),
      kid: randomBytes(8).toString("hex"),
      alg: "RS256",
      use: "sig",
    };
    // ttl.IdToken is evaluated per token, so the test can make the next token short-lived.
    const ttl = { idTokenSec: 600 };
    const provider = new Provider(issuer, {
      clients: clientIds.map((id) => ({
        client_id: id,
        grant_types: [DEVICE_GRANT],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: "none",
        application_type: "native",
      })),
      jwks: { keys: [jwk] },
      cookies: { keys: [randomBytes(32).toString("hex")] },
      features: { devInteractions: { enabled: false }, deviceFlow: { enabled: true } },
      claims: { openid: ["sub"] },
      findAccount: (_ctx: unknown, id: string) => ({ accountId: id, claims: () => ({ sub: id }) }),
      ttl: {
        IdToken: () => ttl.idTokenSec,
        AccessToken: 600,
        DeviceCode: 600,
        Grant: 600,
        Interaction: 600,
        Session: 600,
      },
    });
    const server = createServer(
      { cert: readFileSync(env.tls.cert), key: readFileSync(env.tls.key) },
      provider.callback(),
    );
    server.listen(port, "127.0.0.1");
    await once(server, "listening");
    return new TestOpenIdProvider(issuer, ttl, provider, server, readFileSync(env.ca_cert));
  }

  /** ID token lifetime for tokens issued from now on (ttl.IdToken reads it per token). */
  get idTokenTtlSec(): number {
    return this.ttl.idTokenSec;
  }

  set idTokenTtlSec(sec: number) {
    this.ttl.idTokenSec = sec;
  }

  /** Approves a pending device code for account `sub` with scope openid, as the user's login would. */
  async approve(userCode: string, sub: string): Promise<void> {
    const code = await this.provider.DeviceCode.findByUserCode(userCode.toUpperCase().replace(/\W/g, ""));
    if (!code) throw new Error(`no pending device code for user code ${userCode}`);
    const grant = new this.provider.Grant({ accountId: sub, clientId: code.clientId });
    grant.addOIDCScope("openid");
    const grantId = await grant.save();
    Object.assign(code, {
      accountId: sub,
      authTime: Math.floor(Date.now() / 1000),
      grantId,
      scope: "openid",
    });
    await code.save();
  }

  /** An id_token for `sub` issued to `clientId`: the device flow over HTTPS, approved before the first poll. */
  async idToken(clientId: string, sub: string): Promise<string> {
    const f = oidcFetch(this.ca, 10_000);
    const form = (o: Record<string, string>) => ({
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams(o).toString(),
    });
    const a = (await (
      await f(`${this.issuer}/device/auth`, form({ client_id: clientId, scope: "openid" }))
    ).json()) as Record<string, string>;
    if (!a.device_code || !a.user_code) throw new Error(`device authorization failed: ${JSON.stringify(a)}`);
    await this.approve(a.user_code, sub);
    const t = (await (
      await f(
        `${this.issuer}/token`,
        form({ grant_type: DEVICE_GRANT, device_code: a.device_code, client_id: clientId }),
      )
    ).json()) as Record<string, string>;
    if (!t.id_token) throw new Error(`token request failed: ${t.error ?? "no id_token"}`);
    return t.id_token;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
