import assert from "node:assert/strict";
import { InvalidNameError, isValidName, validateName } from "../../../lib/names.js";

describe("names", () => {
  it("accepts ordinary cluster names", () => {
    assert.equal(validateName("user", "alice"), "alice");
    assert.equal(validateName("group", "proj-a"), "proj-a");
    assert.equal(validateName("node", "nid001234"), "nid001234");
    assert.equal(validateName("node", "c1.lumi.csc.fi"), "c1.lumi.csc.fi");
    assert.equal(validateName("secret", "dataset-1.v2_final"), "dataset-1.v2_final");
    assert.equal(validateName("client", "lab-42"), "lab-42");
  });

  const hostile = [
    "",
    "a b",
    "a;rm -rf /",
    "$(id)",
    "`id`",
    "a/b",
    "../etc",
    "a\nb",
    "a'b",
    'a"b',
    "a*",
    "-rf",
    "Alice",
    "x".repeat(300),
  ];
  for (const kind of ["user", "group", "node", "client"] as const) {
    it(`refuses shell, path and selector metacharacters in ${kind} names`, () => {
      for (const v of hostile) assert.equal(isValidName(kind, v), false, `${kind} ${JSON.stringify(v)}`);
    });
  }

  it("refuses client ids that cannot end a Vault role name", () => {
    assert.equal(isValidName("client", "lab-"), false);
    assert.equal(isValidName("client", "-lab"), false);
    assert.equal(isValidName("client", "a"), true);
  });

  it("refuses secret names that could escape their Vault path", () => {
    for (const v of ["..", "a..b", "../x", "a/b", ".hidden", "a b", "a*", "", "x".repeat(129)]) {
      assert.equal(isValidName("secret", v), false, JSON.stringify(v));
    }
  });

  it("says which field is wrong and what to use instead, in one line", () => {
    assert.throws(
      () => validateName("user", "Bad User"),
      (err: unknown) =>
        err instanceof InvalidNameError &&
        err.message ===
          "invalid user name \"Bad User\": use lower-case letters, digits, '_' or '-', at most 32, e.g. alice" &&
        !err.message.includes("\n"),
    );
  });
});
