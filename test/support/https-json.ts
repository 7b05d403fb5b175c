import type { IncomingHttpHeaders } from "node:http";
import { request } from "node:https";

export interface JsonResponse {
  status: number;
  headers: IncomingHttpHeaders;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- test helper returns raw JSON bodies
  body: any;
}

/** One HTTPS request with a JSON body, trusting only the given CA (the bench's). */
export function httpsJson(
  url: string,
  opts: { ca: string | Buffer; method?: string; headers?: Record<string, string>; body?: unknown },
): Promise<JsonResponse> {
  return new Promise((resolve, reject) => {
    const payload = opts.body === undefined ? undefined : JSON.stringify(opts.body);
    const req = request(
      url,
      {
        method: opts.method ?? "GET",
        ca: opts.ca,
        headers: { ...(payload ? { "content-type": "application/json" } : {}), ...opts.headers },
        timeout: 30_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let body: unknown = text;
          try {
            body = text ? JSON.parse(text) : undefined;
          } catch {
            // not JSON: keep the text
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
        });
      },
    );
    req.on("error", reject);
    req.on("timeout", () => req.destroy(new Error(`timeout: ${url}`)));
    req.end(payload);
  });
}
