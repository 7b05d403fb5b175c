import assert from "node:assert/strict";
import { DeviceFlowError, deviceCodeLogin } from "../../../../client/identity/oidc-device-flow.js";
import type { OidcFetch } from "../../../../lib/oidc-fetch.js";

const ISSUER = "https://idp.example.org";
const DISCOVERY = {
  issuer: ISSUER,
  device_authorization_endpoint: `${ISSUER}/device/auth`,
  token_endpoint: `${ISSUER}/token`,
};

interface Call {
  url: string;
  form: URLSearchParams | undefined;
}

/** A fake provider: discovery, one device authorization answer, then the token answers in order. */
function fakeProvider(auth: Record<string, unknown>, tokenAnswers: [number, Record<string, unknown>][]) {
  const calls: Call[] = [];
  const fetch: OidcFetch = (url, init) => {
    calls.push({ url, form: init?.body ? new URLSearchParams(init.body) : undefined });
    const json = (status: number, body: unknown) => Promise.resolve(Response.json(body, { status }));
    if (url === `${ISSUER}/.well-known/openid-configuration`) return json(200, DISCOVERY);
    if (url === DISCOVERY.device_authorization_endpoint) return json(200, auth);
    const next = tokenAnswers.shift();
    if (!next) throw new Error("polled too often");
    return json(next[0], next[1]);
  };
  return { calls, fetch };
}

const AUTH = {
  device_code: "dev-code-secret",
  user_code: "WDJB-MJHT",
  verification_uri: `${ISSUER}/device`,
  verification_uri_complete: `${ISSUER}/device?user_code=WDJB-MJHT`,
  expires_in: 600,
  interval: 2,
};

function clock() {
  let t = 1_000_000;
  const sleeps: number[] = [];
  return {
    sleeps,
    now: () => t,
    sleep: (ms: number) => {
      sleeps.push(ms);
      t += ms;
      return Promise.resolve();
    },
  };
}

describe("client/identity/oidc-device-flow", () => {
  it("prompts once, polls at the interval, backs off on slow_down and returns the id_token", async () => {
    const p = fakeProvider(AUTH, [
      [400, { error: "authorization_pending" }],
      [400, { error: "slow_down" }],
      [400, { error: "authorization_pending" }],
      [200, { access_token: "at", id_token: "h.p.s", token_type: "Bearer" }],
    ]);
    const c = clock();
    const prompts: string[] = [];
    const token = await deviceCodeLogin({
      issuer: ISSUER,
      clientId: "hpcs-cli",
      fetch: p.fetch,
      onPrompt: (m) => prompts.push(m),
      sleep: c.sleep,
      now: c.now,
    });
    assert.equal(token, "h.p.s");
    assert.deepEqual(c.sleeps, [2000, 2000, 7000, 7000]);
    assert.equal(prompts.length, 1);
    assert.match(prompts[0] ?? "", /open https:\/\/idp\.example\.org\/device and enter the code WDJB-MJHT/);
    assert.ok(!prompts[0]?.includes("dev-code-secret"), "the device code is not shown");
    const auth = p.calls[1]?.form;
    assert.equal(auth?.get("client_id"), "hpcs-cli");
    assert.equal(auth?.get("scope"), "openid");
    const poll = p.calls[2]?.form;
    assert.equal(poll?.get("grant_type"), "urn:ietf:params:oauth:grant-type:device_code");
    assert.equal(poll?.get("device_code"), "dev-code-secret");
  });

  it("defaults the interval to 5 s and stops at expires_in", async () => {
    const { interval: _i, ...noInterval } = AUTH;
    const pending: [number, Record<string, unknown>][] = Array.from({ length: 10 }, () => [
      400,
      { error: "authorization_pending" },
    ]);
    const p = fakeProvider({ ...noInterval, expires_in: 12 }, pending);
    const c = clock();
    await assert.rejects(
      deviceCodeLogin({ issuer: ISSUER, clientId: "c", fetch: p.fetch, onPrompt: () => undefined, ...c }),
      (e: unknown) => e instanceof DeviceFlowError && /expired before it was approved/.test(e.message),
    );
    assert.deepEqual(c.sleeps, [5000, 5000]);
  });

  it("stops on access_denied, expired_token and an answer without id_token", async () => {
    for (const [answer, re] of [
      [[400, { error: "access_denied" }], /denied at the provider/],
      [[400, { error: "expired_token" }], /expired before it was approved/],
      [[200, { access_token: "at" }], /issued no id_token/],
      [
        [400, { error: "invalid_client", error_description: "unknown client" }],
        /invalid_client \(unknown client\)/,
      ],
    ] as [[number, Record<string, unknown>], RegExp][]) {
      const p = fakeProvider(AUTH, [answer]);
      await assert.rejects(
        deviceCodeLogin({
          issuer: ISSUER,
          clientId: "c",
          fetch: p.fetch,
          onPrompt: () => undefined,
          ...clock(),
        }),
        (e: unknown) =>
          e instanceof DeviceFlowError && re.test(e.message) && !e.message.includes("dev-code-secret"),
      );
    }
  });

  it("refuses a discovery document of another issuer or without a device endpoint", async () => {
    const f =
      (doc: Record<string, unknown>): OidcFetch =>
      () =>
        Promise.resolve(Response.json(doc));
    await assert.rejects(
      deviceCodeLogin({
        issuer: ISSUER,
        clientId: "c",
        fetch: f({ ...DISCOVERY, issuer: "https://evil" }),
        onPrompt: () => undefined,
      }),
      /names issuer "https:\/\/evil"/,
    );
    await assert.rejects(
      deviceCodeLogin({
        issuer: ISSUER,
        clientId: "c",
        fetch: f({ issuer: ISSUER, token_endpoint: "x" }),
        onPrompt: () => undefined,
      }),
      /offers no device authorization grant/,
    );
  });
});
