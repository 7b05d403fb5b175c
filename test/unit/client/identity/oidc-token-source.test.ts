import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { OIDC_TOKEN_ENV, oidcIdToken } from "../../../../client/identity/oidc-token-source.js";
import { parseClientConfig } from "../../../../lib/config/client-config.js";

const BASE = `[spire-server]
address = 127.0.0.1
trust-domain = hpcs.test
port = 8081
[vault]
url = https://127.0.0.1:8200
[supercomputer]
address = login.example.org
username = alice
[hpcs-server]
url = https://hpcs:10080
`;
const JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJsYWItNyJ9.c2ln";

describe("client/identity/oidc-token-source", () => {
  let dir = "";
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), "oidc-src-"))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const cfg = (extra = "") => parseClientConfig(`${BASE}${extra}`, join(dir, "c.ini"));
  const notices: string[] = [];
  const opts = (env: Record<string, string | undefined> = {}) => ({
    env,
    onNotice: (m: string) => notices.push(m),
  });

  it("is undefined without any OIDC source (the enrollment secret is used)", async () => {
    assert.equal(await oidcIdToken(cfg(), opts()), undefined);
  });

  it("takes HPCS_OIDC_TOKEN over the configured file, and refuses a non-JWT there", async () => {
    assert.equal(
      await oidcIdToken(cfg("oidc-token-file = missing\n"), opts({ [OIDC_TOKEN_ENV]: ` ${JWT}\n` })),
      JWT,
    );
    await assert.rejects(oidcIdToken(cfg(), opts({ [OIDC_TOKEN_ENV]: "secret junk" })), (e: unknown) => {
      assert.match(String(e), /HPCS_OIDC_TOKEN is not a JWT/);
      assert.ok(!String(e).includes("secret junk"));
      return true;
    });
  });

  it("reads the bare JWT or a token response; warns when others can read the file", async () => {
    notices.length = 0;
    writeFileSync(join(dir, "t1"), `${JWT}\n`, { mode: 0o600 });
    assert.equal(await oidcIdToken(cfg("oidc-token-file = t1\n"), opts()), JWT);
    assert.deepEqual(notices, []);
    writeFileSync(join(dir, "t2"), JSON.stringify({ access_token: "a", id_token: JWT }), { mode: 0o644 });
    assert.equal(await oidcIdToken(cfg("oidc-token-file = t2\n"), opts()), JWT);
    assert.equal(notices.length, 1);
    assert.match(notices[0] ?? "", /readable by others \(mode 644\); chmod 600 it/);
  });

  it("refuses a missing file or one without an id_token, without echoing its content", async () => {
    await assert.rejects(oidcIdToken(cfg("oidc-token-file = nope\n"), opts()), /cannot read .*nope: ENOENT/);
    writeFileSync(join(dir, "t3"), "hunter2", { mode: 0o600 });
    await assert.rejects(oidcIdToken(cfg("oidc-token-file = t3\n"), opts()), (e: unknown) => {
      assert.match(String(e), /holds no id_token/);
      assert.ok(!String(e).includes("hunter2"));
      return true;
    });
  });
});
