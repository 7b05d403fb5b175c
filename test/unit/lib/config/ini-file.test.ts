import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError, parseIni, readIniFile } from "../../../../lib/config/ini-file.js";

const F = "/etc/hpcs/x.ini";
const err = (text: string) => {
  try {
    parseIni(text, F);
  } catch (e) {
    assert.ok(e instanceof ConfigError, String(e));
    return e.message;
  }
  assert.fail("no error");
};

describe("INI file", () => {
  it("parses sections, unquotes values and keeps booleans", () => {
    const doc = parseIni(
      `; comment\n# comment\n[spire-server]\naddress = "spire.lumi.csc.fi"\nport = 8081\npre-command = ""\n\n[hpcs-server]\nflag = true\nq = "a;b # c"\n`,
      F,
    );
    assert.equal(doc.source, F);
    assert.deepEqual([...doc.sections.keys()], ["spire-server", "hpcs-server"]);
    assert.deepEqual(Object.fromEntries(doc.sections.get("spire-server") ?? []), {
      address: "spire.lumi.csc.fi",
      port: "8081",
      "pre-command": "",
    });
    assert.deepEqual(Object.fromEntries(doc.sections.get("hpcs-server") ?? []), { flag: true, q: "a;b # c" });
  });

  it("refuses what ini would silently misread", () => {
    assert.equal(
      err("[vault]\nurl = a\nurl = b\n"),
      "config /etc/hpcs/x.ini: [vault] url: set twice (again on line 3); keep one",
    );
    assert.equal(
      err("[spire-server]\npre-command = kubectl exec x -- ; rm -rf /\n"),
      "config /etc/hpcs/x.ini: [spire-server] pre-command: ';' or '#' in an unquoted value starts an INI comment; quote the whole value, or drop the comment",
    );
    assert.match(err("[vault]\nurl = https://v/#x\n"), /\[vault\] url: ';' or '#' in an unquoted value/);
    assert.equal(
      err("[vault]\njust-a-word\n"),
      "config /etc/hpcs/x.ini: line 2: expected 'key = value' or '[section]', got \"just-a-word\"",
    );
    assert.equal(
      err("url = x\n[vault]\n"),
      "config /etc/hpcs/x.ini: url: key outside any section; put it under its [section]",
    );
    assert.equal(
      err("[a.b]\nx = 1\n"),
      "config /etc/hpcs/x.ini: [a.b]: dotted section names are not supported",
    );
    assert.equal(err("[]\n"), "config /etc/hpcs/x.ini: line 1: empty section name '[]'");
    assert.equal(err("[v]\nk[] = 1\n"), "config /etc/hpcs/x.ini: [v] k[]: arrays are not supported");
    assert.equal(err("[v]\n = 1\n"), "config /etc/hpcs/x.ini: line 2: a value without a key before '='");
  });

  it("reads a file, and names it when it cannot", () => {
    const dir = mkdtempSync(join(tmpdir(), "hpcs-ini-"));
    try {
      writeFileSync(join(dir, "a.ini"), "[vault]\r\nurl = https://v:8200\r\n");
      assert.equal(readIniFile(join(dir, "a.ini")).sections.get("vault")?.get("url"), "https://v:8200");
      assert.throws(
        () => readIniFile(join(dir, "none.ini")),
        (e: Error) =>
          e.message ===
          `config ${join(dir, "none.ini")}: cannot read the file (no such file); pass the right path with --config`,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
