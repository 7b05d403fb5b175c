/**
 * The OAuth 2.0 device authorization grant (RFC 8628) against an OpenID Provider, for a CLI without a
 * browser: the provider's metadata from `<issuer>/.well-known/openid-configuration`, then
 *
 *   1. POST device_authorization_endpoint (client_id, scope=openid) → device_code, user_code,
 *      verification_uri[_complete], expires_in, interval (default 5 s);
 *   2. tell the user where to go and which code to enter (onPrompt: the CLI's stderr);
 *   3. poll token_endpoint every `interval` seconds: authorization_pending → keep polling, slow_down →
 *      interval + 5 s (RFC 8628 §3.5), access_denied / expired_token → stop; give up at expires_in.
 *
 * The result is the token response's id_token. The device code and the tokens are never printed or put
 * in an error message; only the user code and the verification URI are shown (they are meant for eyes).
 */

import type { OidcFetch } from "../../lib/oidc-fetch.js";

export interface DeviceFlowOptions {
  issuer: string;
  clientId: string;
  /** Default "openid". */
  scope?: string;
  fetch: OidcFetch;
  /** One message for the user: where to log in and the code to enter. */
  onPrompt: (message: string) => void;
  signal?: AbortSignal;
  /** Injectable for unit tests. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  now?: () => number;
}

export class DeviceFlowError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DeviceFlowError";
  }
}

const GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code";
const DEFAULT_INTERVAL_SEC = 5;
const SLOW_DOWN_STEP_SEC = 5;
const MAX_INTERVAL_SEC = 60;

type Json = Record<string, unknown>;

export async function deviceCodeLogin(o: DeviceFlowOptions): Promise<string> {
  const now = o.now ?? Date.now;
  const sleep = o.sleep ?? abortableSleep;
  const meta = await metadata(o);

  const auth = await postForm(o, meta.device, { client_id: o.clientId, scope: o.scope ?? "openid" });
  if (auth.status !== 200)
    throw new DeviceFlowError(`device authorization refused: ${oauthError(auth.body)}`);
  const deviceCode = optStr(auth.body, "device_code");
  const userCode = optStr(auth.body, "user_code");
  const uri = optStr(auth.body, "verification_uri") ?? optStr(auth.body, "verification_url");
  const complete = optStr(auth.body, "verification_uri_complete");
  const expiresIn = positive(auth.body.expires_in, 600);
  let interval = Math.min(positive(auth.body.interval, DEFAULT_INTERVAL_SEC), MAX_INTERVAL_SEC);
  if (deviceCode === undefined || userCode === undefined || uri === undefined) {
    throw new DeviceFlowError(
      `the provider's device authorization answer lacks device_code, user_code or verification_uri (${meta.device})`,
    );
  }
  o.onPrompt(
    `To log in, open ${uri} and enter the code ${userCode}` +
      (complete ? ` (or open ${complete})` : "") +
      `; waiting up to ${Math.round(expiresIn / 60)} min.`,
  );

  const deadline = now() + expiresIn * 1000;
  for (;;) {
    o.signal?.throwIfAborted();
    if (now() + interval * 1000 > deadline) {
      throw new DeviceFlowError(
        `the login code ${userCode} expired before it was approved; run the command again`,
      );
    }
    await sleep(interval * 1000, o.signal);
    const r = await postForm(o, meta.token, {
      grant_type: GRANT_TYPE,
      device_code: deviceCode,
      client_id: o.clientId,
    });
    if (r.status === 200) {
      const idToken = optStr(r.body, "id_token");
      if (idToken === undefined) {
        throw new DeviceFlowError(
          `the provider issued no id_token (scope openid missing for client ${o.clientId}?); ask its administrator`,
        );
      }
      return idToken;
    }
    const error = optStr(r.body, "error");
    if (error === "authorization_pending") continue;
    if (error === "slow_down") {
      interval = Math.min(interval + SLOW_DOWN_STEP_SEC, MAX_INTERVAL_SEC);
      continue;
    }
    if (error === "access_denied") throw new DeviceFlowError("the login was denied at the provider");
    if (error === "expired_token") {
      throw new DeviceFlowError(
        `the login code ${userCode} expired before it was approved; run the command again`,
      );
    }
    throw new DeviceFlowError(`the provider's token endpoint refused the device code: ${oauthError(r.body)}`);
  }
}

interface Endpoints {
  device: string;
  token: string;
}

async function metadata(o: DeviceFlowOptions): Promise<Endpoints> {
  const where = `${o.issuer}/.well-known/openid-configuration`;
  let doc: Json;
  try {
    const res = await o.fetch(where, { headers: { accept: "application/json" }, ...signalOf(o) });
    if (res.status !== 200) throw new Error(`HTTP ${res.status}`);
    doc = (await res.json()) as Json;
  } catch (err) {
    throw new DeviceFlowError(
      `OIDC discovery at ${where} failed: ${(err as Error).message}; check [hpcs-server] oidc-issuer and oidc-ca-file`,
    );
  }
  if (doc.issuer !== o.issuer) {
    throw new DeviceFlowError(
      `${where} names issuer ${JSON.stringify(doc.issuer)}; set [hpcs-server] oidc-issuer to exactly that`,
    );
  }
  const device = optStr(doc, "device_authorization_endpoint");
  const token = optStr(doc, "token_endpoint");
  if (device === undefined || token === undefined) {
    throw new DeviceFlowError(
      `the provider ${o.issuer} offers no device authorization grant (no device_authorization_endpoint); use [hpcs-server] oidc-token-file instead`,
    );
  }
  return { device, token };
}

async function postForm(
  o: DeviceFlowOptions,
  url: string,
  form: Record<string, string>,
): Promise<{ status: number; body: Json }> {
  let res: Response;
  try {
    res = await o.fetch(url, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", accept: "application/json" },
      body: new URLSearchParams(form).toString(),
      ...signalOf(o),
    });
  } catch (err) {
    if (o.signal?.aborted) throw err;
    throw new DeviceFlowError(`cannot reach ${new URL(url).origin}: ${(err as Error).message}`);
  }
  let body: Json = {};
  try {
    const parsed: unknown = await res.json();
    if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) body = parsed as Json;
  } catch {
    // A non-JSON answer is judged by its status alone.
  }
  return { status: res.status, body };
}

function signalOf(o: DeviceFlowOptions): { signal?: AbortSignal } {
  return o.signal ? { signal: o.signal } : {};
}

/** The provider's `error` and `error_description`, reduced to one short printable line. */
function oauthError(body: Json): string {
  const e = optStr(body, "error") ?? "no error code";
  const d = optStr(body, "error_description");
  return (d ? `${e} (${d})` : e).replace(/[^\x20-\x7e]+/g, " ").slice(0, 300);
}

function optStr(body: Json, key: string): string | undefined {
  const v = body[key];
  return typeof v === "string" && v !== "" ? v : undefined;
}

function positive(v: unknown, fallback: number): number {
  return typeof v === "number" && Number.isFinite(v) && v > 0 ? v : fallback;
}

function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason as Error);
      return;
    }
    const onAbort = () => {
      clearTimeout(t);
      reject(signal?.reason as Error);
    };
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
