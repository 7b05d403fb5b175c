import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { InvalidNameError } from "../../../../lib/names.js";
import { clientRole, grantRole } from "../../../../lib/vault/jwt-role.js";
import {
  clientPolicy,
  clientPolicyName,
  grantPolicy,
  grantPolicyName,
  secretPath,
  serverPolicy,
} from "../../../../lib/vault/policies.js";
import { InvalidVaultPathError, MAX_VAULT_NAME } from "../../../../lib/vault/vault-paths.js";

const tag = (c: string, s: string) => createHash("sha256").update(`${c}/${s}`).digest("hex").slice(0, 12);

describe("vault policies", () => {
  it("client policy: create-only on its own prefix, nothing else", () => {
    assert.equal(
      clientPolicy("lab-42"),
      [
        "# hpcs-client-lab-42: store new secrets under its own prefix; no read, update or list.",
        'path "kv/data/hpcs/lab-42/*" {',
        '  capabilities = ["create"]',
        "}",
        "",
      ].join("\n"),
    );
    assert.equal(clientPolicyName("lab-42"), "hpcs-client-lab-42");
  });

  it("grant policy: read-only on exactly one secret", () => {
    const name = `hpcs-grant-lab-42.dataset-1.${tag("lab-42", "dataset-1")}`;
    assert.equal(grantPolicyName("lab-42", "dataset-1"), name);
    assert.equal(
      grantPolicy("lab-42", "dataset-1"),
      [
        `# ${name}: read exactly one secret.`,
        'path "kv/data/hpcs/lab-42/dataset-1" {',
        '  capabilities = ["read"]',
        "}",
        "",
      ].join("\n"),
    );
    assert.equal(secretPath("lab-42", "dataset-1"), "hpcs/lab-42/dataset-1");
  });

  it("honours another kv mount", () => {
    assert.match(clientPolicy("a", { kvMount: "secret" }), /path "secret\/data\/hpcs\/a\/\*"/);
    assert.throws(() => clientPolicy("a", { kvMount: "../sys" }), InvalidVaultPathError);
  });

  it("server policy: hpcs-* roles and policies, its own records and secret metadata, never secret data", () => {
    const caps = '  capabilities = ["create", "read", "update", "delete"]';
    assert.equal(
      serverPolicy(),
      [
        "# hpcs server: manage hpcs-* jwt roles and ACL policies only.",
        'path "auth/jwt/role/hpcs-*" {',
        caps,
        "}",
        "",
        'path "sys/policies/acl/hpcs-*" {',
        caps,
        "}",
        "",
        "# Its own records (enrollments, node tokens, grant index), written with check-and-set.",
        'path "kv/data/hpcs-server/*" {',
        '  capabilities = ["create", "read", "update"]',
        "}",
        "",
        "# Secret metadata only (grant expiry, revoke --delete-secret); never the secrets' data.",
        'path "kv/metadata/hpcs/*" {',
        caps,
        "}",
        "",
        "# ...except its own role and policy, which the glob above would otherwise let it widen.",
        'path "auth/jwt/role/hpcs-server" {',
        '  capabilities = ["deny"]',
        "}",
        "",
        'path "sys/policies/acl/hpcs-server" {',
        '  capabilities = ["deny"]',
        "}",
        "",
      ].join("\n"),
    );
    const other = serverPolicy({ serverRole: "site-hpcs", jwtMount: "spire-jwt" });
    assert.match(other, /path "auth\/spire-jwt\/role\/hpcs-\*"/);
    assert.doesNotMatch(other, /deny/);
    assert.doesNotMatch(serverPolicy(), /sudo|role\/\*"|acl\/\*"|kv\/data\/hpcs\/|kv\/\*/);
  });

  it("grant names are unambiguous across clients and distinct for secrets that differ only in case", () => {
    // "a" + "b-c" and "a-b" + "c" would both be "a-b-c" with '-' as separator.
    assert.notEqual(grantPolicyName("a", "b-c"), grantPolicyName("a-b", "c"));
    assert.notEqual(grantPolicyName("lab", "Data"), grantPolicyName("lab", "data"));
    // Vault lower-cases policy names and needs role names to end in a letter or digit.
    for (const s of ["Data", "data-", "data.", "x_"]) {
      const n = grantPolicyName("lab", s);
      assert.equal(n, n.toLowerCase());
      assert.match(n, /^\w(?:[\w.-]*\w)?$/);
    }
  });

  it("the longest names stay within Vault's and the file system's limits", () => {
    const client = `a${"b".repeat(62)}`;
    const secret = `S${"x".repeat(127)}`;
    const n = grantPolicyName(client, secret);
    assert.ok(n.length <= MAX_VAULT_NAME && n.length + 1 < 255, `${n.length}`);
    assert.ok(clientPolicyName(client).length < 100);
  });

  const hostile = ["a;b", "../x", "x".repeat(300), "", "a/b", "a b", "$(id)", "A", "a\nb"];
  it("refuses hostile client names before they reach a path", () => {
    for (const bad of hostile) {
      assert.throws(() => clientPolicy(bad), InvalidNameError, JSON.stringify(bad));
      assert.throws(() => clientPolicyName(bad), InvalidNameError, JSON.stringify(bad));
      assert.throws(() => grantPolicy(bad, "s"), InvalidNameError, JSON.stringify(bad));
      assert.throws(() => grantPolicyName(bad, "s"), InvalidNameError, JSON.stringify(bad));
      assert.throws(() => secretPath(bad, "s"), InvalidNameError, JSON.stringify(bad));
    }
  });

  it("refuses hostile secret names before they reach a path", () => {
    for (const bad of ["a;b", "../x", "x".repeat(300), "", "..", "a/b", "*", "a\nb", ".hidden"]) {
      assert.throws(() => grantPolicy("lab", bad), InvalidNameError, JSON.stringify(bad));
      assert.throws(() => grantPolicyName("lab", bad), InvalidNameError, JSON.stringify(bad));
      assert.throws(() => secretPath("lab", bad), InvalidNameError, JSON.stringify(bad));
    }
  });

  it("refuses a client name that cannot form a Vault role name", () => {
    assert.throws(
      () => clientPolicyName("lab-"),
      /invalid client name "lab-": use lower-case letters, digits or '-' \(not at either end\)/,
    );
  });

  it("refuses a hostile server role name", () => {
    for (const bad of ["*", "hpcs-*", "a/b", "", "x".repeat(300), "Hpcs"]) {
      assert.throws(() => serverPolicy({ serverRole: bad }), InvalidVaultPathError, JSON.stringify(bad));
    }
  });

  it("builds roles bound to the design's SPIFFE IDs with the matching policy", () => {
    const c = clientRole({
      trustDomain: "hpcs.test",
      clientId: "lab-1",
      audiences: ["vault"],
      tokenTtlSec: 60,
    });
    assert.deepEqual(c, {
      name: "hpcs-client-lab-1",
      spec: {
        boundSubject: "spiffe://hpcs.test/c/lab-1/workload",
        boundAudiences: ["vault"],
        tokenPolicies: ["hpcs-client-lab-1"],
        tokenTtlSec: 60,
      },
    });
    const g = grantRole({ trustDomain: "hpcs.test", clientId: "lab-1", secret: "ds", audiences: ["vault"] });
    assert.equal(g.spec.boundSubject, "spiffe://hpcs.test/c/lab-1/s/ds");
    assert.deepEqual(g.spec.tokenPolicies, [grantPolicyName("lab-1", "ds")]);
    assert.equal(g.name, grantPolicyName("lab-1", "ds"));
    assert.throws(() =>
      grantRole({ trustDomain: "hpcs.test", clientId: "lab-1", secret: "../x", audiences: ["v"] }),
    );
  });
});
