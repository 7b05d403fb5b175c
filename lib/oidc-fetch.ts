/**
 * A fetch() for talking to an OpenID Provider over node:https with an explicit CA: Node's global fetch
 * takes no CA, and an issuer inside a site often has a certificate from the site's own CA. Used by the
 * server (discovery, JWKS through jose's customFetch) and by the client (device authorization grant).
 * Only https:// URLs; redirects are not followed (an OP's endpoints answer directly); bodies are capped.
 */

import { readFileSync } from "node:fs";
import { request } from "node:https";

export interface OidcFetchInit {
  method?: string;
  headers?: Record<string, string> | Headers;
  body?: string;
  signal?: AbortSignal;
}

export type OidcFetch = (url: string, init?: OidcFetchInit) => Promise<Response>;

const MAX_BODY_BYTES = 1024 * 1024;

/** `ca`: PEM of the OP's CA (system CAs when undefined); `timeoutMs` bounds each request. */
export function oidcFetch(ca: Buffer | string | undefined, timeoutMs: number): OidcFetch {
  return (url, init = {}) =>
    new Promise<Response>((resolve, reject) => {
      const u = new URL(url);
      if (u.protocol !== "https:") {
        reject(new Error(`${u.origin} is not https; the OpenID Provider must be reached over TLS`));
        return;
      }
      const headers =
        init.headers instanceof Headers ? Object.fromEntries(init.headers.entries()) : { ...init.headers };
      const req = request(
        u,
        {
          method: init.method ?? "GET",
          headers,
          ...(ca !== undefined ? { ca } : {}),
          timeout: timeoutMs,
          ...(init.signal ? { signal: init.signal } : {}),
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on("data", (c: Buffer) => {
            size += c.length;
            if (size > MAX_BODY_BYTES) {
              req.destroy(new Error(`${u.origin} sent more than ${MAX_BODY_BYTES} bytes`));
              return;
            }
            chunks.push(c);
          });
          res.on("end", () => {
            const h = new Headers();
            for (const [k, v] of Object.entries(res.headers)) {
              if (typeof v === "string") h.set(k, v);
            }
            const status = res.statusCode ?? 500;
            // Response refuses a body for these statuses.
            const body = [204, 304].includes(status) ? null : Buffer.concat(chunks);
            resolve(new Response(body, { status, headers: h }));
          });
          res.on("error", reject);
        },
      );
      req.on("timeout", () => req.destroy(new Error(`${u.origin} did not answer within ${timeoutMs} ms`)));
      req.on("error", reject);
      if (init.body !== undefined) req.write(init.body);
      req.end();
    });
}

/** The PEM CA of `[hpcs-server] oidc-ca-file` (client and server INI alike), or undefined: system CAs. */
export function readOidcCa(path: string | undefined): Buffer | undefined {
  if (path === undefined) return undefined;
  try {
    return readFileSync(path);
  } catch (err) {
    throw new Error(
      `cannot read [hpcs-server] oidc-ca-file ${path}: ${(err as NodeJS.ErrnoException).code ?? "error"}; point it at the PEM CA of the OpenID Provider's certificate`,
    );
  }
}
