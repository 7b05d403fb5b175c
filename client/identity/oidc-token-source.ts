/**
 * The client's OIDC id_token for registering with the hpcs server (OIDC login, DESIGN flow 2), from
 * the first of these that is set:
 *
 *   1. the environment variable HPCS_OIDC_TOKEN (an id_token) — one run's override, e.g. from a CI job;
 *   2. `[hpcs-server] oidc-token-file` — the bare JWT, or a token response `{"id_token": …}`;
 *   3. `[hpcs-server] oidc-issuer` + `oidc-client-id` — the device-code login (oidc-device-flow.ts).
 *
 * None set: undefined, and the client uses its enrollment secret. The token is not checked here beyond
 * its shape (the server verifies it); it is never printed, logged or put on a command line.
 */

import { statSync } from "node:fs";
import { readFile } from "node:fs/promises";
import type { ClientConfig } from "../../lib/config/client-config.js";
import { type OidcFetch, oidcFetch, readOidcCa } from "../../lib/oidc-fetch.js";
import { deviceCodeLogin } from "./oidc-device-flow.js";

export const OIDC_TOKEN_ENV = "HPCS_OIDC_TOKEN";

export interface OidcTokenOptions {
  env: Record<string, string | undefined>;
  /** Messages for the user: the device-code prompt, a warning about the token file's mode. */
  onNotice: (message: string) => void;
  signal?: AbortSignal;
  /** Default: node:https with `[hpcs-server] oidc-ca-file`. */
  fetch?: OidcFetch;
}

const JWT = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
const MAX_FILE_BYTES = 64 * 1024;

export async function oidcIdToken(cfg: ClientConfig, o: OidcTokenOptions): Promise<string | undefined> {
  const fromEnv = o.env[OIDC_TOKEN_ENV]?.trim();
  if (fromEnv) {
    if (!JWT.test(fromEnv)) throw new Error(`${OIDC_TOKEN_ENV} is not a JWT; set it to the id_token itself`);
    return fromEnv;
  }
  const oidc = cfg.hpcsServer.oidc;
  if (oidc === undefined) return undefined;
  if (oidc.source === "file") return readTokenFile(oidc.tokenFile, o.onNotice);
  const fetch = o.fetch ?? oidcFetch(readOidcCa(oidc.caFile), 30_000);
  return deviceCodeLogin({
    issuer: oidc.issuer,
    clientId: oidc.clientId,
    fetch,
    onPrompt: o.onNotice,
    ...(o.signal ? { signal: o.signal } : {}),
  });
}

async function readTokenFile(path: string, onNotice: (m: string) => void): Promise<string> {
  const what = `[hpcs-server] oidc-token-file ${path}`;
  let text: string;
  try {
    // A token readable by others is usable by them until it expires: worth a warning, not a refusal
    // (the user may have just written it with the default umask and it lives minutes).
    const mode = statSync(path).mode & 0o777;
    if ((mode & 0o077) !== 0) {
      onNotice(`warning: ${what} is readable by others (mode ${mode.toString(8)}); chmod 600 it`);
    }
    const buf = await readFile(path);
    if (buf.length > MAX_FILE_BYTES) throw Object.assign(new Error("too large"), { code: "EFBIG" });
    text = buf.toString("utf8").trim();
  } catch (err) {
    throw new Error(
      `cannot read ${what}: ${(err as NodeJS.ErrnoException).code ?? "error"}; put the id_token from your OpenID Provider there`,
    );
  }
  let token = text;
  if (text.startsWith("{")) {
    try {
      const doc = JSON.parse(text) as Record<string, unknown>;
      token = typeof doc.id_token === "string" ? doc.id_token : "";
    } catch {
      token = "";
    }
  }
  if (!JWT.test(token)) {
    throw new Error(
      `${what} holds no id_token; it must hold the JWT itself or a token response with "id_token"`,
    );
  }
  return token;
}
