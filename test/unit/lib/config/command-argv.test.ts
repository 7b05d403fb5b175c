import assert from "node:assert/strict";
import { ArgvError, parseArgv } from "../../../../lib/config/command-argv.js";

describe("command argv (pre-command)", () => {
  it("splits on whitespace", () => {
    assert.deepEqual(parseArgv("kubectl exec -n spire spire-server-0 --"), [
      "kubectl",
      "exec",
      "-n",
      "spire",
      "spire-server-0",
      "--",
    ]);
    assert.deepEqual(parseArgv("  a\t b  "), ["a", "b"]);
    assert.deepEqual(parseArgv(""), []);
    assert.deepEqual(parseArgv("   "), []);
  });

  it("honours double and single quotes, literally", () => {
    assert.deepEqual(parseArgv(`ssh -o "ProxyJump=a b" 'it''s' x"y z"w`), [
      "ssh",
      "-o",
      "ProxyJump=a b",
      "its",
      "xy zw",
    ]);
    assert.deepEqual(parseArgv(`a "" ''`), ["a", "", ""]);
    assert.deepEqual(parseArgv(`"it's"`), ["it's"]);
  });

  it("refuses unterminated quotes", () => {
    assert.throws(() => parseArgv(`kubectl "exec`), /unterminated " quote/);
    assert.throws(() => parseArgv(`kubectl 'exec`), /unterminated ' quote/);
  });

  const hostile = [
    "kubectl exec x -- ; rm -rf /",
    "a | sh",
    "a && b",
    "a & b",
    "echo $HOME",
    "echo ${HOME}",
    "a `id`",
    "a $(id)",
    "a > /etc/passwd",
    "a < /etc/shadow",
    "a \\; b",
    "a '; rm -rf /'",
    'a "$(id)"',
    "a\nrm -rf /",
    "a\u0000b",
    "a *",
    "~/bin/x",
    "a # comment",
    "!!",
  ];
  for (const h of hostile) {
    it(`refuses ${JSON.stringify(h)}`, () => {
      assert.throws(() => parseArgv(h), ArgvError);
    });
  }

  it("names the offending character and the fix", () => {
    assert.throws(
      () => parseArgv("a ; b"),
      (e: Error) =>
        e.message ===
        "';' is a shell metacharacter; the command runs as an argv list without a shell, so write plain words (put pipelines or redirections in a wrapper script)",
    );
  });
});
