import assert from "node:assert/strict";
import {
  type GroupResolver,
  NssGroupResolver,
  nodeTokenPath,
  OpenAttestor,
  OperatorAttestor,
} from "../../../../server/service/node-attestation.js";
import { ServiceError } from "../../../../server/service/types.js";
import { FakeKv } from "../../../support/node-fakes.js";

const ctx = { requestId: "t" };
const groups: GroupResolver = { groupsOf: async (u) => (u === "bob" ? ["bob", "shared", "proj-b"] : []) };

function code(c: string) {
  return (err: unknown) => err instanceof ServiceError && err.code === c && !err.message.includes("\n");
}

describe("OperatorAttestor", () => {
  let kv: FakeKv;
  let now: Date;
  let att: OperatorAttestor;
  beforeEach(() => {
    kv = new FakeKv();
    now = new Date("2026-01-01T00:00:00Z");
    att = new OperatorAttestor(kv.asVault(), groups, { now: () => now });
  });

  it("stores only the token's hash, under the prefix", async () => {
    const { token, expiresAt } = await att.issue("n1", "bob", 60);
    assert.equal(expiresAt.getTime(), now.getTime() + 60_000);
    const [path] = [...kv.store.keys()];
    assert.equal(path, nodeTokenPath("hpcs-server/node-tokens", token));
    assert.match(path ?? "", /^hpcs-server\/node-tokens\/[0-9a-f]{64}$/);
    assert.ok(!JSON.stringify([...kv.store.entries()]).includes(token));
  });

  it("redeems once for exactly the node and user it was issued for, with NSS groups", async () => {
    const { token } = await att.issue("n1", "bob", 60);
    const got = await att.attest({ node: "n1", user: "bob", operatorToken: token }, ctx);
    assert.deepEqual(got, { node: "n1", user: "bob", groups: ["bob", "shared", "proj-b"] });
    await assert.rejects(
      att.attest({ node: "n1", user: "bob", operatorToken: token }, ctx),
      code("unauthenticated"),
    );
  });

  it("refuses another user or node without consuming the token", async () => {
    const { token } = await att.issue("n1", "bob", 60);
    await assert.rejects(
      att.attest({ node: "n1", user: "alice", operatorToken: token }, ctx),
      code("permission_denied"),
    );
    await assert.rejects(
      att.attest({ node: "n2", user: "bob", operatorToken: token }, ctx),
      code("permission_denied"),
    );
    await att.attest({ node: "n1", user: "bob", operatorToken: token }, ctx);
  });

  it("refuses an expired token", async () => {
    const { token } = await att.issue("n1", "bob", 60);
    now = new Date(now.getTime() + 60_000);
    await assert.rejects(
      att.attest({ node: "n1", user: "bob", operatorToken: token }, ctx),
      code("unauthenticated"),
    );
  });

  it("lets exactly one of two concurrent redemptions win (check-and-set)", async () => {
    const { token } = await att.issue("n1", "bob", 60);
    const req = { node: "n1", user: "bob", operatorToken: token };
    const results = await Promise.allSettled([att.attest(req, ctx), att.attest(req, ctx)]);
    assert.equal(results.filter((r) => r.status === "fulfilled").length, 1);
  });

  it("refuses missing, malformed and unknown tokens with one line that carries no token", async () => {
    await assert.rejects(att.attest({ node: "n1", user: "bob" }, ctx), code("unauthenticated"));
    await assert.rejects(
      att.attest({ node: "n1", user: "bob", operatorToken: "a/../b" }, ctx),
      code("unauthenticated"),
    );
    const unknown = "A".repeat(43);
    await assert.rejects(
      att.attest({ node: "n1", user: "bob", operatorToken: unknown }, ctx),
      (err: unknown) => {
        return code("unauthenticated")(err) && !(err as Error).message.includes(unknown);
      },
    );
  });

  it("refuses bad names and TTLs at issue", async () => {
    await assert.rejects(att.issue("a;b", "bob"), code("invalid_argument"));
    await assert.rejects(att.issue("n1", "../x"), code("invalid_argument"));
    await assert.rejects(att.issue("n1", "bob", 0), code("invalid_argument"));
    assert.equal(kv.store.size, 0);
  });
});

describe("OpenAttestor", () => {
  it("believes the claim and logs a warning every time", async () => {
    const warnings: string[] = [];
    const att = new OpenAttestor(groups, { warn: (_o, m) => warnings.push(m) });
    const got = await att.attest({ node: "n1", user: "bob" }, ctx);
    assert.deepEqual(got.groups, ["bob", "shared", "proj-b"]);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0] ?? "", /NOT verified/);
  });
});

describe("NssGroupResolver", () => {
  it("lists a real user's groups and refuses an unknown user", async () => {
    const r = new NssGroupResolver();
    const rootGroups = await r.groupsOf("root");
    assert.ok(rootGroups.includes("root"));
    await assert.rejects(r.groupsOf("no-such-user-hpcs"), code("permission_denied"));
    await assert.rejects(r.groupsOf("-x"), code("invalid_argument"));
  });
});
